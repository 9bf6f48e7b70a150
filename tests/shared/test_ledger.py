"""Storage and claiming on SQLite and PostgreSQL: schedules, cuts, deliveries, retries, crashes."""

from __future__ import annotations

import email
import email.policy
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from conftest import configured
from syndicate import db
from syndicate.db import transaction
from syndicate.delivery import deliveries, sending
from syndicate.delivery.batches import BatchResult, _Ledger, claim, send_batch
from syndicate.errors import InvalidInput
from syndicate.ingest import feeds
from syndicate.ledger import Leases
from syndicate.mail.outbox import OutboxTransport
from syndicate.models import Delivery, Edition, EditionArticle, Newsletter, Subscription
from syndicate.newsletters import editions, lists, schedules
from syndicate.subscribers import consent


@pytest.fixture
def ledger(database_url, make_settings, smtp_server):
    return configured(make_settings(database_url=database_url, smtp_url=smtp_server.url, batch_size=10))


def newsroom(svc, sample_feed, readers=5, names=None):
    """A newsletter with confirmed readers and the sample feed's four stories; returns the newsletter id."""
    with transaction(svc.Session) as session:
        newsletter = lists.add_newsletter(session, max_age_hours=0,
                                          slug="daily", name="Daily", from_address="news@example.com",
                                          cron="0 7 * * *", timezone="Europe/Berlin")
        for i in range(readers):
            consent.subscribe(session, f"reader{i}@example.com", [newsletter.id],
                              name=(names or {}).get(i), confirmed=True)
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        return newsletter.id


def cut_now(svc, newsletter_id):
    with transaction(svc.Session) as session:
        return sending.cut(session, session.get(Newsletter, newsletter_id), svc.settings)


def statuses(svc, edition_id) -> dict[str, int]:
    with transaction(svc.Session) as session:
        return deliveries.counts(session, edition_id)


def send_all(svc, cut, transport=None, token="t"):
    for edition_id, lo, hi in cut.batches:
        send_batch(svc.Session, svc.settings, transport or svc.transport, edition_id, lo, hi, token)


# ── schema ───────────────────────────────────────────────────────────────────


def test_it_migrates_an_empty_database_to_the_models(ledger):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from syndicate.models import Base

    assert db.current_revision(ledger.engine) == "0025"
    with ledger.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


# ── schedules ────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("now, expected", [
    # The day before spring forward, and the day of it: 07:00 local is 06:00 UTC, then 05:00 UTC.
    (datetime(2026, 3, 28, 7, 30, tzinfo=UTC), datetime(2026, 3, 29, 5, 0, tzinfo=UTC)),
    (datetime(2026, 3, 27, 12, 0, tzinfo=UTC), datetime(2026, 3, 28, 6, 0, tzinfo=UTC)),
    # Fall back: 07:00 CET again is 06:00 UTC.
    (datetime(2026, 10, 24, 12, 0, tzinfo=UTC), datetime(2026, 10, 25, 6, 0, tzinfo=UTC)),
])
def test_it_schedules_07_00_berlin_at_07_00_local_on_both_sides_of_dst(now, expected):
    assert schedules.next_run("0 7 * * *", "Europe/Berlin", now) == expected


def test_it_refuses_a_bad_cron_or_zone_with_a_hint():
    with pytest.raises(InvalidInput, match="Europe/Berlin"):
        schedules.check_schedule("0 7 * * *", "Mars/Olympus")
    with pytest.raises(InvalidInput, match="0 7"):
        schedules.check_schedule("every morning", "UTC")


def test_two_ticks_at_once_claim_a_due_newsletter_once(ledger, sample_feed):
    newsletter_id = newsroom(ledger, sample_feed)
    now = datetime.now(UTC)
    with transaction(ledger.Session) as session:
        session.get(Newsletter, newsletter_id).next_run_at = now - timedelta(hours=3)
    first, second = ledger.Session(), ledger.Session()
    with first.begin():
        claimed_first = editions.claim(first, newsletter_id, now)
        assert claimed_first is not None
    with second.begin():
        # The second tick read the row before the first moved it: its conditional UPDATE finds nothing.
        stale = second.get(Newsletter, newsletter_id)
        second.expire(stale)
        assert editions.claim(second, newsletter_id, now) is None
    first.close(), second.close()
    with transaction(ledger.Session) as session:
        next_run = session.get(Newsletter, newsletter_id).next_run_at
    # Caught up once, from now: the next run is in the future, not three hours of missed ticks.
    assert next_run > now


# ── the cut ──────────────────────────────────────────────────────────────────


def test_it_freezes_an_edition_and_never_puts_an_article_in_two_editions(ledger, sample_feed):
    newsletter_id = newsroom(ledger, sample_feed)
    first = cut_now(ledger, newsletter_id)
    second = cut_now(ledger, newsletter_id)

    assert first.edition.status == "sending" and first.edition.html and first.edition.text
    assert second.edition.status == "skipped"
    assert second.edition.note == "no new articles since the last edition"
    with transaction(ledger.Session) as session:
        per_article = session.execute(select(EditionArticle.article_id, func.count())
                                      .group_by(EditionArticle.article_id)).all()
        assert len(per_article) == 4 and all(n == 1 for _, n in per_article)
        with pytest.raises(IntegrityError):  # the database itself refuses a second placement
            with session.begin_nested():
                session.add(EditionArticle(edition_id=second.edition.id, newsletter_id=newsletter_id,
                                           article_id=per_article[0][0], position=0))


def test_it_fans_out_to_readers_confirmed_at_the_cut_only(ledger, sample_feed):
    newsletter_id = newsroom(ledger, sample_feed, readers=3)
    with transaction(ledger.Session) as session:
        consent.subscribe(session, "unconfirmed@example.com", [newsletter_id])
        gone = consent.subscribe(session, "gone@example.com", [newsletter_id], confirmed=True).subscriber
        session.execute(update(Subscription).where(Subscription.subscriber_id == gone.id)
                        .values(status="unsubscribed"))
    cut = cut_now(ledger, newsletter_id)
    assert statuses(ledger, cut.edition.id) == {"pending": 3}


def test_a_hostile_headline_cannot_break_the_subject_line(ledger, sample_feed, smtp_server):
    newsletter_id = newsroom(ledger, sample_feed, readers=1)
    with transaction(ledger.Session) as session:
        article = session.scalars(select(feeds.Article).order_by(feeds.Article.published_at.desc())).first()
        article.title = "Breaking\r\nBcc: everyone@example.com\x0b"
    cut = cut_now(ledger, newsletter_id)
    send_all(ledger, cut)

    assert "\n" not in cut.edition.subject and "\r" not in cut.edition.subject
    received = email.message_from_bytes(smtp_server.messages[0].data, policy=email.policy.default)
    assert received["Bcc"] is None
    assert smtp_server.messages[0].recipients == ["reader0@example.com"]


# ── delivery outcomes ────────────────────────────────────────────────────────


def test_it_sends_each_reader_one_message_and_never_again(ledger, sample_feed, smtp_server):
    newsletter_id = newsroom(ledger, sample_feed, readers=25, names={0: "Zoë Ødegård", 1: "陈静"})
    cut = cut_now(ledger, newsletter_id)
    assert len(cut.batches) == 3  # batch_size=10

    send_all(ledger, cut)
    send_all(ledger, cut)  # the same tasks again (a redelivery): nothing more goes out
    send_all(ledger, cut, token="another-worker")

    assert statuses(ledger, cut.edition.id) == {"sent": 25}
    recipients = sorted(r for m in smtp_server.messages for r in m.recipients)
    assert recipients == sorted(f"reader{i}@example.com" for i in range(25))
    first = email.message_from_bytes(smtp_server.messages[0].data, policy=email.policy.default)
    assert str(first["To"]) == "Zoë Ødegård <reader0@example.com>"
    with transaction(ledger.Session) as session:
        assert deliveries.requeue(session, ledger.settings, datetime.now(UTC)) == []
        assert session.get(Edition, cut.edition.id).status == "sent"


def test_a_4xx_defers_with_the_reply_and_a_later_tick_retries(ledger, sample_feed, smtp_server):
    newsletter_id = newsroom(ledger, sample_feed, readers=3)
    smtp_server.replies["reader1@example.com"] = "450 4.2.1 Mailbox busy, try later"
    cut = cut_now(ledger, newsletter_id)
    send_all(ledger, cut)

    assert statuses(ledger, cut.edition.id) == {"sent": 2, "deferred": 1}
    with transaction(ledger.Session) as session:
        deferred = session.scalar(select(Delivery).where(Delivery.status == "deferred"))
        assert deferred.last_reply.startswith("450 4.2.1 Mailbox busy")
        retry_at = deferred.next_attempt_at
        # Not before its time...
        assert deliveries.requeue(session, ledger.settings, retry_at - timedelta(seconds=1)) == []
    del smtp_server.replies["reader1@example.com"]
    with transaction(ledger.Session) as session:
        batches = deliveries.requeue(session, ledger.settings, retry_at)
    assert batches == [(cut.edition.id, deferred.id, deferred.id)]
    for edition_id, lo, hi in batches:
        send_batch(ledger.Session, ledger.settings, ledger.transport, edition_id, lo, hi, "retry")
    assert statuses(ledger, cut.edition.id) == {"sent": 3}
    assert sorted(r for m in smtp_server.messages for r in m.recipients).count("reader1@example.com") == 1


def test_a_5xx_fails_the_recipient_with_the_reply_and_never_retries(ledger, sample_feed, smtp_server):
    newsletter_id = newsroom(ledger, sample_feed, readers=3)
    smtp_server.replies["reader2@example.com"] = "550 5.1.1 No such user"
    cut = cut_now(ledger, newsletter_id)
    send_all(ledger, cut)

    assert statuses(ledger, cut.edition.id) == {"sent": 2, "failed": 1}
    with transaction(ledger.Session) as session:
        failed = session.scalar(select(Delivery).where(Delivery.status == "failed"))
        assert failed.last_reply == "550 5.1.1 No such user"
        assert deliveries.requeue(session, ledger.settings, datetime.now(UTC) + timedelta(days=10)) == []


def test_when_the_mail_server_is_down_nothing_is_marked_sent_and_all_is_retried(
    database_url, make_settings, sample_feed, closed_port, smtp_server
):
    down = configured(make_settings(database_url=database_url, smtp_url=f"smtp://127.0.0.1:{closed_port}"))
    newsletter_id = newsroom(down, sample_feed, readers=4)
    cut = cut_now(down, newsletter_id)
    send_all(down, cut)

    assert statuses(down, cut.edition.id) == {"deferred": 4}
    with transaction(down.Session) as session:
        replies = set(session.scalars(select(Delivery.last_reply)))
        retry_at = max(session.scalars(select(Delivery.next_attempt_at)))
    assert all("cannot reach the mail server" in reply for reply in replies)

    # The server is back: the next tick after the backoff hands every row to a worker again.
    up = configured(make_settings(database_url=database_url, smtp_url=smtp_server.url))
    with transaction(up.Session) as session:
        batches = deliveries.requeue(session, up.settings, retry_at)
    for edition_id, lo, hi in batches:
        send_batch(up.Session, up.settings, up.transport, edition_id, lo, hi, "after-outage")
    assert statuses(up, cut.edition.id) == {"sent": 4}
    assert len(smtp_server.messages) == 4


def test_a_deferred_delivery_fails_after_the_give_up_period(ledger, sample_feed, smtp_server):
    newsletter_id = newsroom(ledger, sample_feed, readers=1)
    smtp_server.replies["reader0@example.com"] = "451 4.3.0 Try again"
    cut = cut_now(ledger, newsletter_id)
    late = cut.edition.cut_at + timedelta(seconds=ledger.settings.give_up_after)
    with transaction(ledger.Session) as session:
        batches = deliveries.requeue(session, ledger.settings, late)  # nothing due yet: still pending
    send_all(ledger, cut, token="late")
    assert statuses(ledger, cut.edition.id) == {"deferred": 1}
    with transaction(ledger.Session) as session:
        batches = deliveries.requeue(session, ledger.settings, late)
    for edition_id, lo, hi in batches:
        send_batch(ledger.Session, ledger.settings, ledger.transport, edition_id, lo, hi, "late",
                   clock=lambda: late)
    assert statuses(ledger, cut.edition.id) == {"failed": 1}


def test_a_reader_who_leaves_mid_send_is_skipped(ledger, sample_feed, smtp_server):
    newsletter_id = newsroom(ledger, sample_feed, readers=2)
    cut = cut_now(ledger, newsletter_id)
    with transaction(ledger.Session) as session:
        session.execute(update(Subscription).where(Subscription.subscriber.has(email="reader0@example.com"))
                        .values(status="unsubscribed"))
    send_all(ledger, cut)
    assert statuses(ledger, cut.edition.id) == {"sent": 1, "skipped": 1}
    assert [m.recipients for m in smtp_server.messages] == [["reader1@example.com"]]


# ── crashes ──────────────────────────────────────────────────────────────────


def test_a_redelivered_task_takes_back_the_rows_its_killed_run_held(ledger, sample_feed, smtp_server):
    newsletter_id = newsroom(ledger, sample_feed, readers=5)
    cut = cut_now(ledger, newsletter_id)
    (edition_id, lo, hi), = cut.batches
    # A worker claimed the batch, sent reader0's mail and recorded it, then was killed.
    with transaction(ledger.Session) as session:
        claim(session, edition_id, lo, hi, "task-1", datetime.now(UTC))
        session.execute(update(Delivery).where(Delivery.id == lo).values(status="sent", claimed_by=None))
    # Another task for the same range finds nothing to claim while task-1's claim is fresh...
    assert send_batch(ledger.Session, ledger.settings, ledger.transport, edition_id, lo, hi,
                      "task-2").claimed == 0
    # ...and the broker's redelivery of task-1 (same task id) finishes the job.
    result = send_batch(ledger.Session, ledger.settings, ledger.transport, edition_id, lo, hi, "task-1")
    assert result.counts == {"sent": 4}
    assert statuses(ledger, edition_id) == {"sent": 5}
    assert len(smtp_server.messages) == 4


@pytest.mark.parametrize("claim_timeout", [900, 60])  # the default, and the shortest SYNDICATE_CLAIM_TIMEOUT
def test_a_claim_whose_worker_died_is_handed_on_after_the_claim_timeout(ledger, sample_feed, smtp_server,
                                                                        claim_timeout):
    settings = replace(ledger.settings, claim_timeout=claim_timeout)
    newsletter_id = newsroom(ledger, sample_feed, readers=3)
    cut = cut_now(ledger, newsletter_id)
    (edition_id, lo, hi), = cut.batches
    then = datetime.now(UTC)
    with transaction(ledger.Session) as session:
        claim(session, edition_id, lo, hi, "lost-task", then)
        assert deliveries.requeue(session, settings, then + timedelta(seconds=claim_timeout - 1)) == []
    with transaction(ledger.Session) as session:
        batches = deliveries.requeue(session, settings, then + timedelta(seconds=claim_timeout))
    assert batches == [(edition_id, lo, hi)]
    send_all(ledger, cut, token="rescuer")
    assert statuses(ledger, edition_id) == {"sent": 3}


def test_a_batch_taken_over_mid_send_stops_and_never_finishes_the_message_in_flight(ledger, sample_feed,
                                                                                    smtp_server):
    """Outcomes are written while the next message goes out; that message's end waits for the write.
    When the write finds the row taken by another worker, the message in flight is abandoned."""
    newsletter_id = newsroom(ledger, sample_feed, readers=6)
    cut = cut_now(ledger, newsletter_id)
    (edition_id, lo, hi), = cut.batches

    class TakenOverAfterThird:
        """The third message goes through, then another worker's requeue and claim take the batch."""

        @contextmanager
        def connect(self):
            with ledger.transport.connect() as connection:
                class Connection:
                    def send(self, message, before_end=None, while_waiting=None):
                        reply = connection.send(message, before_end, while_waiting)
                        if len(smtp_server.messages) == 3:
                            with transaction(ledger.Session) as session:
                                session.execute(update(Delivery).where(Delivery.status == "sending")
                                                .values(claimed_by="rescuer"))
                        return reply
                yield Connection()

    result = send_batch(ledger.Session, ledger.settings, TakenOverAfterThird(), edition_id, lo, hi, "t")
    assert result.counts == {"sent": 2}  # the third was sent but is the rescuer's to record now
    assert len(smtp_server.messages) == 3  # the fourth was begun, and never ended
    with transaction(ledger.Session) as session:
        rows = session.execute(select(Delivery.status, Delivery.claimed_by).order_by(Delivery.id)).all()
    assert rows == [("sent", None)] * 2 + [("sending", "rescuer")] * 4


def test_a_pending_row_whose_task_was_lost_is_requeued(ledger, sample_feed):
    newsletter_id = newsroom(ledger, sample_feed, readers=2)
    cut = cut_now(ledger, newsletter_id)
    now = cut.edition.cut_at
    with transaction(ledger.Session) as session:
        assert deliveries.requeue(session, ledger.settings, now + timedelta(minutes=1)) == []
        assert deliveries.requeue(session, ledger.settings, now + Leases().requeue) == cut.batches
        # ...and not again on the very next tick: the lease restarted.
        assert deliveries.requeue(session, ledger.settings, now + Leases().requeue) == []


def test_the_outbox_transport_writes_the_bytes_smtp_would_carry(ledger, sample_feed, smtp_server, tmp_path):
    newsletter_id = newsroom(ledger, sample_feed, readers=2)
    cut = cut_now(ledger, newsletter_id)
    send_all(ledger, cut, transport=OutboxTransport(tmp_path / "outbox"))
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 2
    data = files[0].read_bytes()
    assert b"\r\n" in data and all(byte < 128 for byte in data)  # CRLF, 7-bit clean
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"



def test_on_postgresql_a_sent_mark_waits_for_the_server_and_for_its_disk_only_when_asked(postgres_url, make_settings):
    """synchronous_commit off on the ledger's own connection (a killed worker loses nothing the server has),
    on with SYNDICATE_DURABLE_SENT; and its connection goes back to the pool with the server's own setting."""
    from sqlalchemy import text

    seen = {}
    for durable in (False, True):
        svc = configured(make_settings(database_url=postgres_url, durable_sent=durable))
        with svc.engine.connect() as connection:
            server_default = connection.execute(text("SHOW synchronous_commit")).scalar()
        with svc.Session() as session, _Ledger(session, svc.settings, BatchResult()) as marks:
            seen[durable] = marks.cursor.execute("SHOW synchronous_commit").fetchone()[0]
        assert svc.engine.pool.checkedin() == 1  # the ledger's, the one the next user gets
        with svc.engine.connect() as connection:
            assert connection.execute(text("SHOW synchronous_commit")).scalar() == server_default
        svc.engine.dispose()
    assert seen == {False: "off", True: "on"}


def _three_claimed_on_postgresql(postgres_url, make_settings, sample_feed):
    """An edition for three readers, its rows claimed by task "t", and no connection pooled yet."""
    svc = configured(make_settings(database_url=postgres_url, batch_size=10))
    newsletter_id = newsroom(svc, sample_feed, readers=3)
    cut = cut_now(svc, newsletter_id)
    (edition_id, lo, hi), = cut.batches
    with transaction(svc.Session) as session:
        claim(session, edition_id, lo, hi, "t", datetime.now(UTC))
        rows = session.execute(select(Delivery.id, Delivery.attempts, Delivery.variant_id, Delivery.subscriber_id)
                               .where(Delivery.edition_id == edition_id).order_by(Delivery.id)).all()
    svc.engine.dispose()
    return svc, edition_id, rows


def test_on_postgresql_an_outcome_is_prepared_once_per_connection_and_its_errors_are_psycopgs(
        postgres_url, make_settings, sample_feed):
    """The outcome goes through libpq's PQexecPrepared: prepared on a connection the first time only (the
    next batch on the same pooled connection doesn't prepare it again, which the server would refuse), and a
    statement the server refuses raises psycopg's own error, as psycopg's execute would."""
    import psycopg
    from psycopg import pq
    from sqlalchemy.exc import OperationalError

    from syndicate.delivery import batches

    assert batches._COMMAND_OK == pq.ExecStatus.COMMAND_OK
    assert batches._SQLSTATE == pq.DiagnosticField.SQLSTATE
    assert batches._NO_SUCH_STATEMENT.decode() == psycopg.errors.InvalidSqlStatementName.sqlstate
    svc, edition_id, rows = _three_claimed_on_postgresql(postgres_url, make_settings, sample_feed)
    backends = set()
    for row in rows[:2]:
        with svc.Session() as session, _Ledger(session, svc.settings, BatchResult()) as marks:
            backends.add(marks.driver.info.backend_pid)
            marks.write(row, "t", "sent", "250 ok", datetime.now(UTC))
            server = marks.cursor.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'syndicate%'")
            assert [name for name, in server.fetchall()] == ["syndicate_outcome_sent_1"]
    assert len(backends) == 1  # the same pooled connection both times
    # Another transaction holds the third row: the outcome waits no longer than the connection's lock_timeout.
    with svc.engine.connect() as holder, svc.Session() as session, \
            _Ledger(session, svc.settings, BatchResult()) as marks:
        holder.execute(select(Delivery.id).where(Delivery.id == rows[2].id).with_for_update())
        marks.cursor.execute("SET lock_timeout TO '50ms'")
        with pytest.raises(OperationalError) as refused:  # as any outcome the database can't take (_Ledger.write)
            marks.write(rows[2], "t", "failed", "550 no", datetime.now(UTC))
        assert isinstance(refused.value.orig, psycopg.errors.LockNotAvailable)
        marks.cursor.execute("RESET lock_timeout")
        holder.rollback()
    with transaction(svc.Session) as session:
        assert deliveries.counts(session, edition_id) == {"sent": 2, "sending": 1}
    svc.engine.dispose()


def test_on_postgresql_an_outcome_statement_deallocated_under_the_pool_is_prepared_again(
        postgres_url, make_settings, sample_feed):
    """psycopg deallocates every prepared statement of its connection (DEALLOCATE ALL) when it rolls back a
    transaction after preparing statements of its own, and a pooler may too. The outcome statement the
    ledger prepared through libpq on that pooled connection is then gone: it is prepared again, not failed
    on (a chaos run found batches failing on it, retried and failing again, their edition never closing)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DataError

    svc, edition_id, rows = _three_claimed_on_postgresql(postgres_url, make_settings, sample_feed)
    backends = set()
    with svc.Session() as session, _Ledger(session, svc.settings, BatchResult()) as marks:
        backends.add(marks.driver.info.backend_pid)
        marks.write(rows[0], "t", "sent", "250 ok", datetime.now(UTC))
    with svc.Session() as session:  # the same pooled connection, used by a transaction that fails
        driver = session.connection().connection.dbapi_connection
        backends.add(driver.info.backend_pid)
        driver.cursor().execute("SELECT 1", prepare=True)  # a statement psycopg prepares for itself
        with pytest.raises(DataError):
            session.execute(text("SELECT 1 / 0"))
        session.rollback()  # psycopg: ROLLBACK, then DEALLOCATE ALL
        prepared = session.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar()
        assert prepared == 0
    with svc.Session() as session, _Ledger(session, svc.settings, BatchResult()) as marks:
        backends.add(marks.driver.info.backend_pid)
        marks.write(rows[1], "t", "sent", "250 ok", datetime.now(UTC))
    assert len(backends) == 1
    with transaction(svc.Session) as session:
        assert deliveries.counts(session, edition_id) == {"sent": 2, "sending": 1}
    svc.engine.dispose()


def test_a_database_connection_lost_mid_batch_retries_the_batch_in_seconds_not_after_the_sweep(
        postgres_url, make_settings, smtp_server, sample_feed):
    """The ledger's PostgreSQL connection is killed after the third message: the task runs again at once
    (eagerly here; in a worker after 5 s, then 10, 20 …) under the same claim, and sends the rest. The
    third message, accepted and not yet marked, goes twice: the documented window, once."""
    from sqlalchemy import create_engine, text

    from syndicate import tasks

    name = f"ledger-{id(smtp_server)}"
    url = f"{postgres_url}&application_name={name}"
    svc = configured(make_settings(database_url=url, smtp_url=smtp_server.url, batch_size=20), eager=True)
    admin = create_engine(postgres_url)
    newsletter_id = newsroom(svc, sample_feed, readers=8)
    cut = cut_now(svc, newsletter_id)
    real, killed = svc.transport, []

    class KillingTheDatabaseAfterTheThird:
        @contextmanager
        def connect(self):
            with real.connect() as connection:
                class Connection:
                    def send(self, message, before_end=None, while_waiting=None):
                        reply = connection.send(message, before_end, while_waiting)
                        if len(smtp_server.messages) == 3 and not killed:
                            with admin.begin() as c:
                                killed.append(c.execute(text(
                                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE application_name = :name"), {"name": name}).scalar())
                        return reply
                yield Connection()

    svc.__dict__["transport"] = KillingTheDatabaseAfterTheThird()
    try:
        (edition_id, lo, hi), = cut.batches
        tasks.deliver_batch.apply(args=(edition_id, lo, hi))
    finally:
        del svc.__dict__["transport"]
        admin.dispose()
    assert killed and killed[0] >= 1
    assert statuses(svc, edition_id) == {"sent": 8}
    received = sorted(r for m in smtp_server.messages for r in m.recipients)
    assert len(received) == 9 and len(set(received)) == 8  # one reader twice: the third


def test_an_edition_no_reader_got_ends_failed_saying_why_and_can_be_resent_once_fixed(ledger, sample_feed,
                                                                                      smtp_server):
    """The relay refuses every message (a sender it won't take): the edition does not end "sent"."""
    newsletter_id = newsroom(ledger, sample_feed, readers=4)
    cut = cut_now(ledger, newsletter_id)
    smtp_server.data_reply = "554 5.7.1 Sender address rejected: not owned by this account"
    send_all(ledger, cut)
    with transaction(ledger.Session) as session:
        deliveries.requeue(session, ledger.settings, datetime.now(UTC))
        edition = session.get(Edition, cut.edition.id)
        assert edition.status == "failed"
        assert "no reader got it: all 4 deliveries failed" in edition.note
        assert "Sender address rejected" in edition.note and "resend" in edition.note

    smtp_server.data_reply = None  # the editor fixed the sender with the provider
    with transaction(ledger.Session) as session:
        batches, left_out = sending.resend_failed(session, session.get(Edition, cut.edition.id), ledger.settings)
    assert left_out == 0
    for edition_id, lo, hi in batches:
        send_batch(ledger.Session, ledger.settings, ledger.transport, edition_id, lo, hi, "again")
    with transaction(ledger.Session) as session:
        deliveries.requeue(session, ledger.settings, datetime.now(UTC))
        edition = session.get(Edition, cut.edition.id)
        assert (edition.status, edition.note) == ("sent", None)
    assert len(smtp_server.messages) == 4


def test_an_edition_some_readers_got_is_sent_with_its_failures_counted(ledger, sample_feed, smtp_server):
    newsletter_id = newsroom(ledger, sample_feed, readers=3)
    cut = cut_now(ledger, newsletter_id)
    smtp_server.replies["reader0@example.com"] = "550 5.1.1 no such user"
    send_all(ledger, cut)
    with transaction(ledger.Session) as session:
        deliveries.requeue(session, ledger.settings, datetime.now(UTC))
        assert session.get(Edition, cut.edition.id).status == "sent"
        assert deliveries.counts(session, cut.edition.id) == {"sent": 2, "failed": 1}


@pytest.mark.parametrize("reply", ["550 5.1.1 no such\x00 user", "451 4.3.0 try\x00 later",
                                   "250 2.0.0 queued\x00 as X"], ids=["failed", "deferred", "sent"])
def test_a_reply_with_a_nul_is_recorded_without_it_and_the_batch_goes_on(ledger, sample_feed, smtp_server, reply):
    """A hostile (or broken) server puts a NUL in its reply: PostgreSQL's text can't hold one, and the outcome
    would fail to be written for every row the reply came with. It is written without the NUL, and the batch's
    other readers get their mail."""
    newsletter_id = newsroom(ledger, sample_feed, readers=3)
    cut = cut_now(ledger, newsletter_id)
    if reply.startswith("250"):
        smtp_server.data_reply = reply
    else:
        smtp_server.replies["reader0@example.com"] = reply
    send_all(ledger, cut)
    with transaction(ledger.Session) as session:
        rows = session.execute(select(Delivery.status, Delivery.last_reply)
                               .where(Delivery.edition_id == cut.edition.id)).all()
    code = reply[:3]
    expected = {"550": "failed", "451": "deferred", "250": "sent"}[code]
    assert sorted(status for status, _ in rows) == sorted([expected] + ["sent"] * 2)
    if code != "250":  # (a data_reply keeps no message)
        assert sorted(r for m in smtp_server.messages for r in m.recipients) == ["reader1@example.com",
                                                                                  "reader2@example.com"]
    kept = [last_reply for _, last_reply in rows if last_reply and last_reply.startswith(code)]
    assert kept and all(r.replace("\ufffd", "") == reply.replace("\x00", "") for r in kept), kept
