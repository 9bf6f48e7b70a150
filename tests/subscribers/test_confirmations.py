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
from syndicate import db, tasks, tokens
from syndicate.db import transaction
from syndicate.models import ConfirmationMail, Subscriber
from syndicate.newsletters import lists
from syndicate.subscribers import consent

T0 = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
ADDRESS = "ana@example.org"


@pytest.fixture
def svc(make_settings, tmp_path, smtp_server):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", smtp_url=smtp_server.url),
                     eager=True)
    with transaction(svc.Session) as session:
        svc.newsletter_id = lists.add_newsletter(session, slug="daily", name="Daily",
                                                 from_address="news@example.com").id
    return svc


def sign_up(svc, address: str = ADDRESS, at: datetime = T0) -> int:
    """A sign-up committed, its confirmation task never queued: as if the process died right after."""
    with transaction(svc.Session) as session:
        signup = consent.subscribe(session, address, [svc.newsletter_id], now=at)
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

    assert first.startswith("sent: 250") and second == "not needed"
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

    with time_machine.travel(T0, tick=False):
        assert tasks.send_confirmation(subscriber_id).startswith("deferred: 451")
    assert mailed_to(smtp_server) == []
    del smtp_server.replies[ADDRESS]
    tick_at(T0 + timedelta(minutes=6))

    assert mailed_to(smtp_server) == [ADDRESS]


def test_while_the_server_keeps_putting_it_off_it_is_handed_out_once_every_few_minutes(svc):
    subscriber_id = sign_up(svc)
    later = [T0 + timedelta(minutes=m) for m in (6, 6.5, 10, 11.5)]

    with transaction(svc.Session) as session:
        handed_out = [consent.lost_confirmations(session, svc.settings, moment) for moment in later]

    assert handed_out == [[subscriber_id], [], [], [subscriber_id]]


def test_a_refused_confirmation_is_not_tried_again(svc, smtp_server):
    subscriber_id = sign_up(svc)
    smtp_server.replies[ADDRESS] = "550 5.1.1 no such mailbox"

    assert tasks.send_confirmation(subscriber_id).startswith("failed: 550")

    with transaction(svc.Session) as session:
        assert mail_of(session, subscriber_id).last_reply.startswith("550 5.1.1")
        assert consent.lost_confirmations(session, svc.settings, T0 + timedelta(hours=1)) == []


def test_nobody_confirmed_and_no_request_older_than_the_give_up_period_is_mailed_again(svc, smtp_server):
    confirmed = sign_up(svc, "bo@example.org")
    sign_up(svc, "old@example.org", at=T0 - timedelta(seconds=svc.settings.give_up_after))
    with transaction(svc.Session) as session:
        consent.confirm(session, svc.settings, tokens.confirm_token(svc.settings.secret_key, confirmed),
                        now=T0 + timedelta(minutes=1))

    with transaction(svc.Session) as session:
        assert consent.lost_confirmations(session, svc.settings, T0 + timedelta(minutes=6)) == []


def test_a_reader_who_left_before_the_mail_went_is_not_handed_out_again(svc, smtp_server):
    subscriber_id = sign_up(svc)
    with transaction(svc.Session) as session:
        token = tokens.unsubscribe_token(svc.settings.secret_key, subscriber_id, svc.newsletter_id)
        consent.unsubscribe(session, svc.settings, token, now=T0 + timedelta(minutes=1))

    assert tasks.send_confirmation(subscriber_id) == "not needed"

    with transaction(svc.Session) as session:
        assert consent.lost_confirmations(session, svc.settings, T0 + timedelta(minutes=30)) == []
    assert mailed_to(smtp_server) == []


def test_upgrading_turns_each_confirmation_asked_for_and_not_sent_into_a_pending_mail(make_settings, tmp_path):
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'old.db'}")
    engine = db.make_engine(settings.database_url)
    config = db.alembic_config(engine)
    command.upgrade(config, "0011")
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO subscribers (email, status, created_at, confirmation_sent_at, confirmations_sent, "
            "confirmations_mailed, confirmation_queued_at) VALUES "
            "('zoe@example.org', 'pending', :t, :t, 2, 2, :t), ('yan@example.org', 'pending', :t, :t, 2, 1, :t)"),
            dict(t=T0))

    command.upgrade(config, "head")

    with db.make_sessionmaker(engine)() as session:
        mail, = session.scalars(select(ConfirmationMail)).all()  # yan's second mail never went
        yan = session.scalar(select(Subscriber).where(Subscriber.email == "yan@example.org"))
        assert (mail.subscriber_id, mail.status, mail.created_at) == (yan.id, "pending", T0)
        assert consent.lost_confirmations(session, settings, T0 + timedelta(hours=1)) == [yan.id]
    command.downgrade(config, "0011")  # and back: yan's mail is again one of two not mailed
    with engine.begin() as connection:
        assert connection.execute(sa.text("SELECT email, confirmations_mailed FROM subscribers ORDER BY email")
                                  ).all() == [("yan@example.org", 1), ("zoe@example.org", 2)]
    engine.dispose()


def mail_of(session, subscriber_id: int) -> ConfirmationMail:
    return session.scalars(select(ConfirmationMail).where(ConfirmationMail.subscriber_id == subscriber_id)
                           .order_by(ConfirmationMail.id.desc())).first()


def test_two_tasks_racing_for_one_mail_send_it_once_and_a_stale_claim_is_sent_by_a_later_tick(svc, smtp_server):
    """Two copies of the task (the tick's and the sign-up's) claim with their own tokens: one wins; a
    worker that died holding the claim leaves it to the tick once the claim timeout has passed."""
    subscriber_id = sign_up(svc)
    with transaction(svc.Session) as session:
        mine = consent.confirmation_to_mail(session, svc.settings, subscriber_id, "task-1", T0)
        theirs = consent.confirmation_to_mail(session, svc.settings, subscriber_id, "task-2", T0)
        assert mine is not None and theirs is None
        # task-1's worker dies here, with the claim
        assert consent.lost_confirmations(session, svc.settings, T0 + timedelta(minutes=14)) == []
        assert consent.lost_confirmations(session, svc.settings, T0 + timedelta(minutes=15)) == [subscriber_id]
        assert consent.confirmation_sent(session, svc.settings, mine[0], "task-1", T0 + timedelta(minutes=15),
                                         reply="250 ok") == "taken over by another task"
    tick_at(T0 + timedelta(minutes=21))  # the revived mail was handed out at 15 and its task lost: again
    assert mailed_to(smtp_server) == [ADDRESS]
    with transaction(svc.Session) as session:
        assert mail_of(session, subscriber_id).status == "sent"


def test_a_mail_put_off_waits_longer_each_time_and_is_given_up_after_the_give_up_period(svc, smtp_server):
    subscriber_id = sign_up(svc)
    smtp_server.replies[ADDRESS] = "451 4.3.0 try again later"
    waits = []
    moment = T0
    for _ in range(4):
        with time_machine.travel(moment, tick=False):
            assert tasks.send_confirmation(subscriber_id).startswith("deferred: 451")
        with transaction(svc.Session) as session:
            mail = mail_of(session, subscriber_id)
            waits.append((mail.next_attempt_at - moment).total_seconds())
            moment = mail.next_attempt_at
            assert consent.lost_confirmations(session, svc.settings, moment) == [subscriber_id]
    assert waits == [60, 120, 240, 480]
    late = T0 + timedelta(seconds=svc.settings.give_up_after + 1)
    with transaction(svc.Session) as session:
        assert consent.lost_confirmations(session, svc.settings, late) == []
        assert mail_of(session, subscriber_id).status == "failed"
    assert mailed_to(smtp_server) == []


def test_upgrading_an_install_keeps_every_subscription_delivery_and_event_of_its_subscribers(make_settings,
                                                                                             tmp_path):
    """0012 rebuilds the subscribers table on SQLite (batch mode: copy, drop, rename). With foreign keys
    on, the drop cascaded and took every row pointing at a subscriber; migrations now run with them off."""
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'old.db'}")
    engine = db.make_engine(settings.database_url)
    config = db.alembic_config(engine)
    command.upgrade(config, "0011")
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO newsletters (slug, name, from_address, from_name, status, created_at, subject_template, "
            "template, first_fill, timezone, max_items, articles_since) VALUES "
            "('daily', 'Daily', 'news@example.com', 'Daily', 'active', :t, 's', 'edition', 'none', 'UTC', 20, :t)"),
            dict(t=T0))
        connection.execute(sa.text(
            "INSERT INTO subscribers (email, status, created_at, confirmations_sent, confirmations_mailed) "
            "VALUES ('zoe@example.org', 'confirmed', :t, 1, 1)"), dict(t=T0))
        connection.execute(sa.text("INSERT INTO subscriptions (subscriber_id, newsletter_id, status, created_at) "
                                   "VALUES (1, 1, 'active', :t)"), dict(t=T0))
        connection.execute(sa.text("INSERT INTO subscriber_events (subscriber_id, kind, source, at) "
                                   "VALUES (1, 'confirmed', 'web', :t)"), dict(t=T0))

    command.upgrade(config, "head")

    with engine.begin() as connection:
        counts = [connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
                  for table in ("subscribers", "subscriptions", "subscriber_events")]
        assert counts == [1, 1, 1]
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # on again for the app
    engine.dispose()
