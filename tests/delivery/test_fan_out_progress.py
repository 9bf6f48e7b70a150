"""A long list's fan-out in slices: every reader confirmed at the cut gets one delivery, in subscriber order,
the batches worked out by the database; `edition cut` shows a bar on a terminal as the slices go in."""

from __future__ import annotations

import os
import pty
import sys

import pytest
from sqlalchemy import create_engine, select, update

from conftest import configured
from syndicate.cli import newsletters as newsletter_commands
from syndicate.db import transaction
from syndicate.delivery import choices, sending
from syndicate.ingest import feeds
from syndicate.models import Delivery, Newsletter, Subscriber, Subscription
from syndicate.newsletters import lists
from syndicate.subscribers import consent


@pytest.fixture
def svc(database_url, make_settings):
    return configured(make_settings(database_url=database_url, batch_size=5))


def test_the_fan_out_goes_in_slices_and_batches_cover_every_delivery_once(svc, sample_feed, monkeypatch):
    monkeypatch.setattr(choices, "FAN_OUT_SLICE", 7)
    with transaction(svc.Session) as session:
        newsletter = lists.add_newsletter(session, max_age_hours=0, slug="daily", name="Daily",
                                          from_address="news@example.com")
        for i in range(23):
            consent.subscribe(session, f"reader{i}@example.com", [newsletter.id], confirmed=True)
        consent.subscribe(session, "unconfirmed@example.com", [newsletter.id])
        gone = consent.subscribe(session, "gone@example.com", [newsletter.id], confirmed=True).subscriber
        session.execute(update(Subscription).where(Subscription.subscriber_id == gone.id)
                        .values(status="unsubscribed"))
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        newsletter_id = newsletter.id
    steps = []

    with transaction(svc.Session) as session:
        cut = sending.cut(session, session.get(Newsletter, newsletter_id), svc.settings,
                          progress=lambda done, total: steps.append((done, total)))

    assert steps == [(7, 23), (14, 23), (21, 23), (23, 23)]
    with transaction(svc.Session) as session:
        rows = session.execute(select(Delivery.id, Subscriber.email).join(Subscriber)
                               .where(Delivery.edition_id == cut.edition.id).order_by(Delivery.id)).all()
    assert [email for _, email in rows] == [f"reader{i}@example.com" for i in range(23)]
    ids = [delivery_id for delivery_id, _ in rows]
    assert [(lo, hi) for _, lo, hi in cut.batches] == [(ids[i], ids[min(i + 5, 23) - 1]) for i in range(0, 23, 5)]


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
            "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_LINK_CHECK": "0"}


@pytest.fixture
def newsroom(console, feed_server, sample_feed):
    """Through the commands: the sample feed polled, a newsletter, 30 readers imported."""
    def run(*args: str) -> str:
        code, out, err = console(*args)
        assert code == 0, (out, err)
        return out

    run("db", "upgrade")
    run("feed", "add", feed_server.serve("/feed/", sample_feed))
    run("newsletter", "add", "morning", "--name", "Morning", "--from-address", "news@example.com",
        "--first-fill", "last:10", "--max-age", "0")
    run("feed", "poll", "--all")
    readers = "email\n" + "".join(f"reader{i}@example.com\n" for i in range(30))
    return run, readers


def test_edition_cut_on_a_terminal_shows_the_fan_out_as_it_goes(newsroom, console, env, tmp_path, monkeypatch):
    run, readers = newsroom
    (tmp_path / "readers.csv").write_text(readers, encoding="utf-8")
    run("subscriber", "import", str(tmp_path / "readers.csv"), "--newsletter", "morning")
    monkeypatch.setattr(choices, "FAN_OUT_SLICE", 10)
    monkeypatch.setattr(newsletter_commands, "CUT_BAR_FROM", 1)
    terminal, child_end = pty.openpty()
    monkeypatch.setattr(sys, "stderr", open(child_end, "w", encoding="utf-8", closefd=True))

    code, out, _ = console("edition", "cut", "morning")
    sys.stderr.close()
    shown = os.read(terminal, 65536).decode(errors="replace")
    os.close(terminal)

    assert code == 0, out
    assert "fanning out" in shown and "30/30" in shown and "deliveries/s" in shown
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'syndicate.db'}")
    with engine.connect() as connection:
        assert connection.scalar(select(Delivery.id).order_by(Delivery.id.desc()).limit(1)) == 30
    engine.dispose()


def test_edition_cut_without_a_terminal_shows_no_bar(newsroom, console, tmp_path, monkeypatch):
    run, readers = newsroom
    (tmp_path / "readers.csv").write_text(readers, encoding="utf-8")
    run("subscriber", "import", str(tmp_path / "readers.csv"), "--newsletter", "morning")
    monkeypatch.setattr(newsletter_commands, "CUT_BAR_FROM", 1)

    code, out, err = console("edition", "cut", "morning")

    assert code == 0, (out, err)
    assert "30 batches" not in out and "fanning out" not in err + out
