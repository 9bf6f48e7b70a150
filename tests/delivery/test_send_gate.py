"""The pre-send gate: each blocking check stops an edition from the command line and from the tick, an
editor lets one pass with who and why kept, warnings never block, and a send time in the past is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from conftest import configured
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.models import Article, Delivery, Edition, Newsletter
from syndicate.newsletters import editions, lists
from syndicate.subscribers import consent
from syndicate.web import health

LINKS_HTML = ('<html><body>{% for a in articles %}<p><a href="{{ a.url | href }}">{{ a.title }}</a></p>'
              '{% endfor %}{% block extra %}{% endblock %}<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
              '</body></html>\n')
LINKS_TEXT = "{% for a in articles %}{{ a.title }}: {{ a.url }}\n{% endfor %}Unsubscribe: {{ unsubscribe_url }}\n"
TEMPLATES = {
    # no way to leave in either part
    "no-leaving": (LINKS_HTML.replace('<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>', ""),
                   LINKS_TEXT.replace("Unsubscribe: {{ unsubscribe_url }}\n", "")),
    # 120 KB of HTML: past Gmail's clip
    "padded": (LINKS_HTML.replace("{% block extra %}{% endblock %}", '<div>{{ "padding " * 15000 }}</div>'),
               LINKS_TEXT),
    # a text part without the stories' links
    "short-text": (LINKS_HTML, LINKS_TEXT.replace(": {{ a.url }}", "")),
    "plain": (LINKS_HTML, LINKS_TEXT),
    # each story with its image
    "pictures": (LINKS_HTML.replace('{{ a.title }}</a></p>', '{{ a.title }}</a></p><img src="{{ a.image_url }}">'),
                 LINKS_TEXT),
}
CASES = {"unsubscribe": "no-leaving", "size": "padded", "text-links": "short-text", "links": "plain"}


@pytest.fixture
def templates(tmp_path):
    for name, (html, text) in TEMPLATES.items():
        folder = tmp_path / "templates" / "email" / name
        folder.mkdir(parents=True)
        (folder / "body.html").write_text(html)
        (folder / "body.txt").write_text(text)
    return tmp_path / "templates"


@pytest.fixture
def env(tmp_path, templates) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "test-secret",
            "SYNDICATE_BASE_URL": "http://testserver", "SYNDICATE_DATABASE_URL": f"sqlite:///{tmp_path / 'test.db'}",
            "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_LINK_CHECK": "1",
            "SYNDICATE_TEMPLATE_DIR": str(templates)}


@pytest.fixture
def newsroom(env):
    """The services the CLI in `env` uses, for the tick and for looking at the rows."""
    return configured(Settings.from_env(env))


def edition_of(svc, check: str, feed_server, *, title: str = "Harbour reopens") -> None:
    """A newsletter "daily" (Berlin, no schedule) that fails `check`, one reader, one story."""
    page = feed_server.serve("/harbour", b"<html>a story</html>", content_type="text/html")
    gone = f"{feed_server.base}/2026/12/a-story-taken-down"  # the feed server answers 404
    with transaction(svc.Session) as session:
        made = lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com",
                                    cron=None, timezone="Europe/Berlin", template=CASES[check])
        consent.subscribe(session, "reader@example.com", [made.id], confirmed=True)
        now = datetime.now(UTC)
        session.add(Article(identity=title, url=gone if check == "links" else page, title=title, lead="A lead.",
                            content_hash="x", categories=[], published_at=now, first_seen_at=now))


def ahead(hours: int = 2) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat(timespec="minutes")


def edition_row(svc) -> Edition:
    with transaction(svc.Session) as session:
        found = session.scalar(select(Edition).order_by(Edition.id.desc()))
        found.newsletter  # noqa: B018 - loaded for after the session
        return found


def deliveries(svc) -> int:
    with transaction(svc.Session) as session:
        return session.scalar(select(func.count()).select_from(Delivery))


@pytest.mark.parametrize("check", list(CASES))
def test_each_check_stops_an_edition_scheduled_or_cut_from_the_command_line(console, newsroom, feed_server, check):
    edition_of(newsroom, check, feed_server)

    code, out, err = console("edition", "cut", "daily", "--draft")
    assert code == 0 and f"would block: [{check}]" in out  # checked at the cut already
    code, out, err = console("edition", "schedule", "daily/1", "--at", ahead())
    assert code == 2 and f"[{check}]" in err and f"--override {check} --reason WHY" in err
    assert edition_row(newsroom).status == "draft"

    code, out, err = console("edition", "cancel", "daily/1")
    code, out, err = console("edition", "cut", "daily")  # now: the gate stops it at the start
    assert code == 1 and "blocked" in out and f"--override {check}" in out
    assert edition_row(newsroom).status == "blocked" and deliveries(newsroom) == 0


@pytest.mark.parametrize("check", list(CASES))
def test_each_check_stops_a_scheduled_edition_at_the_tick_and_says_why(console, newsroom, feed_server, check):
    edition_of(newsroom, check, feed_server)
    now = datetime.now(UTC)
    with transaction(newsroom.Session) as session:
        editions.create_edition(session, session.scalar(select(Newsletter)), newsroom.settings, now=now,
                                status="scheduled", scheduled_for=now)

    assert sending.run_due(newsroom.Session, newsroom.settings, now + timedelta(minutes=1)) == []

    found = edition_row(newsroom)
    assert found.status == "blocked" and "blocked by the pre-send checks" in found.note
    assert [f["check"] for f in found.checks["blocking"]] == [check] * len(found.checks["blocking"])
    assert deliveries(newsroom) == 0
    code, out, err = console("edition", "list")
    assert "blocked" in out and "blocked by the pre-send checks" in out
    code, out, err = console("edition", "show", "daily/1")
    assert "status:" in out and "blocked" in out and f"[{check}]" in out
    with newsroom.engine.connect() as connection:  # /healthz: the mail lane is held until an editor acts
        held = health.stuck_lanes(connection, datetime.now(UTC), timedelta(minutes=15))
    assert "daily/1 blocked by the pre-send checks" in held["mail"]


def test_an_editor_lets_a_check_pass_saying_why_and_it_is_kept(console, newsroom, feed_server):
    edition_of(newsroom, "unsubscribe", feed_server)
    console("edition", "cut", "daily", "--draft")

    code, out, err = console("edition", "schedule", "daily/1", "--at", ahead(), "--override", "unsubscribe")
    assert code == 2 and "--reason" in err
    code, out, err = console("edition", "schedule", "daily/1", "--at", ahead(), "--override", "spelling",
                             "--reason", "x")
    assert code == 2 and "no check 'spelling'" in err and "unsubscribe, size, links, text-links" in err
    code, out, err = console("edition", "schedule", "daily/1", "--at", ahead(), "--override", "unsubscribe",
                             "--reason", "a notice to every reader; the law wants no opt-out here")
    assert code == 0, err
    assert "scheduled" in out and "let pass: [unsubscribe]" in out and "the law wants no opt-out" in out

    found = edition_row(newsroom)
    assert found.status == "scheduled"
    assert [(o["check"], o["by"].endswith("(cli)")) for o in found.overrides] == [("unsubscribe", True)]
    batches = sending.run_due(newsroom.Session, newsroom.settings, datetime.now(UTC) + timedelta(hours=3))
    assert batches and edition_row(newsroom).status == "sending"  # the tick honours it
    code, out, err = console("edition", "show", "daily/1")
    assert "let pass:" in out and "the law wants no opt-out here" in out


def test_warnings_never_block(console, newsroom, feed_server, closed_port):
    edition_of(newsroom, "links", feed_server)
    with transaction(newsroom.Session) as session:  # a page on a server that is down: not known to be gone
        session.scalar(select(Article)).url = f"http://127.0.0.1:{closed_port}/2026/12/story"
    console("edition", "cut", "daily", "--draft")
    code, out, err = console("edition", "edit", "daily/1", "--subject", "A subject far too long " * 6)
    assert code == 0

    code, out, err = console("edition", "schedule", "daily/1", "--at", ahead())
    assert code == 0, err
    assert f"warning: could not check http://127.0.0.1:{closed_port}/2026/12/story" in out
    assert "warning: the subject is" in out
    assert sending.run_due(newsroom.Session, newsroom.settings, datetime.now(UTC) + timedelta(hours=3))
    assert edition_row(newsroom).status == "sending"


def test_a_heavy_image_or_a_gone_one_is_a_warning_that_never_blocks(console, newsroom, feed_server):
    """A photo straight from the site's CMS (2.5 MB) and an image its server took down: each is told to the
    editor, by its Content-Length or its status, and neither blocks; a light one says nothing."""
    heavy = feed_server.serve("/photo-full.jpg", b"\xff" * 2_500_000, content_type="image/jpeg")
    light = feed_server.serve("/photo-small.jpg", b"\xff" * 40_000, content_type="image/jpeg")
    gone = f"{feed_server.base}/photo-removed.jpg"
    page = feed_server.serve("/harbour", b"<html>a story</html>", content_type="text/html")
    with transaction(newsroom.Session) as session:
        made = lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com",
                                    cron=None, timezone="Europe/Berlin", template="pictures")
        consent.subscribe(session, "reader@example.com", [made.id], confirmed=True)
        now = datetime.now(UTC)
        for n, image in enumerate((heavy, light, gone)):
            session.add(Article(identity=f"story {n}", url=f"{page}?n={n}", title=f"Story {n}", lead="A lead.",
                                image_url=image, content_hash="x", categories=[], published_at=now,
                                first_seen_at=now))
    feed_server.serve("/harbour?n=0", b"<html>a story</html>", content_type="text/html")
    feed_server.serve("/harbour?n=1", b"<html>a story</html>", content_type="text/html")
    feed_server.serve("/harbour?n=2", b"<html>a story</html>", content_type="text/html")
    console("edition", "cut", "daily", "--draft")
    code, out, err = console("edition", "schedule", "daily/1", "--at", ahead())
    asked = sorted(p for p, _ in feed_server.requests if "photo" in p)

    assert code == 0, err
    assert f"warning: the image {heavy} weighs 2.5 MB" in out
    assert f"warning: the image {gone} is gone (its server answered 404)" in out
    assert "photo-small" not in out
    assert sending.run_due(newsroom.Session, newsroom.settings, datetime.now(UTC) + timedelta(hours=3))
    assert edition_row(newsroom).status == "sending"
    # Asked once each at the cut, remembered at the schedule; asked again before the send, three hours on.
    assert asked == ["/photo-full.jpg", "/photo-removed.jpg", "/photo-small.jpg"]
    assert sorted(p for p, _ in feed_server.requests if "photo" in p) == sorted(asked * 2)


def test_a_story_link_is_asked_once_for_a_while(console, newsroom, feed_server):
    edition_of(newsroom, "links", feed_server)
    console("edition", "cut", "daily", "--draft")  # asked at the cut
    console("edition", "schedule", "daily/1", "--at", ahead())  # remembered
    sending.run_due(newsroom.Session, newsroom.settings, datetime.now(UTC) + timedelta(hours=3))  # remembered

    assert [path for path, _ in feed_server.requests] == ["/2026/12/a-story-taken-down"]


def test_a_send_time_in_the_past_is_refused_with_the_time_now(console, newsroom, feed_server):
    edition_of(newsroom, "links", feed_server)
    with time_machine.travel(datetime(2026, 12, 7, 1, 10, tzinfo=UTC), tick=False):
        console("edition", "cut", "daily", "--draft")
        code, out, err = console("edition", "schedule", "daily/1", "--at", "2026-01-05 07:00")
        code_cut, _, err_cut = console("edition", "cut", "daily", "--at", "2026-12-07 02:00")

    assert code == 2 and err.strip() == ("error: 2026-01-05 07:00 Europe/Berlin is in the past "
                                         "(now: 2026-12-07 02:10 Europe/Berlin); give a later time")
    assert code_cut == 2 and "2026-12-07 02:00 Europe/Berlin is in the past" in err_cut


def test_the_tick_asks_story_links_with_no_write_lock_held(newsroom, feed_server, monkeypatch, tmp_path):
    """A slow site must not hold the database while its link is asked: on SQLite the cut's transaction holds
    the whole database's write lock, and every sign-up and delivery commit would wait behind it. While the
    links are asked, another connection takes the write lock at once."""
    import sqlite3

    from syndicate.delivery import qa

    edition_of(newsroom, "links", feed_server)
    with transaction(newsroom.Session) as session:  # a regular run that is due: the tick cuts it
        newsletter = session.scalar(select(Newsletter))
        newsletter.cron, newsletter.next_run_at = "0 7 * * *", datetime.now(UTC) - timedelta(minutes=1)
    real, free = qa.ask_links, []

    def asking(settings, urls, deadline=qa.DEADLINE):
        other = sqlite3.connect(str(tmp_path / "test.db"), timeout=0.2)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            free.append(True)
        except sqlite3.OperationalError:
            free.append(False)
        finally:
            other.close()
        return real(settings, urls, deadline)

    monkeypatch.setattr(qa, "ask_links", asking)
    sending.run_due(newsroom.Session, newsroom.settings, datetime.now(UTC))

    assert free == [True]  # asked once, before the cut, with the database free
    assert edition_row(newsroom).status == "blocked"  # and the cut's gate used the answer: 404, gone
