"""Subscribers on the desk: search (the start of an address by index), one subscriber's timeline, leave and
restore, a CSV upload imported by a worker in chunks (progress seen from outside, safe to run again after a
worker died, a real worker on Redis), the report of rows not imported, export, and the same through the API."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select
from starlette.testclient import TestClient

from conftest import configured, wait_for
from desk_client import add_editor, api_headers, desk_client
from desk_client import signed_in as sign_in
from syndicate.db import transaction
from syndicate.errors import InvalidInput
from syndicate.ledger import Leases
from syndicate.models import (
    Delivery,
    Newsletter,
    Subscriber,
    SubscriberEvent,
    SubscriberImport,
    Subscription,
    utcnow,
)
from syndicate.newsletters import editions, lists
from syndicate.subscribers import consent, csv_files, preferences, uploads

GOOD_AND_BAD = b"email,name\r\nzoe@example.org,Zo\xc3\xab\r\nnot-an-address,Nobody\r\n"


def newsletters(svc) -> dict[str, int]:
    with transaction(svc.Session) as session:
        return {slug: lists.add_newsletter(session, slug=slug, name=slug.title(), from_address="news@example.com").id
                for slug in ("daily", "weekly")}


def add(svc, email: str, slugs=("daily",), confirmed=True, name=None) -> int:
    with transaction(svc.Session) as session:
        ids = [lists.get_newsletter(session, slug).id for slug in slugs]
        return consent.subscribe(session, email, ids, name=name, confirmed=confirmed).subscriber.id


def imports(svc) -> int:
    with transaction(svc.Session) as session:
        return session.scalar(select(func.count()).select_from(SubscriberImport))


def people(svc) -> dict[str, tuple]:
    with transaction(svc.Session) as session:
        found = {s.email: (s.status, s.name, {}) for s in session.scalars(select(Subscriber))}
        for email, slug, status in session.execute(
                select(Subscriber.email, Newsletter.slug, Subscription.status)
                .join(Subscription, Subscription.subscriber_id == Subscriber.id).join(Newsletter)):
            found[email][2][slug] = status
        return found


def start(svc, data: str | bytes, slugs=("daily",), confirmed=True, force=False) -> int:
    with transaction(svc.Session) as session:
        ids = [lists.get_newsletter(session, slug).id for slug in slugs]
        return uploads.start_import(session, "ada", "list.csv", data, ids, confirmed=confirmed, force=force).id


def job(svc, import_id: int) -> SubscriberImport:
    with transaction(svc.Session) as session:
        return session.get(SubscriberImport, import_id)


# ── search ───────────────────────────────────────────────────────────────────


def test_search_finds_part_of_an_address_or_a_name_in_any_case_fifty_a_page(database_url, make_settings):
    svc = configured(make_settings(database_url=database_url))
    ids = newsletters(svc)
    rows = "".join(f"reader{i:03}@example.org,Reader {i}\n" for i in range(120))
    with transaction(svc.Session) as session:
        csv_files.import_csv(session, "email,name\n" + rows + "ann@other.example,Ann Lovelace\n", [ids["daily"]])
    add(svc, "bob@other.example", ("weekly",), confirmed=False)
    with transaction(svc.Session) as session:
        everyone = consent.search(session)
        assert (everyone.total, everyone.pages, len(everyone.subscribers)) == (122, 3, 50)
        assert everyone.by_status == {"confirmed": 121, "pending": 1}
        last = consent.search(session, page=3)
        assert [s.email for s in last.subscribers][-1] == "reader119@example.org" and len(last.subscribers) == 22
        assert consent.search(session, page=99).page == 3
        assert [s.email for s in consent.search(session, "LOVELACE").subscribers] == ["ann@other.example"]
        assert consent.search(session, "@other.example").total == 2  # a domain: part of the address
        assert consent.search(session, "reader11").total == 10
        typed = consent.search(session, "Reader011@Ex")  # the start of an address
        assert [s.email for s in typed.subscribers] == ["reader011@example.org"]
        weekly = consent.search(session, newsletter_id=ids["weekly"])
        assert [(s.email, weekly.newsletters[s.id]) for s in weekly.subscribers] == [("bob@other.example", ["weekly"])]
        assert consent.search(session, "other", status="pending").total == 1
        assert consent.search(session, "reader_1").total == 0  # LIKE's wildcards are plain characters
        with pytest.raises(InvalidInput, match="no subscriber status 'gone'"):
            consent.search(session, status="gone")


def test_the_start_of_an_address_is_found_through_the_email_index(postgres_url, make_settings):
    svc = configured(make_settings(database_url=postgres_url))
    newsletters(svc)
    add(svc, "ada@example.org")
    seen = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    event.listen(svc.engine, "before_cursor_execute", record)
    with transaction(svc.Session) as session:
        assert [s.email for s in consent.search(session, "ada@ex").subscribers] == ["ada@example.org"]
    event.remove(svc.engine, "before_cursor_execute", record)
    statement, parameters = next((s, p) for s, p in seen if "ORDER BY subscribers.email" in s)
    with svc.engine.connect() as connection:
        connection.exec_driver_sql("SET enable_seqscan = off")  # a tiny table: make the planner show what it can
        plan = "\n".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + statement, parameters))
    assert "uq_subscribers_email" in plan and "Index" in plan, plan


# ── importing an upload in chunks ────────────────────────────────────────────


def test_a_file_that_cannot_be_imported_is_refused_at_once_and_nothing_is_kept(svc, monkeypatch):
    newsletters(svc)
    refusals = {
        "isn't UTF-8": b"email\nr\xe9ader@example.org\n",
        "spreadsheet workbook, not CSV": b"PK\x03\x04\x14\x00\x06\x00binary",
        "no email column": b"name,phone\nAda,123\n",
        "no addresses under it": b"email\n",
        "is empty": b"",
    }
    for why, data in refusals.items():
        with pytest.raises(InvalidInput, match=why):
            start(svc, data)
    with pytest.raises(InvalidInput, match="choose the newsletters"):
        start(svc, "email\nada@example.org\n", slugs=())
    monkeypatch.setattr(uploads, "UPLOAD_LIMIT", 10)
    with pytest.raises(InvalidInput, match="over the 0 MB an upload may be"):
        start(svc, "email\nada@example.org\n")
    assert imports(svc) == 0


def test_another_session_sees_the_progress_chunk_by_chunk_and_mail_waits_for_each_commit(svc):
    newsletters(svc)
    rows = ["carol@example.org", "not-an-address", "dave@example.org", "carol@example.org", "erin@example.org"]
    import_id = start(svc, "email\n" + "\n".join(rows) + "\n", confirmed=False)
    assert (job(svc, import_id).status, job(svc, import_id).total) == ("queued", 5)
    seen = []

    def confirm(subscriber_ids):  # called between chunks: what does anybody else see now?
        with transaction(svc.Session) as session:
            running = session.get(SubscriberImport, import_id)
            found = [session.get(Subscriber, i).email for i in subscriber_ids]
            seen.append((running.status, running.done, found))

    done = uploads.run_import(svc.Session, import_id, chunk=1, confirm=confirm)
    assert seen == [("running", 1, ["carol@example.org"]), ("running", 3, ["dave@example.org"]),
                    ("done", 5, ["erin@example.org"])]
    assert (done.status, done.done, done.data) == ("done", 5, None)
    report = uploads.report_from_dict(done.report)
    assert (report.added, len(report.to_confirm)) == (3, 3)
    assert [(line, reason.split(":")[0]) for line, _, reason in report.problems] == [
        (3, "not an email address we can send to"), (5, "duplicate of line 2")]
    assert people(svc)["dave@example.org"] == ("pending", None, {"daily": "pending"})


class WorkerDied(BaseException):
    """What a killed worker looks like from inside: nothing catches it, nothing after it runs."""


def killed_after_the_first_chunk(svc, import_id: int, monkeypatch) -> None:
    """Run the import two rows a chunk, its worker killed as the second chunk begins."""
    real, calls = csv_files.import_chunk, []

    def dies_on_the_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise WorkerDied
        return real(*args, **kwargs)

    monkeypatch.setattr(csv_files, "import_chunk", dies_on_the_second_chunk)
    with pytest.raises(WorkerDied):
        uploads.run_import(svc.Session, import_id, chunk=2)
    monkeypatch.undo()


def test_an_import_cut_short_by_a_dying_worker_ends_as_one_uninterrupted_run(make_settings, tmp_path, monkeypatch):
    lines = ["email,name", "a@example.org,A", "left@example.org,Left", "b@example.org,B", "nobody", "c@example.org,C",
             "a@example.org,A again", "known@example.org,Known", "d@example.org,D"]
    data = "\n".join(lines) + "\n"

    def newsroom(name: str):
        svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / name}"))
        newsletters(svc)
        add(svc, "known@example.org", ("weekly",))
        left = add(svc, "left@example.org")
        with transaction(svc.Session) as session:
            preferences.leave_all(session, left)
        return svc

    whole = newsroom("whole.db")
    once = uploads.run_import(whole.Session, start(whole, data), chunk=2)

    cut = newsroom("cut.db")
    import_id = start(cut, data)
    killed_after_the_first_chunk(cut, import_id, monkeypatch)
    halfway = job(cut, import_id)
    assert (halfway.status, halfway.done) == ("running", 2)  # the first chunk is in, with its progress
    assert "a@example.org" in people(cut) and "b@example.org" not in people(cut)
    again = uploads.run_import(cut.Session, import_id, chunk=2)

    assert again.status == once.status == "done"
    assert again.report == once.report
    assert people(cut) == people(whole)
    report = uploads.report_from_dict(again.report)
    assert (report.added, report.updated, report.resubscribed) == (4, 1, 0)
    assert [line for line, _, _ in report.problems] == [3, 5, 7]
    assert "choose “add back people who left”" in report.skipped[0][2]  # the desk's words, not the CLI's
    assert uploads.run_import(cut.Session, import_id).report == once.report  # finished: left as it is


def test_an_import_whose_task_was_lost_is_handed_out_again_by_the_tick_and_finishes(svc, monkeypatch):
    """A worker killed between chunks (its task unacknowledged for an hour, or the broker restarted empty):
    the import stayed "running" for ever. The tick finds it not moved on for Leases().requeue and
    hands it out; the run goes on from where the dead one stopped."""
    from syndicate import tasks

    newsletters(svc)
    import_id = start(svc, "email\n" + "".join(f"reader{i}@example.org\n" for i in range(5)))
    killed_after_the_first_chunk(svc, import_id, monkeypatch)
    assert (job(svc, import_id).status, job(svc, import_id).done) == ("running", 2)

    tasks.tick.apply()  # a minute later: it is moving, as far as anyone can tell
    assert job(svc, import_id).status == "running"
    with transaction(svc.Session) as session:  # the clock moves on past Leases().requeue
        session.get(SubscriberImport, import_id).progressed_at -= Leases().requeue
    tasks.tick.apply()  # the tick, as the beat runs it; its tasks run here (eager)
    finished = job(svc, import_id)
    assert (finished.status, finished.done) == ("done", 5)
    assert sorted(e for e in people(svc) if e.startswith("reader")) == [f"reader{i}@example.org" for i in range(5)]


def test_an_import_that_cannot_go_on_is_marked_failed_with_why(svc, monkeypatch):
    ids = newsletters(svc)
    import_id = start(svc, "email\nada@example.org\n", slugs=("weekly",))
    with transaction(svc.Session) as session:
        session.delete(session.get(Newsletter, ids["weekly"]))  # deleted while the file waited for a worker
    failed = uploads.run_import(svc.Session, import_id)
    assert failed.status == "failed" and "no newsletter with id" in failed.error
    assert "ada@example.org" not in people(svc)

    def bug(*args, **kwargs):
        raise ZeroDivisionError

    monkeypatch.setattr(csv_files, "import_chunk", bug)
    import_id = start(svc, "email\nada@example.org\nbob@example.org\n")
    with pytest.raises(ZeroDivisionError):  # for the worker's log
        uploads.run_import(svc.Session, import_id)
    assert job(svc, import_id).error.startswith("the import stopped on an error (the worker's log has it) after 0 of "
                                                "2 rows")


# ── the pages ────────────────────────────────────────────────────────────────


@pytest.fixture
def client(svc):
    add_editor(svc)
    return desk_client()


def upload(client: TestClient, token: str | None, data: bytes, filename="list.csv", **fields):
    form = {"newsletter": ["daily"], **fields}
    if token is not None:
        form["csrf"] = token
    return client.post("/desk/subscribers/import", data=form, files={"file": (filename, data, "text/csv")})


def test_nothing_of_subscribers_opens_without_signing_in(client):
    for path in ("/desk/subscribers", "/desk/subscribers/1", "/desk/subscribers/import", "/desk/subscribers/imports/1",
                 "/desk/subscribers/export.csv", "/desk/subscribers/imports/1/report.csv"):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["location"] == f"/desk/login?next={path}", path
    progress = client.get("/desk/subscribers/imports/1/progress", headers={"Accept": "application/json"})
    assert progress.status_code == 401 and progress.json() == {"error": "signed out: sign in again"}
    assert client.get("/api/v1/subscribers").status_code == 401


def test_an_editor_searches_and_reads_a_subscribers_timeline(client, svc):
    ids = newsletters(svc)
    ann = add(svc, "ann@example.org", ("daily", "weekly"), name="Ann Lovelace")
    add(svc, "bob@example.org")
    now = utcnow()
    with transaction(svc.Session) as session:
        daily = session.get(Newsletter, ids["daily"])
        sent = editions.create_edition(session, daily, svc.settings, now=now - timedelta(days=2), status="draft")
        sent.subject = "Tuesday's briefing"
        skipped = editions.create_edition(session, daily, svc.settings, now=now - timedelta(days=1), status="draft")
        session.flush()
        session.add_all([
            Delivery(edition_id=sent.id, subscriber_id=ann, status="sent", sent_at=now - timedelta(days=2)),
            Delivery(edition_id=skipped.id, subscriber_id=ann, status="skipped", created_at=now - timedelta(days=1),
                     last_reply="bounced before sending: 550 no such mailbox")])
        consent.suppress(session, session.get(Subscriber, ann), "bounced", "smtp", "550 no such mailbox", now=now)
    sign_in(client)
    found = client.get("/desk/subscribers", params={"q": "lovelace"})
    assert found.status_code == 200 and f'href="/desk/subscribers/{ann}"' in found.text
    assert "bob@example.org" not in found.text and "1 subscriber matching" in found.text
    assert "bob@example.org" in client.get("/desk/subscribers", params={"status": "confirmed"}).text
    page = client.get(f"/desk/subscribers/{ann}").text
    timeline = page[page.index('id="timeline"'):]
    assert "delivered" in timeline and "Tuesday&#39;s briefing" in timeline
    assert "skipped" in timeline and "bounced before sending: 550 no such mailbox" in timeline
    assert timeline.index("bounce") < timeline.index("skipped") < timeline.index("delivered")  # newest first
    assert f'action="/desk/subscribers/{ann}/restore"' in page
    assert client.get("/desk/subscribers/999999").status_code == 404


def test_leaving_and_restoring_need_the_csrf_token_and_a_reason(client, svc):
    newsletters(svc)
    ann = add(svc, "ann@example.org")
    token = sign_in(client)
    assert client.post(f"/desk/subscribers/{ann}/leave").status_code == 403
    assert client.post(f"/desk/subscribers/{ann}/leave", data={"csrf": "forged"}).status_code == 403
    assert people(svc)["ann@example.org"][0] == "confirmed"
    assert client.post(f"/desk/subscribers/{ann}/leave", data={"csrf": token}).status_code == 303
    assert people(svc)["ann@example.org"] == ("unsubscribed", None, {"daily": "unsubscribed"})
    refused = client.post(f"/desk/subscribers/{ann}/restore", data={"csrf": token, "reason": " "})
    assert refused.status_code == 400 and "say why mail may go to this address again" in refused.text
    restored = client.post(f"/desk/subscribers/{ann}/restore", data={"csrf": token, "reason": "asked by phone"})
    assert restored.status_code == 303 and people(svc)["ann@example.org"][0] == "confirmed"
    with transaction(svc.Session) as session:
        events = {e.kind: (e.source, e.detail) for e in session.scalars(select(SubscriberEvent))}
    assert events["unsubscribed"] == ("desk", "taken off every newsletter by ada on the desk")
    assert events["restored"] == ("desk (ada)", "was unsubscribed: asked by phone")
    assert client.post(f"/desk/subscribers/{ann}/vanish", data={"csrf": token}).status_code == 400


def test_an_upload_with_a_bad_row_imports_the_good_one_and_reports_the_bad(client, svc, tmp_path):
    newsletters(svc)
    token = sign_in(client)
    assert upload(client, None, GOOD_AND_BAD).status_code == 403 and imports(svc) == 0
    sent = upload(client, token, GOOD_AND_BAD)  # not vouched for: a confirmation mail goes out (tasks run inline)
    assert sent.status_code == 303
    import_id = int(sent.headers["location"].rsplit("/", 1)[1])
    assert sent.headers["location"] == f"/desk/subscribers/imports/{import_id}"
    assert people(svc)["zoe@example.org"] == ("pending", "Zoë", {"daily": "pending"})
    assert len(list((tmp_path / "data" / "outbox" / "mail").glob("*.eml"))) == 1

    progress = client.get(f"/desk/subscribers/imports/{import_id}/progress", headers={"Accept": "application/json"})
    assert {k: progress.json()[k] for k in ("status", "done", "total")} == {"status": "done", "done": 2, "total": 2}
    page = client.get(f"/desk/subscribers/imports/{import_id}").text
    assert '<progress id="progress" max="2" value="2"' in page
    problems = page[page.index('id="problems"'):]
    assert "not-an-address" in problems and "not an email address we can send to" in problems
    assert f'href="/desk/subscribers/imports/{import_id}/report.csv"' in page

    report = client.get(f"/desk/subscribers/imports/{import_id}/report.csv")
    assert report.headers["content-disposition"].startswith("attachment;")
    assert report.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(report.content.decode("utf-8-sig"))))
    assert rows[0] == ["line", "email", "reason"] and rows[1][:2] == ["3", "not-an-address"] and len(rows) == 2


def test_an_upload_that_cannot_be_imported_says_why_and_keeps_nothing(client, svc, monkeypatch):
    from syndicate.desk import subscribers as desk_subscribers

    newsletters(svc)
    token = sign_in(client)
    for data, why in [(b"email\nr\xe9ader@example.org\n", "isn&#39;t UTF-8"),
                      (b"PK\x03\x04\x14\x00binary", "spreadsheet workbook, not CSV"),
                      (b"phone\n123\n", "the file has no email column")]:
        refused = upload(client, token, data)
        assert refused.status_code == 400 and why in refused.text, refused.text
        assert 'enctype="multipart/form-data"' in refused.text  # the form again, to try another file
    no_newsletter = upload(client, token, GOOD_AND_BAD, newsletter=[])
    assert "choose the newsletters to subscribe them to" in no_newsletter.text
    assert "--newsletter" not in no_newsletter.text  # the desk's words, not the CLI's
    assert "choose a CSV file" in client.post("/desk/subscribers/import", data={"csrf": token}).text
    monkeypatch.setattr(desk_subscribers, "BODY_LIMIT", 100)
    too_big = upload(client, token, b"email\n" + b"a@example.org\n" * 20)
    assert too_big.status_code == 413 and "split it and upload the parts" in too_big.text
    assert imports(svc) == 0 and people(svc) == {}


def test_an_editor_exports_everyone_or_one_newsletter_as_csv(client, svc):
    newsletters(svc)
    add(svc, "ann@example.org", ("daily", "weekly"), name="Ann")
    add(svc, "bob@example.org", ("weekly",))
    sign_in(client)
    everyone = client.get("/desk/subscribers/export.csv")
    assert everyone.status_code == 200 and everyone.content.startswith("\ufeff".encode())
    assert re.match(r'attachment; filename="subscribers-all-\d{4}-\d\d-\d\d\.csv"',
                    everyone.headers["content-disposition"])
    rows = list(csv.DictReader(io.StringIO(everyone.content.decode("utf-8-sig"))))
    assert [(r["email"], r["newsletters"]) for r in rows] == [("ann@example.org", "daily;weekly"),
                                                              ("bob@example.org", "weekly")]
    daily = client.get("/desk/subscribers/export.csv", params={"newsletter": "daily"}).content.decode("utf-8-sig")
    assert "ann@example.org" in daily and "bob@example.org" not in daily
    assert client.get("/desk/subscribers/export.csv", params={"newsletter": "nope"}).status_code == 404


# ── the API ──────────────────────────────────────────────────────────────────


@pytest.fixture
def api_client(client, svc):
    client.headers.update(api_headers(svc))
    return client


def test_the_api_finds_shows_lets_go_and_restores_a_subscriber(api_client, svc):
    newsletters(svc)
    ann = add(svc, "ann@example.org", name="Ann")
    add(svc, "bob@example.org")
    found = api_client.get("/api/v1/subscribers", params={"q": "ann@"}).json()
    assert [s["email"] for s in found["subscribers"]] == ["ann@example.org"] and found["total"] == 1
    shown = api_client.get(f"/api/v1/subscribers/{ann}").json()
    assert shown["status"] == "confirmed" and shown["subscriptions"][0]["newsletter"] == "daily"
    assert [e["what"] for e in shown["timeline"]] == []  # subscribed by code without a source: nothing yet
    left = api_client.post(f"/api/v1/subscribers/{ann}/leave").json()
    assert left["status"] == "unsubscribed" and left["timeline"][-1]["what"] == "unsubscribed"
    refused = api_client.post(f"/api/v1/subscribers/{ann}/restore", json={"reason": ""})
    assert refused.status_code == 422 and "say why" in refused.json()["error"]
    restored = api_client.post(f"/api/v1/subscribers/{ann}/restore", json={"reason": "wrote to us"}).json()
    assert restored["status"] == "confirmed" and restored["timeline"][-1]["what"] == "restored"
    assert api_client.get("/api/v1/subscribers/999999").status_code == 404


def test_the_api_imports_an_upload_or_csv_text_and_reports_on_it(api_client, svc):
    newsletters(svc)
    uploaded = api_client.post("/api/v1/subscribers/imports", data={"newsletter": "daily", "confirmed": "true"},
                               files={"file": ("list.csv", GOOD_AND_BAD, "text/csv")})
    assert uploaded.status_code == 202
    first = uploaded.json()
    assert (first["status"], first["report"]["added"], first["report"]["bad"][0]["line"]) == ("done", 1, 3)
    as_text = api_client.post("/api/v1/subscribers/imports", json={
        "csv": "email;newsletters\nzoe@example.org;weekly\nyan@example.org;\n", "newsletters": ["daily"],
        "confirmed": True, "filename": "from-the-cms.csv"})
    assert as_text.status_code == 202, as_text.text
    second = api_client.get(f"/api/v1/subscribers/imports/{as_text.json()['id']}").json()
    assert (second["filename"], second["report"]["updated"], second["report"]["added"]) == ("from-the-cms.csv", 1, 1)
    assert people(svc)["zoe@example.org"][2] == {"daily": "active", "weekly": "active"}
    report = api_client.get(f"/api/v1/subscribers/imports/{first['id']}/report.csv")
    assert report.status_code == 200 and "not-an-address" in report.text

    bad = api_client.post("/api/v1/subscribers/imports", json={"csv": "phone\n1\n", "newsletters": ["daily"]})
    assert bad.status_code == 422 and "no email column" in bad.json()["error"]
    assert api_client.post("/api/v1/subscribers/imports", json={"newsletters": []}).status_code == 422
    assert imports(svc) == 2
    exported = api_client.get("/api/v1/subscribers/export.csv", params={"newsletter": "weekly"})
    assert exported.status_code == 200 and "zoe@example.org" in exported.text and "yan@" not in exported.text


def test_the_subscriber_api_is_documented(client):
    spec = client.get("/openapi.json").json()
    mine = {path: set(methods) for path, methods in spec["paths"].items() if path.startswith("/api/v1/subscribers")}
    assert mine == {
        "/api/v1/subscribers": {"get", "post"}, "/api/v1/subscribers/export.csv": {"get"},
        "/api/v1/subscribers/imports": {"post"}, "/api/v1/subscribers/imports/{import_id}": {"get"},
        "/api/v1/subscribers/imports/{import_id}/report.csv": {"get"},
        "/api/v1/subscribers/{subscriber_id}": {"get"}, "/api/v1/subscribers/{subscriber_id}/leave": {"post"},
        "/api/v1/subscribers/{subscriber_id}/restore": {"post"},
        "/api/v1/subscribers/{subscriber_id}/data": {"get"}, "/api/v1/subscribers/{subscriber_id}/erase": {"post"}}
    body = spec["paths"]["/api/v1/subscribers/imports"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert client.get("/docs").status_code == 200


# ── a real worker ────────────────────────────────────────────────────────────


def test_a_real_worker_on_redis_imports_an_upload_and_sends_the_confirmations(
        postgres_url, redis_url, make_settings, smtp_server, celery_worker_for):
    svc = configured(make_settings(database_url=postgres_url, broker_url=redis_url, smtp_url=smtp_server.url))
    newsletters(svc)
    add_editor(svc)
    client = desk_client()
    token = sign_in(client)
    celery_worker_for()
    addresses = [f"reader{i}@example.org" for i in range(csv_files.CHUNK + 20)]  # two chunks
    data = ("email\n" + "\n".join(addresses) + "\nnot-an-address\n").encode()
    sent = upload(client, token, data)
    assert sent.status_code == 303
    import_id = int(sent.headers["location"].rsplit("/", 1)[1])

    def finished():
        answer = client.get(f"/desk/subscribers/imports/{import_id}/progress", headers={"Accept": "application/json"})
        return answer.json()["status"] in ("done", "failed")

    wait_for(finished, 60, "the worker to import the file")
    done = job(svc, import_id)
    assert (done.status, done.done, done.total, done.data) == ("done", len(addresses) + 1, len(addresses) + 1, None)
    assert done.report["added"] == len(addresses) and done.report["bad"][0]["email"] == "not-an-address"
    wait_for(lambda: len(smtp_server.messages) == len(addresses), 60, "every confirmation mail")
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == sorted(addresses)
    with transaction(svc.Session) as session:
        assert session.scalar(select(func.count()).select_from(Subscriber).where(Subscriber.status == "pending")) == (
            len(addresses))
