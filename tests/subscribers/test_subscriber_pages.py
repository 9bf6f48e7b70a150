"""The reader's side: confirmation limits (a database throttle), the preferences page, the public archive
and its Atom feed — through the real FastAPI app, a real SMTP server and a real database."""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin, urlsplit

import pytest
import time_machine
from sqlalchemy import delete, func, select
from starlette.testclient import TestClient

from conftest import cli_in, configured, submit
from syndicate import throttle, tokens
from syndicate.db import transaction
from syndicate.errors import InvalidInput, NotFound
from syndicate.models import Delivery, Edition, Newsletter, Subscriber, SubscriberEvent, Subscription, Throttle
from syndicate.newsletters import archive, editions, lists, rendering
from syndicate.newsletters.rendering import PREFERENCES_URL, UNSUBSCRIBE_URL
from syndicate.subscribers import consent, preferences
from syndicate.web.app import create_app

ATOM = "{http://www.w3.org/2005/Atom}"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ONE_CLICK = {"content": "List-Unsubscribe=One-Click",
             "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


# ── fixtures and helpers ─────────────────────────────────────────────────────


@pytest.fixture
def site(make_settings, tmp_path, smtp_server):
    """Two newsletters, Daily and Weekly; confirmation limits small enough to reach."""
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'pages.db'}", smtp_url=smtp_server.url,
                                   confirmations_per_address=2, confirmations_per_client=3), eager=True)
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com",
                             timezone="America/Los_Angeles")
        lists.add_newsletter(session, slug="weekly", name="Weekly", from_address="news@example.com")
    return svc


def visitor(address: str = "203.0.113.7") -> TestClient:
    """A browser at `address`: what request.client.host says behind no proxy."""
    return TestClient(create_app(), raise_server_exceptions=False, client=(address, 50000))


@pytest.fixture
def client(site):
    with visitor() as client:
        yield client


def newsletter_id(svc, slug: str) -> int:
    with transaction(svc.Session) as session:
        return lists.get_newsletter(session, slug).id


def reader(svc, address: str = "reader@example.com", slugs: tuple[str, ...] = ("daily",)) -> int:
    """A confirmed subscriber of `slugs`; their id."""
    with transaction(svc.Session) as session:
        ids = [lists.get_newsletter(session, slug).id for slug in slugs]
        return consent.subscribe(session, address, ids, confirmed=True).subscriber.id


def preferences_path(svc, subscriber_id: int) -> str:
    return f"/p/{tokens.preferences_token(svc.settings.secret_key, subscriber_id)}"


def statuses(svc, subscriber_id: int) -> tuple[str, dict[str, str]]:
    """The subscriber's status and their subscriptions by newsletter slug."""
    with transaction(svc.Session) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        rows = session.execute(select(Newsletter.slug, Subscription.status).join(Subscription)
                               .where(Subscription.subscriber_id == subscriber_id)).all()
        return subscriber.status, dict(rows)


def events(svc, subscriber_id: int) -> list[tuple[str, str, str | None, str | None]]:
    """(kind, source, newsletter slug, detail) in order."""
    with transaction(svc.Session) as session:
        return [tuple(row) for row in session.execute(
            select(SubscriberEvent.kind, SubscriberEvent.source, Newsletter.slug, SubscriberEvent.detail)
            .outerjoin(Newsletter, Newsletter.id == SubscriberEvent.newsletter_id)
            .where(SubscriberEvent.subscriber_id == subscriber_id).order_by(SubscriberEvent.id))]


def subscriber_id_of(svc, address: str) -> int | None:
    with transaction(svc.Session) as session:
        return session.scalar(select(Subscriber.id).where(Subscriber.email == address))


def mails_to(smtp_server, address: str) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m.data, policy=email.policy.default)
            for m in smtp_server.messages if m.recipients == [address]]


def throttle_count(svc, key: str) -> int | None:
    with transaction(svc.Session) as session:
        return session.scalar(select(Throttle.count).where(Throttle.key == key))


PERSONAL_HTML = (
    '<html><body><h1>{subject}</h1><p>Story of edition {number} &amp; more</p>'
    f'<p><a href="{UNSUBSCRIBE_URL}">Unsubscribe</a> · <a href="{PREFERENCES_URL}">Preferences</a></p>'
    '<!--personal--><p>Sent to reader@example.com · <a href="http://testserver/u/SECRETTOKEN">leave</a> · '
    '<a href="http://testserver/p/SECRETTOKEN">preferences</a></p><!--/personal--></body></html>'
)


def add_edition(svc, slug: str, number: int, status: str, *, subject: str | None = None,
                at: datetime = T0, html: str | None = None) -> int:
    """An edition row as the pipeline leaves it, with the per-recipient placeholders a real render has."""
    subject = subject or f"Edition {number} of {slug}"
    with transaction(svc.Session) as session:
        newsletter = lists.get_newsletter(session, slug)
        edition = Edition(newsletter_id=newsletter.id, number=number, status=status, subject=subject,
                          html=html or PERSONAL_HTML.format(subject=subject, number=number), text=subject,
                          cut_at=at, scheduled_for=at, warnings=[],
                          started_at=at if status in editions.PUBLIC else None,
                          sent_at=at if status == "sent" else None)
        session.add(edition)
        session.flush()
        return edition.id


def pending_delivery(svc, edition_id: int, subscriber_id: int) -> int:
    with transaction(svc.Session) as session:
        delivery = Delivery(edition_id=edition_id, subscriber_id=subscriber_id, status="pending", attempts=0,
                            next_attempt_at=T0)
        session.add(delivery)
        session.flush()
        return delivery.id


def delivery_status(svc, delivery_id: int) -> tuple[str, str | None]:
    with transaction(svc.Session) as session:
        delivery = session.get(Delivery, delivery_id)
        return delivery.status, delivery.last_reply


# ── the throttle ─────────────────────────────────────────────────────────────


def hit(svc, key: str, limit: int, now: datetime, window: int = 3600) -> bool:
    with transaction(svc.Session) as session:
        return throttle.hit(session, key, limit, window, now)


def test_a_throttle_allows_the_limit_in_a_window_and_as_many_again_in_the_next(svc):
    allowed = [hit(svc, "k", 3, T0 + timedelta(minutes=m)) for m in (0, 1, 2, 30, 59)]
    assert allowed == [True, True, True, False, False]
    assert throttle_count(svc, "k") == 3  # refused attempts are not counted

    # The window opened with the first attempt at T0: an hour later, a new one.
    allowed = [hit(svc, "k", 3, T0 + timedelta(minutes=m)) for m in (60, 61, 62, 63)]
    assert allowed == [True, True, True, False]


def test_a_throttle_counts_each_key_on_its_own(svc):
    assert [hit(svc, "a", 1, T0), hit(svc, "a", 1, T0)] == [True, False]
    assert hit(svc, "b", 1, T0) is True


def test_a_throttle_count_is_taken_back_when_the_callers_transaction_rolls_back(svc):
    with pytest.raises(RuntimeError), transaction(svc.Session) as session:
        assert throttle.hit(session, "k", 1, 3600, T0)
        raise RuntimeError("the signup failed after counting")

    assert throttle_count(svc, "k") is None
    assert hit(svc, "k", 1, T0) is True


def test_a_throttle_keeps_a_key_too_long_for_its_column_apart_from_its_neighbours(svc):
    long_a, long_b = "x" * 400 + "a", "x" * 400 + "b"
    assert [hit(svc, long_a, 1, T0), hit(svc, long_b, 1, T0), hit(svc, long_a, 1, T0)] == [True, True, False]


@pytest.mark.parametrize("limit", [1000, 25])
def test_a_throttle_loses_no_count_under_concurrent_hits(database_url, make_settings, limit):
    svc = configured(make_settings(database_url=database_url))
    threads, hits_each = 8, 10
    start = threading.Barrier(threads)  # everyone races for the first INSERT of the key too
    results: list[bool] = []
    lock = threading.Lock()

    def worker():
        start.wait()
        for _ in range(hits_each):
            allowed = hit(svc, "race", limit, T0)
            with lock:
                results.append(allowed)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    expected = min(limit, threads * hits_each)
    assert len(results) == threads * hits_each
    assert results.count(True) == expected
    assert throttle_count(svc, "race") == expected


# ── double opt-in limits ─────────────────────────────────────────────────────


def test_one_address_gets_at_most_its_hourly_confirmations_and_more_the_next_hour(client, site, smtp_server):
    form = {"email": "reader@example.com", "newsletter": "daily"}
    with time_machine.travel(T0, tick=True):
        pages = [submit(client, "/subscribe", data=form) for _ in range(3)]
    assert [p.status_code for p in pages] == [200, 200, 200]
    assert "sent you an email" in pages[0].text
    assert "already sent several confirmation emails to this address" in pages[2].text
    assert len(mails_to(smtp_server, "reader@example.com")) == 2

    with time_machine.travel(T0 + timedelta(minutes=61), tick=True):
        later = submit(client, "/subscribe", data=form)
    assert "sent you an email" in later.text
    sent = mails_to(smtp_server, "reader@example.com")
    assert len(sent) == 3
    assert len({m["Message-ID"] for m in sent}) == 3  # every confirmation mail has its own Message-ID


def test_a_signup_over_the_limit_is_still_recorded_with_why_no_mail_went(client, site, smtp_server):
    form = {"email": "reader@example.com", "newsletter": "daily"}
    for _ in range(2):
        submit(client, "/subscribe", data=form)
    submit(client, "/subscribe", data={"email": "reader@example.com", "newsletter": "weekly"})

    subscriber_id = subscriber_id_of(site, "reader@example.com")
    assert statuses(site, subscriber_id) == ("pending", {"daily": "pending", "weekly": "pending"})
    assert len(mails_to(smtp_server, "reader@example.com")) == 2
    timeline = events(site, subscriber_id)
    assert [(kind, source) for kind, source, _, _ in timeline] == [("subscribed", "web")] * 3
    assert timeline[0][3] == "Daily"
    assert timeline[2][3] == "Weekly; no confirmation mail: the hourly limit for this address was reached"


def test_one_client_gets_at_most_its_hourly_confirmations_across_addresses(site, smtp_server):
    with visitor("203.0.113.7") as sender:
        pages = [submit(sender, "/subscribe", data={"email": f"r{i}@example.com", "newsletter": "daily"})
                 for i in range(4)]

    assert [p.status_code for p in pages] == [200] * 4
    assert all("sent you an email" in p.text for p in pages[:3])
    assert "Please try again later" in pages[3].text and "your network" in pages[3].text
    assert [len(mails_to(smtp_server, f"r{i}@example.com")) for i in range(4)] == [1, 1, 1, 0]
    r3 = subscriber_id_of(site, "r3@example.com")
    assert statuses(site, r3) == ("pending", {"daily": "pending"})
    assert events(site, r3)[0][3] == ("Daily; no confirmation mail: the hourly limit for sign-ups from one IP "
                                      "address was reached")
    # Held back by the client's limit, the address's own allowance was not used up.
    assert throttle_count(site, "confirm:address:r3@example.com") is None

    with visitor("198.51.100.2") as elsewhere:
        page = submit(elsewhere, "/subscribe", data={"email": "r3@example.com", "newsletter": "daily"})
    assert "sent you an email" in page.text
    assert len(mails_to(smtp_server, "r3@example.com")) == 1
    assert throttle_count(site, "confirm:client:203.0.113.7") == 3
    assert throttle_count(site, "confirm:client:198.51.100.2") == 1


def test_a_signup_without_a_client_is_limited_by_address_only(site):
    """The CLI has no client: the per-address limit still holds, the per-client one doesn't apply."""
    sends = []
    with transaction(site.Session) as session:
        daily = lists.get_newsletter(session, "daily").id
        for i in range(5):
            signup = consent.subscribe(session, f"r{i}@example.com", [daily], source="cli",
                                       settings=site.settings, now=T0)
            sends.append(signup.send_confirmation)
        again = [consent.subscribe(session, "r0@example.com", [daily], source="cli", settings=site.settings,
                                   now=T0) for _ in range(2)]
    assert sends == [True] * 5  # more than confirmations_per_client (3)
    assert [(s.send_confirmation, s.held_back) for s in again] == [(True, None), (False, "address")]
    assert events(site, again[0].subscriber.id)[0][:2] == ("subscribed", "cli")


def test_the_cli_signup_is_on_the_timeline_and_obeys_the_configured_address_limit(tmp_path):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
           "SYNDICATE_CONFIRMATIONS_PER_ADDRESS": "1"}
    run = cli_in(env)

    run("db", "upgrade")
    run("newsletter", "add", "daily", "--name", "Daily", "--from-address", "news@example.com")
    first = run("subscriber", "add", "reader@example.com", "--newsletter", "daily")
    second = run("subscriber", "add", "reader@example.com", "--newsletter", "daily")
    shown = json.loads(run("subscriber", "show", "reader@example.com", "--json"))

    assert "(confirmation mail queued)" in first
    assert "(confirmation mail queued)" not in second  # SYNDICATE_CONFIRMATIONS_PER_ADDRESS=1
    assert json.dumps(shown).count("via cli") == 2


def test_a_signup_without_settings_uses_the_default_limits(site):
    with transaction(site.Session) as session:
        daily = lists.get_newsletter(session, "daily").id
        sends = [consent.subscribe(session, "r@example.com", [daily], now=T0).send_confirmation
                 for _ in range(4)]
    assert sends == [True, True, True, False]  # Settings.confirmations_per_address defaults to 3


def test_the_timeline_records_subscribed_confirmed_and_one_click_unsubscribed(client, site, smtp_server):
    submit(client, "/subscribe", data={"email": "reader@example.com", "newsletter": ["daily", "weekly"]})
    link = re.search(r"http://testserver(/confirm/[A-Za-z0-9._-]+)", mails_to(smtp_server, "reader@example.com")[0]
                     .get_body(("plain",)).get_content()).group(1)
    assert submit(client, link).status_code == 200
    assert submit(client, link).status_code == 200  # pressed twice: confirmed once
    subscriber_id = subscriber_id_of(site, "reader@example.com")
    token = tokens.unsubscribe_token(site.settings.secret_key, subscriber_id, newsletter_id(site, "daily"))
    unsubscribe = f"/u/{token}"
    with TestClient(create_app()) as provider:
        assert provider.post(unsubscribe, follow_redirects=False, **ONE_CLICK).status_code == 200

    assert events(site, subscriber_id) == [
        ("subscribed", "web", None, "Daily, Weekly"),
        ("confirmed", "web", None, "Daily, Weekly"),
        ("unsubscribed", "one-click", "daily", None),
    ]
    assert statuses(site, subscriber_id) == ("confirmed", {"daily": "unsubscribed", "weekly": "active"})


def test_a_reader_who_left_everything_and_signs_up_again_is_back_once_they_confirm(client, site, smtp_server):
    subscriber_id = reader(site)
    with transaction(site.Session) as session:
        preferences.leave_all(session, subscriber_id)

    submit(client, "/subscribe", data={"email": "reader@example.com", "newsletter": "weekly"})
    link = re.search(r"http://testserver(/confirm/[A-Za-z0-9._-]+)", mails_to(smtp_server, "reader@example.com")[0]
                     .get_body(("plain",)).get_content()).group(1)
    page = submit(client, link)

    assert "confirmed" in page.text
    assert statuses(site, subscriber_id) == ("confirmed", {"daily": "unsubscribed", "weekly": "active"})
    assert events(site, subscriber_id)[-1][:2] == ("resubscribed", "web")


def test_a_bounced_address_that_confirms_is_told_its_mail_is_suspended(client, site):
    subscriber_id = reader(site)
    with transaction(site.Session) as session:
        consent.suppress(session, session.get(Subscriber, subscriber_id), "bounced", "smtp", "550 no such user")
        consent.subscribe(session, "reader@example.com", [lists.get_newsletter(session, "weekly").id])

    page = submit(client, f"/confirm/{tokens.confirm_token(site.settings.secret_key, subscriber_id)}")

    assert page.status_code == 200
    assert "suspended" in page.text and "bounced" in page.text
    assert statuses(site, subscriber_id)[0] == "bounced"


# ── what link scanners do ────────────────────────────────────────────────────


def snapshot(svc) -> tuple:
    with transaction(svc.Session) as session:
        return (
            session.execute(select(Subscriber.id, Subscriber.status).order_by(Subscriber.id)).all(),
            session.execute(select(Subscription.id, Subscription.status).order_by(Subscription.id)).all(),
            session.execute(select(Delivery.id, Delivery.status).order_by(Delivery.id)).all(),
            session.scalar(select(func.count()).select_from(SubscriberEvent)),
        )


def test_a_link_scanner_opening_every_link_in_a_mail_changes_nothing(site):
    confirmed = reader(site, "reader@example.com", ("daily", "weekly"))
    daily = newsletter_id(site, "daily")
    with transaction(site.Session) as session:
        waiting = consent.subscribe(session, "new@example.com", [daily]).subscriber.id
    add_edition(site, "daily", 1, "sent")
    open_delivery = pending_delivery(site, add_edition(site, "daily", 2, "sending"), confirmed)
    secret = site.settings.secret_key
    links = [f"/confirm/{tokens.confirm_token(secret, waiting)}",
             f"/u/{tokens.unsubscribe_token(secret, confirmed, daily)}",
             preferences_path(site, confirmed), "/n/daily", "/n/daily/1", "/n/daily/feed.atom"]
    before = snapshot(site)

    seen, answers = set(), []
    with visitor("192.0.2.99") as scanner:
        while links:
            path = links.pop()
            if path in seen:
                continue
            seen.add(path)
            for method in (scanner.head, scanner.get):
                response = method(path, follow_redirects=True)
                answers.append((method.__name__, path, response.status_code))
            # Follow every link on the page, as scanners do; never submit a form.
            for href in re.findall(r'href="([^"]+)"', response.text):
                url = urlsplit(urljoin("http://testserver" + path, href))
                if url.netloc == "testserver":
                    links.append(url.path)

    assert snapshot(site) == before
    assert delivery_status(site, open_delivery)[0] == "pending"
    assert {"/", "/n/daily/1", "/n/daily/2"} <= seen  # it followed the archive's links
    assert all(status < 500 for _, _, status in answers), answers
    assert all(status == 200 for method, _, status in answers if method == "get"), answers


# ── the preferences page ─────────────────────────────────────────────────────


def test_the_preferences_page_shows_the_address_and_a_box_per_newsletter(client, site):
    subscriber_id = reader(site)

    page = client.get(preferences_path(site, subscriber_id))

    assert page.status_code == 200
    assert "reader@example.com" in page.text
    assert 'value="daily" id="n-daily" checked' in page.text
    assert 'value="weekly" id="n-weekly">' in page.text
    assert 'name="action" value="save"' in page.text
    assert "Leave all newsletters" in page.text
    assert "csrf" not in page.text.lower()


def test_saving_preferences_starts_one_newsletter_and_stops_another_at_once(client, site):
    subscriber_id = reader(site)
    waiting = pending_delivery(site, add_edition(site, "daily", 1, "sending"), subscriber_id)

    page = submit(client, preferences_path(site, subscriber_id), data={"action": "save", "newsletter": "weekly"},
                  follow_redirects=False)

    assert page.status_code == 200
    assert "Saved. Starting now: Weekly. Stopped: Daily." in page.text
    assert 'value="weekly" id="n-weekly" checked' in page.text
    assert 'value="daily" id="n-daily">' in page.text
    assert statuses(site, subscriber_id) == ("confirmed", {"daily": "unsubscribed", "weekly": "active"})
    assert delivery_status(site, waiting) == ("skipped", "unsubscribed before sending")
    assert events(site, subscriber_id) == [
        ("unsubscribed", "web", "daily", "on the preferences page"),
        ("subscribed", "web", "weekly", "on the preferences page"),
    ]


def test_saving_the_same_preferences_again_changes_nothing(client, site):
    subscriber_id = reader(site)
    path = preferences_path(site, subscriber_id)
    submit(client, path, data={"action": "save", "newsletter": ["daily", "weekly"]})
    timeline = events(site, subscriber_id)

    page = submit(client, path, data={"action": "save", "newsletter": ["daily", "weekly"]})

    assert "Nothing needed to change" in page.text
    assert events(site, subscriber_id) == timeline


def test_leaving_all_newsletters_suppresses_the_address(client, site):
    subscriber_id = reader(site, slugs=("daily", "weekly"))
    waiting = pending_delivery(site, add_edition(site, "weekly", 1, "sending"), subscriber_id)
    path = preferences_path(site, subscriber_id)

    page = submit(client, path, data={"action": "leave"}, follow_redirects=False)
    again = submit(client, path, data={"action": "leave"})

    assert page.status_code == again.status_code == 200
    assert "you have left every newsletter" in page.text
    assert 'checked' not in page.text
    assert statuses(site, subscriber_id) == ("unsubscribed", {"daily": "unsubscribed", "weekly": "unsubscribed"})
    assert delivery_status(site, waiting)[0] == "skipped"
    assert [e for e in events(site, subscriber_id) if e[0] == "unsubscribed"] == [
        ("unsubscribed", "web", None, "left every newsletter from the preferences page")]


def test_a_reader_who_left_everything_can_come_back_from_their_preferences_link(client, site):
    subscriber_id = reader(site)
    path = preferences_path(site, subscriber_id)
    submit(client, path, data={"action": "leave"})

    page = submit(client, path, data={"action": "save", "newsletter": "daily"})

    assert "Starting now: Daily" in page.text
    assert statuses(site, subscriber_id) == ("confirmed", {"daily": "active"})
    assert events(site, subscriber_id)[-1] == ("resubscribed", "web", None, "on the preferences page")


def test_a_one_click_unsubscribe_can_be_undone_on_the_preferences_page(client, site):
    subscriber_id = reader(site)
    token = tokens.unsubscribe_token(site.settings.secret_key, subscriber_id, newsletter_id(site, "daily"))
    client.post(f"/u/{token}", **ONE_CLICK)

    submit(client, preferences_path(site, subscriber_id), data={"action": "save", "newsletter": "daily"})

    assert statuses(site, subscriber_id) == ("confirmed", {"daily": "active"})


@pytest.mark.parametrize(("status", "why"), [("bounced", "bounced"), ("complained", "reported as spam")])
def test_a_suspended_address_is_told_why_and_not_mailed_again(client, site, status, why):
    subscriber_id = reader(site)
    with transaction(site.Session) as session:
        consent.suppress(session, session.get(Subscriber, subscriber_id), status, "smtp", "550 no such user",
                         now=T0)
    before = statuses(site, subscriber_id)
    path = preferences_path(site, subscriber_id)

    shown = client.get(path)
    page = submit(client, path, data={"action": "save", "newsletter": ["daily", "weekly"]})

    assert "Mail to reader@example.com is suspended. On March 2, 2026" in shown.text
    assert why in shown.text
    assert page.status_code == 200
    assert re.search(r"Not started: (Daily, )?Weekly, because mail to this address is suspended", page.text)
    assert why in page.text
    assert statuses(site, subscriber_id) == before
    assert statuses(site, subscriber_id)[0] == status


def test_a_bounced_reader_can_still_leave_and_stays_bounced(client, site):
    subscriber_id = reader(site, slugs=("daily", "weekly"))
    with transaction(site.Session) as session:
        consent.suppress(session, session.get(Subscriber, subscriber_id), "bounced", "smtp", "550")
    path = preferences_path(site, subscriber_id)

    submit(client, path, data={"action": "save", "newsletter": "weekly"})
    assert statuses(site, subscriber_id) == ("bounced", {"daily": "unsubscribed", "weekly": "active"})
    submit(client, path, data={"action": "leave"})
    assert statuses(site, subscriber_id) == ("bounced", {"daily": "unsubscribed", "weekly": "unsubscribed"})
    # Having "left", re-ticking a box must not make a bouncing address look deliverable.
    submit(client, path, data={"action": "save", "newsletter": "weekly"})
    assert statuses(site, subscriber_id) == ("bounced", {"daily": "unsubscribed", "weekly": "unsubscribed"})


def test_a_damaged_preferences_link_gets_a_helpful_400_and_changes_nothing(client, site):
    subscriber_id = reader(site)
    path = preferences_path(site, subscriber_id)
    tampered = path[:-2] + ("AA" if not path.endswith("AA") else "BB")

    for response in (client.get(tampered), client.post(tampered, data={"action": "leave"})):
        assert response.status_code == 400
        assert "preferences link is damaged; copy the whole link from the email" in response.text
    assert statuses(site, subscriber_id) == ("confirmed", {"daily": "active"})


def test_a_post_without_a_button_saves_nothing(client, site):
    subscriber_id = reader(site)

    response = submit(client, preferences_path(site, subscriber_id), data={})

    assert response.status_code == 400
    assert "nothing was saved" in response.text
    assert statuses(site, subscriber_id) == ("confirmed", {"daily": "active"})


def test_a_preferences_link_of_a_deleted_subscriber_is_404(client, site):
    subscriber_id = reader(site)
    with transaction(site.Session) as session:
        session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))  # as an editor's erasure

    response = client.get(preferences_path(site, subscriber_id))

    assert response.status_code == 404
    assert "no longer exists" in response.text


def test_preferences_offer_active_newsletters_and_paused_ones_the_reader_gets(site):
    subscriber_id = reader(site, slugs=("weekly",))
    with transaction(site.Session) as session:
        session.add(Newsletter(slug="gone", name="Gone", from_name="x", from_address="x@example.com",
                               status="paused"))
        lists.pause_newsletter(session, lists.get_newsletter(session, "weekly"))
    with transaction(site.Session) as session:
        prefs = preferences.preferences(session, subscriber_id)
        offered = [(c.newsletter.slug, c.subscribed) for c in prefs.choices]
        assert offered == [("daily", False), ("weekly", True)]
        assert prefs.suspended is None
        gone = lists.get_newsletter(session, "gone").id
        with pytest.raises(InvalidInput, match="no newsletter with id"):
            preferences.set_preferences(session, subscriber_id, [gone])
        with pytest.raises(NotFound):
            preferences.preferences(session, 10_000)


def test_set_preferences_confirms_a_waiting_subscription(site):
    daily = newsletter_id(site, "daily")
    with transaction(site.Session) as session:
        subscriber_id = consent.subscribe(session, "new@example.com", [daily]).subscriber.id
        assert preferences.preferences(session, subscriber_id).choices[0].waiting

        saved = preferences.set_preferences(session, subscriber_id, [daily], now=T0)

        assert [n.slug for n in saved.joined] == ["daily"] and not saved.left and not saved.refused
    assert statuses(site, subscriber_id) == ("confirmed", {"daily": "active"})
    assert events(site, subscriber_id)[-1][:2] == ("confirmed", "web")


# ── the archive, the web view and the Atom feed ──────────────────────────────


@pytest.fixture
def published(site):
    """Daily: editions 1 and 3 went out, 2 is a draft; 4 scheduled, 5 cancelled, 6 skipped."""
    add_edition(site, "daily", 1, "sent", subject="First <b>news</b> & \"quotes\"", at=T0)
    add_edition(site, "daily", 2, "draft", subject="Draft nobody saw")
    add_edition(site, "daily", 3, "sent", subject="Third", at=datetime(2026, 3, 4, 5, 30, tzinfo=UTC))
    add_edition(site, "daily", 4, "scheduled", subject="Scheduled later")
    add_edition(site, "daily", 5, "cancelled", subject="Cancelled one")
    add_edition(site, "daily", 6, "skipped", subject="Skipped one")
    return site


def test_the_archive_lists_what_went_out_newest_first_with_local_dates(client, published):
    page = client.get("/n/daily")

    assert page.status_code == 200
    items = re.findall(r'<li><a href="(/n/daily/\d+)">.*?<time datetime="([\d-]+)">', page.text, re.S)
    assert items == [("/n/daily/3", "2026-03-03"), ("/n/daily/1", "2026-03-02")]
    assert "March 3, 2026" in page.text  # 05:30 UTC is the evening before in Los Angeles
    assert "First &lt;b&gt;news&lt;/b&gt; &amp; &#34;quotes&#34;" in page.text
    for unsent in ("Draft nobody saw", "Scheduled later", "Cancelled one", "Skipped one"):
        assert unsent not in page.text
    assert '<a href="/">Subscribe</a>' in page.text
    assert '<a href="/n/daily/feed.atom" type="application/atom+xml">' in page.text


def test_the_archive_of_a_newsletter_with_no_edition_yet_says_so(client, site):
    page = client.get("/n/weekly")

    assert page.status_code == 200
    assert "No editions have gone out yet." in page.text


def test_a_paused_newsletter_keeps_its_archive_and_feed(client, published):
    with transaction(published.Session) as session:
        lists.pause_newsletter(session, lists.get_newsletter(session, "daily"))

    page = client.get("/n/daily")
    feed = ET.fromstring(client.get("/n/daily/feed.atom").content)

    assert page.status_code == 200
    assert "Paused for now" in page.text and '<a href="/">Subscribe</a>' not in page.text
    assert "/n/daily/3" in page.text and "/n/daily/1" in page.text
    assert len(feed.findall(f"{ATOM}entry")) == 2
    assert client.get("/n/daily/1").status_code == 200


def test_the_web_view_shows_only_editions_that_went_out(client, published):
    assert client.get("/n/daily/1").status_code == 200
    for number in (2, 4, 5, 6):
        response = client.get(f"/n/daily/{number}")
        assert response.status_code == 404, number
        assert "Draft nobody saw" not in response.text


def test_the_atom_feed_holds_the_editions_that_went_out(client, published):
    response = client.get("/n/daily/feed.atom")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/atom+xml"
    assert response.content.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    feed = ET.fromstring(response.content)
    assert feed.tag == f"{ATOM}feed"
    assert feed.findtext(f"{ATOM}id") == "http://testserver/n/daily"
    assert feed.findtext(f"{ATOM}title") == "Daily"
    assert feed.findtext(f"{ATOM}updated") == "2026-03-04T05:30:00+00:00"
    assert feed.findtext(f"{ATOM}author/{ATOM}name") == "Daily"
    links = {link.get("rel"): link.get("href") for link in feed.findall(f"{ATOM}link")}
    assert links == {"self": "http://testserver/n/daily/feed.atom", "alternate": "http://testserver/n/daily"}

    entries = feed.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}id") for e in entries] == ["http://testserver/n/daily/3", "http://testserver/n/daily/1"]
    first = entries[1]
    assert first.findtext(f"{ATOM}title") == 'First <b>news</b> & "quotes"'  # escaped on the wire, whole here
    assert first.findtext(f"{ATOM}updated") == "2026-03-02T09:00:00+00:00"
    assert first.find(f"{ATOM}link").get("href") == "http://testserver/n/daily/1"
    content = first.find(f"{ATOM}content")
    assert content.get("type") == "html"
    with transaction(published.Session) as session:
        edition = editions.get_edition(session, "daily", 1)
        assert content.text == rendering.public_html(edition, published.settings)
    assert "Story of edition 1 &amp; more" in content.text
    for unsent in (b"Draft nobody saw", b"Scheduled later", b"Cancelled one", b"Skipped one"):
        assert unsent not in response.content


def test_the_atom_feed_stays_well_formed_whatever_an_edition_holds(client, site):
    hostile = "<p>Form\x0cfeed ]]> <![CDATA[ x ]]> &nbsp; </content></entry></feed> \x0b</p>"
    add_edition(site, "daily", 1, "sent", subject="Odd", html=hostile)

    entry = ET.fromstring(client.get("/n/daily/feed.atom").content).find(f"{ATOM}entry")

    assert entry.findtext(f"{ATOM}content") == "<p>Formfeed ]]> <![CDATA[ x ]]> &nbsp; </content></entry></feed> </p>"


def test_the_atom_feed_holds_the_newest_editions_and_the_archive_all(client, site):
    for number in range(1, archive.FEED_ENTRIES + 3):
        add_edition(site, "daily", number, "sent", at=T0 + timedelta(days=number))

    feed = ET.fromstring(client.get("/n/daily/feed.atom").content)
    page = client.get("/n/daily")

    numbers = [int(e.findtext(f"{ATOM}id").rpartition("/")[2]) for e in feed.findall(f"{ATOM}entry")]
    assert numbers == list(range(archive.FEED_ENTRIES + 2, 2, -1))
    assert page.text.count('<li><a href="/n/daily/') == archive.FEED_ENTRIES + 2


def test_no_subscribers_link_or_placeholder_reaches_a_public_page(client, published):
    subscriber_id = reader(published)
    secret = published.settings.secret_key
    own = [tokens.preferences_token(secret, subscriber_id),
           tokens.unsubscribe_token(secret, subscriber_id, newsletter_id(published, "daily"))]

    for path in ("/n/daily", "/n/daily/1", "/n/daily/3", "/n/daily/feed.atom"):
        text = client.get(path).text
        assert "/u/" not in text, path
        assert "/p/" not in text, path
        assert "syndicate.invalid" not in text, path
        assert "SECRETTOKEN" not in text and "reader@example.com" not in text, path
        assert not any(token in text for token in own), path


def test_an_unknown_newsletter_has_no_archive_and_no_feed(client, site):
    for path in ("/n/nope", "/n/nope/feed.atom"):
        response = client.get(path)
        assert response.status_code == 404
        assert "there is no newsletter called" in response.text
