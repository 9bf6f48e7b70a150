"""Subscribers from and to CSV: bad rows by their line, nobody who left added back, the same file twice
changes nothing, Excel's habits (semicolons, a byte order mark, CRLF), and the commands end to end."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, event, func, select

from conftest import FIGURES, configured
from syndicate import tasks
from syndicate.cli.main import main
from syndicate.db import transaction
from syndicate.errors import InvalidInput
from syndicate.models import Newsletter, Subscriber, SubscriberEvent, Subscription
from syndicate.newsletters import lists
from syndicate.subscribers import consent, csv_files
from syndicate.subscribers.csv_files import import_csv

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
FORCE_HINT = "skipped (use --force to add back)"


@pytest.fixture
def store(database_url, make_settings):
    """Services on a migrated database (SQLite and PostgreSQL) with two newsletters, daily and weekly."""
    svc = configured(make_settings(database_url=database_url))
    with transaction(svc.Session) as session:
        for slug in ("daily", "weekly"):
            lists.add_newsletter(session, slug=slug, name=slug.title(), from_address="news@example.com")
    return svc


@pytest.fixture
def sqlite_store(svc):
    with transaction(svc.Session) as session:
        for slug in ("daily", "weekly"):
            lists.add_newsletter(session, slug=slug, name=slug.title(), from_address="news@example.com")
    return svc


def run_import(svc, data: str | bytes, slugs=("daily",), **options) -> csv_files.ImportReport:
    with transaction(svc.Session) as session:
        ids = [lists.get_newsletter(session, slug).id for slug in slugs]
        return import_csv(session, data, ids, now=NOW, **options)


def people(svc) -> dict[str, tuple]:
    """Every subscriber as (status, name, {newsletter: subscription status})."""
    with transaction(svc.Session) as session:
        found = {s.email: (s.status, s.name, {}) for s in session.scalars(select(Subscriber))}
        for email, slug, status in session.execute(
                select(Subscriber.email, Newsletter.slug, Subscription.status)
                .join(Subscription, Subscription.subscriber_id == Subscriber.id)
                .join(Newsletter, Newsletter.id == Subscription.newsletter_id)):
            found[email][2][slug] = status
        return found


def events(svc, email: str | None = None) -> list[tuple[str, str, str | None]]:
    with transaction(svc.Session) as session:
        query = select(SubscriberEvent.kind, SubscriberEvent.source, SubscriberEvent.detail).join(Subscriber)
        if email:
            query = query.where(Subscriber.email == email)
        return [tuple(row) for row in session.execute(query.order_by(SubscriberEvent.id))]


def add(svc, email: str, slugs=("daily",), confirmed=True, name=None) -> int:
    with transaction(svc.Session) as session:
        ids = [lists.get_newsletter(session, slug).id for slug in slugs]
        return consent.subscribe(session, email, ids, name=name, confirmed=confirmed).subscriber.id


def suppress(svc, email: str, status: str) -> None:
    with transaction(svc.Session) as session:
        found = session.scalar(select(Subscriber).where(Subscriber.email == email))
        consent.suppress(session, found, status, "test", f"{status} in a test")


# ── new addresses ────────────────────────────────────────────────────────────


def test_it_adds_new_addresses_confirmed_with_active_subscriptions_and_an_imported_event(store):
    report = run_import(store, "email,name\nann@example.com,Ann\nbo@example.com,\n", slugs=("daily", "weekly"))

    assert (report.added, report.updated, report.unchanged, report.bad, report.skipped) == (2, 0, 0, [], [])
    assert people(store) == {
        "ann@example.com": ("confirmed", "Ann", {"daily": "active", "weekly": "active"}),
        "bo@example.com": ("confirmed", None, {"daily": "active", "weekly": "active"}),
    }
    assert events(store, "ann@example.com") == [("imported", "import", "into daily, weekly")]
    assert report.to_confirm == []


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_it_reports_bad_rows_by_their_line_in_the_file_and_imports_the_rest(store, newline):
    lines = [
        "email,name,newsletters",              # 1
        'ann@example.com,"Ann',                 # 2  a quoted name over two lines
        'Smith",',                              # 3
        "not-an-address,Bob,",                  # 4
        ",Nobody,",                             # 5
        "josé@example.com,José,",               # 6  non-ASCII before the @: needs SMTPUTF8
        "",                                     # 7  blank: ignored
        "cy@example.com,Cy,gardening",          # 8  no such newsletter
        "di@example.com,Di,weekly",             # 9
    ]

    report = run_import(store, newline.join(lines) + newline)

    assert [(line, value) for line, value, _ in report.bad] == [
        (4, "not-an-address"), (5, ""), (6, "josé@example.com"), (8, "cy@example.com")]
    reasons = [reason for _, _, reason in report.bad]
    assert reasons[0].startswith("not an email address we can send to")
    assert reasons[1] == "no email address"
    assert "not an email address we can send to" in reasons[2]
    assert reasons[3] == "no newsletter 'gardening' (newsletters column)"
    assert report.added == 2
    assert people(store) == {
        "ann@example.com": ("confirmed", "Ann Smith", {"daily": "active"}),
        "di@example.com": ("confirmed", "Di", {"weekly": "active"}),
    }


def test_it_skips_an_address_repeated_in_the_file_even_in_another_case(store):
    report = run_import(store, "email\nAnn@Example.com\nbo@example.com\nANN@example.COM\n ann@example.com \n")

    assert report.added == 2
    assert report.duplicates == [(4, "ann@example.com", "duplicate of line 2"),
                                 (5, "ann@example.com", "duplicate of line 2")]
    assert set(people(store)) == {"ann@example.com", "bo@example.com"}


# ── people who left ──────────────────────────────────────────────────────────


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained"])
def test_it_never_resubscribes_someone_who_unsubscribed_bounced_or_complained(store, status):
    add(store, "ann@example.com")
    suppress(store, "ann@example.com", status)
    before, timeline = people(store), events(store)

    report = run_import(store, "email\nann@example.com\n", slugs=("daily", "weekly"))

    assert report.skipped == [(2, "ann@example.com", f"previously {status}, {FORCE_HINT}")]
    assert (report.added, report.updated, report.unchanged, report.resubscribed) == (0, 0, 0, 0)
    assert people(store) == before
    assert events(store) == timeline


def test_it_never_resubscribes_someone_who_left_that_newsletter(store):
    add(store, "ann@example.com", slugs=("daily", "weekly"))
    with transaction(store.Session) as session:
        session.scalar(select(Subscription).join(Newsletter)
                       .where(Newsletter.slug == "daily")).status = "unsubscribed"

    report = run_import(store, "email\nann@example.com\n", slugs=("daily",))

    assert report.skipped == [(2, "ann@example.com", f"previously unsubscribed from daily, {FORCE_HINT}")]
    assert people(store)["ann@example.com"] == ("confirmed", None, {"daily": "unsubscribed", "weekly": "active"})


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained"])
def test_force_adds_them_back_and_says_so_on_their_timeline(store, status):
    add(store, "ann@example.com")
    suppress(store, "ann@example.com", status)

    report = run_import(store, "email,name\nann@example.com,Ann\n", slugs=("daily", "weekly"), force=True)

    assert (report.resubscribed, report.skipped, report.added) == (1, [], 0)
    assert people(store)["ann@example.com"] == ("confirmed", "Ann", {"daily": "active", "weekly": "active"})
    assert events(store, "ann@example.com")[-1] == ("resubscribed", "import", "forced by an import")
    assert run_import(store, "email,name\nann@example.com,Ann\n", slugs=("daily", "weekly"),
                      force=True).unchanged == 1


# ── existing addresses, and the same file twice ──────────────────────────────


def test_it_adds_missing_newsletters_and_a_missing_name_but_keeps_a_name_it_has(store):
    add(store, "ann@example.com", slugs=("daily",), name="Ann Original")
    add(store, "bo@example.com", slugs=("daily",))

    report = run_import(store, "email,name\nann@example.com,Someone Else\nbo@example.com,Bo\n",
                        slugs=("daily", "weekly"))

    assert (report.updated, report.added, report.unchanged) == (2, 0, 0)
    assert people(store) == {
        "ann@example.com": ("confirmed", "Ann Original", {"daily": "active", "weekly": "active"}),
        "bo@example.com": ("confirmed", "Bo", {"daily": "active", "weekly": "active"}),
    }
    assert events(store, "ann@example.com")[-1] == ("imported", "import", "into weekly")


def test_importing_the_same_file_twice_changes_nothing_the_second_time(store):
    add(store, "old@example.com", slugs=("daily",))
    add(store, "left@example.com")
    suppress(store, "left@example.com", "unsubscribed")
    data = ("email,name\nold@example.com,Old\nnew@example.com,New\nleft@example.com,\n"
            "not an address,\nNEW@example.com,\n")
    first = run_import(store, data, slugs=("daily", "weekly"))
    assert (first.added, first.updated) == (1, 1)
    after_first, timeline = people(store), events(store)

    second = run_import(store, data, slugs=("daily", "weekly"))

    assert (second.added, second.updated, second.resubscribed, second.unchanged) == (0, 0, 0, 2)
    assert second.skipped == first.skipped and second.bad == first.bad and second.duplicates == first.duplicates
    assert people(store) == after_first
    assert events(store) == timeline


# ── the file itself ──────────────────────────────────────────────────────────


def test_it_reads_semicolons_as_excel_writes_them_in_europe(store):
    data = "E-Mail;Name;Newsletters\nann@example.com;Müller, Ann;daily, weekly\nbo@example.com;Bo;\n"

    report = run_import(store, data)

    assert (report.added, report.bad) == (2, [])
    assert people(store) == {
        "ann@example.com": ("confirmed", "Müller, Ann", {"daily": "active", "weekly": "active"}),
        "bo@example.com": ("confirmed", "Bo", {"daily": "active"}),
    }


def test_it_reads_tabs_and_an_email_address_column(store):
    report = run_import(store, "Name\tEmail Address\nAnn\tann@example.com\n")

    assert report.added == 1 and people(store)["ann@example.com"][1] == "Ann"


def test_it_reads_a_file_that_starts_with_a_byte_order_mark(store):
    data = "\ufeffemail,name\r\nann@example.com,Zoë\r\n".encode()

    report = run_import(store, data)

    assert report.added == 1
    assert people(store)["ann@example.com"][1] == "Zoë"


def test_it_refuses_a_file_that_is_not_utf8_and_writes_nothing(store):
    data = "email,name\nann@example.com,Ann\nbo@example.com,José\n".encode("latin-1")

    with transaction(store.Session) as session:  # committed afterwards: whatever was written would stay
        daily = lists.get_newsletter(session, "daily").id
        with pytest.raises(InvalidInput, match="save it as UTF-8 CSV") as refused:
            import_csv(session, data, [daily])

    assert "line 3" in str(refused.value)
    assert people(store) == {} and events(store) == []


def test_it_refuses_a_file_without_an_email_column_and_names_the_columns_it_has(store):
    with pytest.raises(InvalidInput) as refused:
        run_import(store, "Mail;Full name\nann@example.com;Ann\n")

    message = str(refused.value)
    assert "no email column" in message and "'Mail', 'Full name'" in message
    assert people(store) == {}


def test_it_needs_newsletters_from_the_editor_or_from_the_file(store):
    with pytest.raises(InvalidInput, match="--newsletter"):
        run_import(store, "email\nann@example.com\n", slugs=())

    report = run_import(store, "email,newsletters\nann@example.com,weekly\nbo@example.com,\n", slugs=())

    assert people(store) == {"ann@example.com": ("confirmed", None, {"weekly": "active"})}
    assert report.bad == [(3, "bo@example.com", "no newsletter: fill its newsletters cell or give --newsletter")]


def test_it_refuses_an_unreadable_file_before_writing_anything(store):
    with pytest.raises(InvalidInput, match="the file is empty"):
        run_import(store, "\n\n")
    huge = "email,name\nann@example.com,Ann\nbo@example.com," + '"' + "x" * 200_000 + '"\n'
    with pytest.raises(InvalidInput, match="line 3 of the file can't be read as CSV"):
        run_import(store, huge)
    assert people(store) == {}


# ── double opt-in ────────────────────────────────────────────────────────────


def test_with_double_opt_in_new_addresses_wait_for_their_confirmation(store):
    known = add(store, "known@example.com", slugs=("daily",))

    report = run_import(store, "email\nnew@example.com\nknown@example.com\n", slugs=("daily", "weekly"),
                        confirmed=False)

    found = people(store)
    assert found["new@example.com"] == ("pending", None, {"daily": "pending", "weekly": "pending"})
    assert found["known@example.com"] == ("confirmed", None, {"daily": "active", "weekly": "pending"})
    with transaction(store.Session) as session:
        new = session.scalar(select(Subscriber.id).where(Subscriber.email == "new@example.com"))
    assert sorted(report.to_confirm) == sorted([new, known])
    assert (report.added, report.updated) == (1, 1)

    again = run_import(store, "email\nnew@example.com\nknown@example.com\n", slugs=("daily", "weekly"),
                       confirmed=False)
    assert (again.unchanged, again.to_confirm) == (2, [])


def test_force_with_double_opt_in_asks_the_reader_to_confirm_before_anything_goes_out(store):
    ann = add(store, "ann@example.com", slugs=("daily",))
    suppress(store, "ann@example.com", "bounced")  # a bounced address keeps its subscriptions

    report = run_import(store, "email\nann@example.com\n", slugs=("daily", "weekly"), force=True, confirmed=False)

    assert (report.resubscribed, report.to_confirm) == (1, [ann])
    assert people(store)["ann@example.com"] == ("pending", None, {"daily": "pending", "weekly": "pending"})
    assert events(store, "ann@example.com")[-1] == (
        "resubscribed", "import", "forced by an import, waiting for the reader to confirm")


# ── export ───────────────────────────────────────────────────────────────────


def mixed_list(svc) -> None:
    add(svc, "both@example.com", slugs=("daily", "weekly"), name="=HYPERLINK(\"http://evil.example\")")
    add(svc, "waiting@example.com", slugs=("daily",), confirmed=False)
    add(svc, "left@example.com")
    suppress(svc, "left@example.com", "unsubscribed")
    add(svc, "gone@example.com", slugs=("weekly",), name="Gone")
    suppress(svc, "gone@example.com", "bounced")


def export(svc, **options) -> str:
    out = io.StringIO(newline="")
    with transaction(svc.Session) as session:
        csv_files.export_csv(session, out, **options)
    return out.getvalue()


def test_it_exports_every_subscriber_with_their_active_newsletters(store):
    mixed_list(store)

    rows = list(csv.DictReader(io.StringIO(export(store))))

    assert list(rows[0]) == ["email", "name", "status", "newsletters", "created_at", "confirmed_at", "topics",
                            "frequency", "timezone"]
    assert [(r["email"], r["status"], r["newsletters"]) for r in rows] == [
        ("both@example.com", "confirmed", "daily;weekly"),
        ("waiting@example.com", "pending", ""),
        ("left@example.com", "unsubscribed", ""),
        ("gone@example.com", "bounced", "weekly"),
    ]
    assert rows[0]["name"].startswith("'=HYPERLINK")  # a spreadsheet shows it, doesn't run it
    assert datetime.fromisoformat(rows[0]["created_at"]).tzinfo is not None
    assert rows[1]["confirmed_at"] == "" and datetime.fromisoformat(rows[0]["confirmed_at"])


def test_it_exports_only_the_newsletter_and_statuses_asked_for(store):
    mixed_list(store)
    with transaction(store.Session) as session:
        weekly = lists.get_newsletter(session, "weekly").id

    emails = [r["email"] for r in csv.DictReader(io.StringIO(export(store, newsletter_id=weekly)))]
    assert emails == ["both@example.com", "gone@example.com"]
    emails = [r["email"] for r in csv.DictReader(io.StringIO(export(store, statuses=["pending", "bounced"])))]
    assert emails == ["waiting@example.com", "gone@example.com"]


def test_an_exported_file_imported_again_changes_nothing(store):
    mixed_list(store)
    before, timeline = people(store), events(store)

    report = run_import(store, export(store).encode(), slugs=("daily", "weekly"))

    assert (report.added, report.updated, report.resubscribed, report.bad) == (0, 0, 0, [])
    assert dict((email, reason) for _, email, reason in report.skipped) == {
        "waiting@example.com": "not confirmed yet in the file, skipped "
                               "(import it with --double-opt-in to ask them to confirm)",
        "left@example.com": "marked unsubscribed in the file, skipped",
        "gone@example.com": "marked bounced in the file, skipped",
    }
    assert people(store) == before
    assert events(store) == timeline


def test_an_exported_file_imported_into_an_empty_list_keeps_out_who_left_or_never_confirmed(store):
    mixed_list(store)
    data = export(store)
    with transaction(store.Session) as session:
        session.execute(delete(Subscriber))

    report = run_import(store, data, slugs=("daily",), force=True)

    assert people(store) == {
        "both@example.com": ("confirmed", '=HYPERLINK("http://evil.example")', {"daily": "active", "weekly": "active"})}
    assert dict((email, reason) for _, email, reason in report.skipped) == {
        "waiting@example.com": "not confirmed yet in the file, skipped "
                               "(import it with --double-opt-in to ask them to confirm)",
        "left@example.com": "marked unsubscribed in the file, skipped",
        "gone@example.com": "marked bounced in the file, skipped",
    }


# ── many rows ────────────────────────────────────────────────────────────────


def test_it_imports_twenty_thousand_rows_with_a_query_per_chunk_not_per_row(sqlite_store):
    svc = sqlite_store
    for i in range(0, 1000, 2):  # some already there, so the update path is measured too
        add(svc, f"reader{i}@example.com")
    data = "email,name\n" + "".join(f"reader{i}@example.com,Reader {i}\n" for i in range(20_000))
    statements = []
    event.listen(svc.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    started = time.perf_counter()
    report = run_import(svc, data, slugs=("daily", "weekly"))
    took = time.perf_counter() - started
    lookups = [s for s in statements if s.lstrip().startswith("SELECT") and "FROM subscribers" in s]

    assert (report.added, report.updated) == (19_500, 500)
    assert len(lookups) <= 50, len(lookups)  # 500 addresses a query: 40 lookups, not one a row
    with transaction(svc.Session) as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 20_500 + 19_500
    started = time.perf_counter()
    again = run_import(svc, data, slugs=("daily", "weekly"))
    took_again = time.perf_counter() - started
    assert again.unchanged == 20_000
    started = time.perf_counter()
    rows = export(svc).count("\n") - 1
    took_export = time.perf_counter() - started
    assert rows == 20_000
    FIGURES.append(f"subscriber import: 20,000 rows on SQLite in {took:.1f} s "
                   f"({len(lookups)} subscriber lookups); again, all unchanged, in {took_again:.1f} s; "
                   f"export in {took_export:.1f} s")


# ── the commands ─────────────────────────────────────────────────────────────


@pytest.fixture
def syndicate(tmp_path):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s"}
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None):
        return runner.invoke(main, list(args), env=env, input=input)

    assert run("db", "upgrade").exit_code == 0
    for slug in ("daily", "weekly"):
        assert run("newsletter", "add", slug, "--name", slug.title(), "--from-address",
                   "news@example.com").exit_code == 0
    return run


def test_the_import_command_imports_the_good_rows_lists_the_bad_and_exits_1(syndicate, tmp_path):
    (tmp_path / "list.csv").write_text("email,name\nann@example.com,Ann\nnot-an-address,X\nANN@example.com,\n",
                                       encoding="utf-8")
    report_path = tmp_path / "problems.csv"

    result = syndicate("subscriber", "import", str(tmp_path / "list.csv"), "--newsletter", "daily",
                       "--report", str(report_path))

    assert result.exit_code == 1, result.output
    assert "1 added, 0 updated, 0 unchanged, 0 resubscribed, 0 skipped, 1 bad, 1 duplicates" in result.stdout
    assert "line 3: not-an-address: not an email address we can send to" in result.stdout
    assert "line 4: ann@example.com: duplicate of line 2" in result.stdout
    assert "good ones imported" in result.stderr
    with report_path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["line", "email", "reason"]
    assert [row[:2] for row in rows[1:]] == [["3", "not-an-address"], ["4", "ann@example.com"]]
    listed = syndicate("subscriber", "list", "--json")
    assert '"ann@example.com"' in listed.stdout


def test_the_import_command_reads_standard_input_and_exits_0_without_bad_rows(syndicate):
    result = syndicate("subscriber", "import", "-", "--newsletter", "daily", "--newsletter", "weekly",
                       input=b"email;name\nann@example.com;Ann\n")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("1 added")
    as_json = syndicate("subscriber", "import", "-", "--newsletter", "daily", "--json",
                        input="email\nbo@example.com\nnope\n")
    assert as_json.exit_code == 1
    found = json.loads(as_json.stdout)
    assert found["added"] == 1 and [bad["line"] for bad in found["bad"]] == [3]
    again = syndicate("subscriber", "import", "-", "--newsletter", "daily", input="email\nann@example.com\n")
    assert again.stdout.startswith("0 added, 0 updated, 1 unchanged")


def test_the_import_command_shows_fifty_problems_and_points_to_the_report_for_the_rest(syndicate, tmp_path):
    data = "email\n" + "".join(f"bad{i}\n" for i in range(60))

    result = syndicate("subscriber", "import", "-", "--newsletter", "daily", input=data)
    assert result.exit_code == 1
    assert result.stdout.count(": not an email address") == 50
    assert "…and 10 more; --report PATH writes them all" in result.stdout

    report_path = tmp_path / "all.csv"
    syndicate("subscriber", "import", "-", "--newsletter", "daily", "--report", str(report_path), input=data)
    assert len(report_path.read_text(encoding="utf-8").splitlines()) == 61


def test_the_import_command_refuses_without_a_newsletter_and_explains(syndicate):
    result = syndicate("subscriber", "import", "-", input="email\nann@example.com\n")

    assert result.exit_code != 0
    assert "--newsletter" in str(result.exception) and "newsletters column" in str(result.exception)


def test_the_import_command_warns_that_force_needs_renewed_consent(syndicate):
    helped = " ".join(syndicate("subscriber", "import", "--help").stdout.split())

    assert "--force" in helped
    assert "unsubscribed, bounced or complained" in helped and "renewed consent" in helped


def test_the_import_command_mails_confirmations_with_double_opt_in(syndicate, tmp_path):
    tasks.app.conf.task_always_eager = True  # the mails are sent in this process, to the outbox (conftest resets it)

    result = syndicate("subscriber", "import", "-", "--newsletter", "daily", "--double-opt-in",
                       input="email\nann@example.com\nbo@example.com\n")

    assert result.exit_code == 0, result.output
    assert "2 confirmation mails queued" in result.stdout
    mails = list((tmp_path / "data" / "outbox" / "mail").glob("*.eml"))
    assert len(mails) == 2
    assert all(b"/confirm/" in m.read_bytes() for m in mails)


def test_the_export_command_writes_a_file_that_imports_back_unchanged(syndicate, tmp_path):
    syndicate("subscriber", "import", "-", "--newsletter", "daily", input="email,name\nann@example.com,Ann\n")
    syndicate("subscriber", "import", "-", "--newsletter", "weekly", input="email\nbo@example.com\n")
    out = tmp_path / "export.csv"

    to_stdout = syndicate("subscriber", "export", "--newsletter", "weekly", "--status", "confirmed")
    to_file = syndicate("subscriber", "export", "-o", str(out))
    back = syndicate("subscriber", "import", str(out), "--newsletter", "daily")

    assert to_stdout.exit_code == 0, to_stdout.output
    assert [r["email"] for r in csv.DictReader(io.StringIO(to_stdout.stdout))] == ["bo@example.com"]
    assert to_file.exit_code == 0 and "2 subscribers written" in to_file.stderr
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")  # Excel reads it as UTF-8
    assert back.exit_code == 0, back.output
    assert back.stdout.startswith("0 added, 0 updated, 2 unchanged")
