"""Confirmation mails have a ledger too: one whose task was lost (a worker or the broker died after the
sign-up's commit) or that the server put off is sent by a later tick, once, and never one that went out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine
from alembic import command
from sqlalchemy import select

from conftest import configured
from syndicate import db, editions, subscribers, tasks, tokens
from syndicate.db import transaction
from syndicate.models import Subscriber

T0 = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
ADDRESS = "ana@example.org"


@pytest.fixture
def svc(make_settings, tmp_path, smtp_server):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", smtp_url=smtp_server.url),
                     eager=True)
    with transaction(svc.Session) as session:
        svc.newsletter_id = editions.add_newsletter(session, slug="daily", name="Daily",
                                                    from_address="news@example.com").id
    return svc


def sign_up(svc, address: str = ADDRESS, at: datetime = T0) -> int:
    """A sign-up committed, its confirmation task never queued: as if the process died right after."""
    with transaction(svc.Session) as session:
        signup = subscribers.subscribe(session, address, [svc.newsletter_id], now=at)
        assert signup.send_confirmation
        return signup.subscriber.id


def tick_at(moment: datetime) -> None:
    with time_machine.travel(moment, tick=False):
        tasks.tick()


def mailed_to(smtp_server) -> list[str]:
    return [r for message in smtp_server.messages for r in message.recipients]


def test_a_confirmation_whose_task_was_lost_is_sent_by_a_later_tick_once(svc, smtp_server):
    sign_up(svc)

    tick_at(T0 + timedelta(minutes=4))  # its task may still be in the queue
    assert mailed_to(smtp_server) == []
    tick_at(T0 + timedelta(minutes=6))
    assert mailed_to(smtp_server) == [ADDRESS]
    assert b"/confirm/" in smtp_server.messages[0].data
    for minutes in (7, 12, 60, 600):
        tick_at(T0 + timedelta(minutes=minutes))
    assert mailed_to(smtp_server) == [ADDRESS]


def test_a_confirmation_task_handed_out_twice_sends_one_mail(svc, smtp_server):
    subscriber_id = sign_up(svc)

    first, second = tasks.send_confirmation(subscriber_id), tasks.send_confirmation(subscriber_id)

    assert first.startswith("250") and second == "not needed"
    assert mailed_to(smtp_server) == [ADDRESS]


def test_asking_again_sends_a_new_mail_and_only_that_one(svc, smtp_server):
    subscriber_id = sign_up(svc)
    tasks.send_confirmation(subscriber_id)
    sign_up(svc, at=T0 + timedelta(minutes=10))  # "I didn't get it": a second mail, with its own Message-ID

    tick_at(T0 + timedelta(minutes=16))

    assert mailed_to(smtp_server) == [ADDRESS, ADDRESS]
    ids = [line for m in smtp_server.messages for line in m.data.split(b"\r\n") if line.startswith(b"Message-ID")]
    assert len(set(ids)) == 2


def test_a_confirmation_the_server_put_off_is_sent_by_a_later_tick(svc, smtp_server):
    subscriber_id = sign_up(svc)
    smtp_server.replies[ADDRESS] = "451 4.3.0 try again later"

    assert tasks.send_confirmation(subscriber_id).startswith("deferred: 451")
    assert mailed_to(smtp_server) == []
    del smtp_server.replies[ADDRESS]
    tick_at(T0 + timedelta(minutes=6))

    assert mailed_to(smtp_server) == [ADDRESS]


def test_while_the_server_keeps_putting_it_off_it_is_handed_out_once_every_few_minutes(svc):
    subscriber_id = sign_up(svc)
    later = [T0 + timedelta(minutes=m) for m in (6, 6.5, 10, 11.5)]

    with transaction(svc.Session) as session:
        handed_out = [subscribers.lost_confirmations(session, svc.settings, moment) for moment in later]

    assert handed_out == [[subscriber_id], [], [], [subscriber_id]]


def test_a_refused_confirmation_is_not_tried_again(svc, smtp_server):
    subscriber_id = sign_up(svc)
    smtp_server.replies[ADDRESS] = "550 5.1.1 no such mailbox"

    assert tasks.send_confirmation(subscriber_id).startswith("550")

    with transaction(svc.Session) as session:
        assert subscribers.lost_confirmations(session, svc.settings, T0 + timedelta(hours=1)) == []


def test_nobody_confirmed_and_no_request_older_than_the_give_up_period_is_mailed_again(svc, smtp_server):
    confirmed = sign_up(svc, "bo@example.org")
    sign_up(svc, "old@example.org", at=T0 - timedelta(seconds=svc.settings.give_up_after))
    with transaction(svc.Session) as session:
        subscribers.confirm(session, svc.settings, tokens.confirm_token(svc.settings.secret_key, confirmed),
                            now=T0 + timedelta(minutes=1))

    with transaction(svc.Session) as session:
        assert subscribers.lost_confirmations(session, svc.settings, T0 + timedelta(minutes=6)) == []


def test_a_reader_who_left_before_the_mail_went_is_not_handed_out_again(svc, smtp_server):
    subscriber_id = sign_up(svc)
    with transaction(svc.Session) as session:
        token = tokens.unsubscribe_token(svc.settings.secret_key, subscriber_id, svc.newsletter_id)
        subscribers.unsubscribe(session, svc.settings, token, now=T0 + timedelta(minutes=1))

    assert tasks.send_confirmation(subscriber_id) == "not needed"

    with transaction(svc.Session) as session:
        assert subscribers.lost_confirmations(session, svc.settings, T0 + timedelta(minutes=30)) == []
    assert mailed_to(smtp_server) == []


def test_upgrading_takes_every_confirmation_asked_for_before_as_sent(make_settings, tmp_path):
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'old.db'}")
    engine = db.make_engine(settings.database_url)
    config = db.alembic_config(engine)
    command.upgrade(config, "0007")
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO subscribers (email, status, created_at, confirmation_sent_at, confirmations_sent) "
            "VALUES ('zoe@example.org', 'pending', :t, :t, 2)"), dict(t=T0))

    command.upgrade(config, "head")

    with db.make_sessionmaker(engine)() as session:
        zoe = session.scalar(select(Subscriber))
        assert (zoe.confirmations_sent, zoe.confirmations_mailed) == (2, 2)
        assert zoe.confirmation_queued_at == zoe.confirmation_sent_at == T0
        assert subscribers.lost_confirmations(session, settings, T0 + timedelta(hours=1)) == []
    engine.dispose()
