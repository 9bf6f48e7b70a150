"""A reader's time zone, for newsletters sent at each reader's local time: guessed by the browser at sign-up
(Chromium, the page's own script under its CSP), chosen on the preferences page, given on the command line;
every way in refuses or ignores what isn't a zone."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from click.testing import CliRunner
from sqlalchemy import select
from starlette.testclient import TestClient

from conftest import cli_in, configured, free_port, submit, wait_for
from syndicate import tokens
from syndicate.cli.main import main
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.models import Article, Delivery, Subscriber, SubscriberEvent, Subscription
from syndicate.newsletters import lists, schedules
from syndicate.subscribers import consent
from syndicate.web.app import create_app

HOSTILE = ["../../../etc/localtime", "Europe/Berlin\r\nBcc: all@example.com", "<script>alert(1)</script>",
           "Mars/Olympus_Mons", "x" * 5000, "posixrules"]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def svc(make_settings, tmp_path, smtp_server, port):
    # The reader's forms are accepted from our own origin only: the browser's is where the app is served.
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'zones.db'}", smtp_url=smtp_server.url,
                                   base_url=f"http://127.0.0.1:{port}"), eager=True)
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com",
                             timezone="Europe/Berlin", local_time=True)
    return svc


@pytest.fixture
def client(svc, port):
    with TestClient(create_app(), raise_server_exceptions=False, base_url=f"http://127.0.0.1:{port}") as client:
        yield client


@pytest.fixture
def served(svc, port):
    """The app on the port its base URL names, in this process."""
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "uvicorn")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def zone_of(svc, address: str) -> str | None:
    with transaction(svc.Session) as session:
        return session.scalar(select(Subscriber.timezone).where(Subscriber.email == address))


def reader(svc, address: str = "reader@example.com", timezone: str | None = None) -> int:
    with transaction(svc.Session) as session:
        return consent.subscribe(session, address, [1], confirmed=True, timezone=timezone).subscriber.id


# ── sign-up: the browser's guess ─────────────────────────────────────────────


@pytest.mark.parametrize("zone", ["Australia/Sydney", "America/New_York"])
def test_the_sign_up_form_keeps_the_zone_the_browser_is_in(svc, served, browser, zone):
    page = browser.new_page(timezone_id=zone)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)  # a CSP refusal shows here
    page.goto(served + "/")
    assert page.input_value("#timezone") == zone  # the page's script ran under its nonce
    page.fill("#email", "reader@example.com")
    page.check("input[name=newsletter][value=daily]")  # nothing is ticked for the reader
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "sent you an email" in page.content(), page.content()
    assert zone_of(svc, "reader@example.com") == zone
    assert not [e for e in errors if "Content Security Policy" in e]


def test_without_script_a_reader_signs_up_without_a_zone(svc, served, browser):
    page = browser.new_context(java_script_enabled=False, timezone_id="Asia/Tokyo").new_page()
    page.goto(served + "/")
    page.fill("#email", "reader@example.com")
    page.check("input[name=newsletter][value=daily]")  # nothing is ticked for the reader
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "sent you an email" in page.content()
    assert zone_of(svc, "reader@example.com") is None  # the newsletter's own zone


@pytest.mark.parametrize("forged", HOSTILE)
def test_a_forged_zone_never_refuses_a_sign_up_and_is_not_kept(svc, client, forged):
    page = submit(client, "/subscribe", data={"email": "reader@example.com", "newsletter": "daily",
                                              "timezone": forged})
    assert page.status_code == 200 and "sent you an email" in page.text
    assert zone_of(svc, "reader@example.com") is None


def test_a_sign_up_cannot_change_an_existing_readers_zone(svc, client):
    reader(svc, timezone="Asia/Tokyo")
    submit(client, "/subscribe", data={"email": "reader@example.com", "newsletter": "daily",
                                       "timezone": "America/Los_Angeles"})
    assert zone_of(svc, "reader@example.com") == "Asia/Tokyo"


def test_an_old_name_a_browser_may_give_is_kept(svc, client):
    """Some browsers still say Asia/Calcutta (the tz database keeps it as a link to Asia/Kolkata)."""
    submit(client, "/subscribe", data={"email": "reader@example.com", "newsletter": "daily",
                                       "timezone": "Asia/Calcutta"})
    assert zone_of(svc, "reader@example.com") == "Asia/Calcutta"


# ── the preferences page ─────────────────────────────────────────────────────


def path_of(svc, subscriber_id: int) -> str:
    return f"/p/{tokens.preferences_token(svc.settings.secret_key, subscriber_id)}"


def test_a_reader_chooses_a_zone_on_the_preferences_page_and_can_clear_it(svc, client):
    subscriber_id = reader(svc)
    path = path_of(svc, subscriber_id)
    page = client.get(path)
    assert '<option value="own" selected>None: each newsletter&#39;s own time</option>' in page.text
    assert '<option value="Australia/Sydney">' in page.text and '<option value="US/Eastern">' not in page.text

    page = submit(client, path, data={"action": "save", "newsletter": "daily", "timezone": "Australia/Sydney"})
    assert page.status_code == 200 and '<option value="Australia/Sydney" selected>' in page.text
    assert zone_of(svc, "reader@example.com") == "Australia/Sydney"
    submit(client, path, data={"action": "save", "newsletter": "daily", "timezone": "own"})
    assert zone_of(svc, "reader@example.com") is None
    with transaction(svc.Session) as session:
        said = session.scalars(select(SubscriberEvent.detail).where(SubscriberEvent.kind == "time zone")).all()
    assert said == ["on the preferences page: Australia/Sydney",
                    "on the preferences page: none (each newsletter’s own)"]


def test_a_reader_who_moves_while_their_mail_waits_for_its_wave_gets_it_at_the_time_in_the_new_zone(svc, client):
    """A 07:00 edition at each reader's local time, cut at Sydney's 07:00: the New York reader's mail waits
    for 07:00 in New York; they say on the preferences page that they live in Tokyo now, and it waits for
    07:00 in Tokyo instead (then Berlin's, the newsletter's own, when they clear their zone)."""
    # A month ahead of the real clock (the page moves rows by it): every wave is still to come.
    made = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=30)
    day = made.astimezone(ZoneInfo("Europe/Berlin")).date() + timedelta(days=1)  # the slot: 07:00 that day
    with transaction(svc.Session) as session:
        morning = lists.add_newsletter(session, slug="morning", name="Morning", from_address="news@example.com",
                                       cron="0 7 * * *", timezone="Europe/Berlin", local_time=True,
                                       max_age_hours=0, now=made)
        session.add(Article(identity="a vote", url="https://news.example/vote", title="A vote", lead="The lead.",
                            content_hash="x", categories=[], published_at=made, first_seen_at=made))
        consent.subscribe(session, "sydney@example.com", [morning.id], confirmed=True, timezone="Australia/Sydney")
        mover = consent.subscribe(session, "mover@example.com", [morning.id], confirmed=True,
                                  timezone="America/New_York").subscriber.id
        first = schedules.first_wave(session, morning, morning.next_run_at)
        cut = sending.run_regular(session, morning.id, svc.settings, first)
        edition_id = cut.edition.id

    def waits_until(zone: str) -> tuple:
        """When the mover's row waits until, as a wall clock in `zone`."""
        with transaction(svc.Session) as session:
            at = session.scalar(select(Delivery.next_attempt_at).where(
                Delivery.subscriber_id == mover, Delivery.edition_id == edition_id, Delivery.status == "waiting"))
        local = at.astimezone(ZoneInfo(zone))
        return local.date(), local.time()

    assert first.astimezone(ZoneInfo("Australia/Sydney")).time() == time(7)
    assert waits_until("America/New_York") == (day, time(7))
    path = path_of(svc, mover)
    submit(client, path, data={"action": "save", "newsletter": "morning", "timezone": "Asia/Tokyo"})
    assert waits_until("Asia/Tokyo") == (day, time(7))
    submit(client, path, data={"action": "save", "newsletter": "morning", "timezone": "own"})
    assert waits_until("Europe/Berlin") == (day, time(7))


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_zone_not_on_the_list_is_refused_clearly_and_nothing_is_saved(svc, client, hostile):
    subscriber_id = reader(svc, timezone="Asia/Tokyo")
    path = path_of(svc, subscriber_id)
    page = submit(client, path, data={"action": "save", "timezone": hostile})  # and Daily unticked
    assert page.status_code == 400
    assert "is not a time zone we know; choose one from the list" in page.text
    assert "<script>alert" not in page.text and "\r\nBcc" not in page.text
    assert zone_of(svc, "reader@example.com") == "Asia/Tokyo"
    with transaction(svc.Session) as session:  # the newsletter unticked with it stays: nothing was saved
        assert session.scalar(select(Subscription.status).where(Subscription.subscriber_id == subscriber_id)) \
            == "active"


# ── the command line ─────────────────────────────────────────────────────────


def test_the_cli_makes_a_local_time_newsletter_and_a_reader_with_a_zone(tmp_path):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
           "SYNDICATE_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    run = cli_in(env)
    run("db", "upgrade")
    run("newsletter", "add", "morning", "--name", "Morning", "--from-address", "news@example.com",
        "--timezone", "Europe/Berlin", "--local-time")
    assert '"local_time": true' in run("newsletter", "show", "morning", "--json")
    run("subscriber", "add", "sydney@example.com", "--newsletter", "morning", "--confirmed",
        "--timezone", "Australia/Sydney")
    assert "reads in Australia/Sydney" in run("subscriber", "show", "sydney@example.com")
    run("newsletter", "edit", "morning", "--no-local-time")
    assert '"local_time": false' in run("newsletter", "show", "morning", "--json")
    refused = CliRunner().invoke(main, ["subscriber", "add", "x@example.com", "--newsletter", "morning",
                                        "--timezone", "Europe/Berlin\nBcc: x"], env=env)
    assert refused.exit_code != 0 and "is not a time zone we know" in str(refused.exception or refused.output)


def test_an_imported_file_gives_new_readers_their_zone_and_refuses_a_row_with_a_bad_one(tmp_path):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
           "SYNDICATE_DATABASE_URL": f"sqlite:///{tmp_path / 'csv.db'}"}
    run = cli_in(env)
    run("db", "upgrade")
    run("newsletter", "add", "morning", "--name", "Morning", "--from-address", "news@example.com", "--local-time")
    run("subscriber", "add", "old@example.com", "--newsletter", "morning", "--confirmed", "--timezone", "Asia/Tokyo")
    (tmp_path / "readers.csv").write_text(
        "email,name,Time Zone\n"
        "ana@example.com,Ana,Australia/Sydney\n"
        "bo@example.com,Bo,\n"
        'eve@example.com,Eve,"Europe/Berlin\r\nBcc: all@example.com"\n'
        "mal@example.com,Mal,../../etc/passwd\n"
        "old@example.com,Old,America/Chicago\n")
    imported = CliRunner().invoke(main, ["subscriber", "import", str(tmp_path / "readers.csv"), "--newsletter",
                                         "morning", "--report", str(tmp_path / "report.csv")], env=env)
    assert imported.exit_code == 1 and "2 added" in imported.output and "2 bad" in imported.output  # said, and why
    report = (tmp_path / "report.csv").read_text()
    assert "eve@example.com" in report and "mal@example.com" in report and "(timezone column)" in report
    for address, zone in (("ana", "Australia/Sydney"), ("bo", None), ("old", "Asia/Tokyo")):
        shown = run("subscriber", "show", f"{address}@example.com")
        assert (f"reads in {zone}" in shown) if zone else ("reads in" not in shown), shown
    exported = run("subscriber", "export", "--newsletter", "morning")
    header, *rows = exported.splitlines()
    assert header.endswith(",timezone")
    zones = {row.split(",")[0]: row.rsplit(",", 1)[1] for row in rows}
    assert zones["ana@example.com"] == "Australia/Sydney" and zones["bo@example.com"] == ""  # a file that imports back
