"""One batch of an edition's deliveries over one SMTP connection: claimed, each message pipelined, each
outcome recorded the moment the server answers (the ledger's exactly-once rule), paced, and stopped
within a few messages when an editor pauses the edition."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import NamedTuple

from sqlalchemy import Connection, and_, bindparam, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from syndicate import ledger
from syndicate.config import Settings
from syndicate.db import begin_immediate
from syndicate.delivery import choices
from syndicate.delivery.copies import MessageFactory
from syndicate.errors import ConnectionLost, TransportError
from syndicate.mail.pacing import Pacer, PacingUnavailable
from syndicate.mail.transport import Outgoing, Transport
from syndicate.models import (
    Delivery,
    Edition,
    EditionVariant,
    Newsletter,
    Subscriber,
    Subscription,
    UTCDateTime,
    utcnow,
)
from syndicate.subscribers import bounces

CHECK_EVERY = 25  # messages between looks at the edition's status (an editor may pause it)


@dataclass
class BatchResult:
    claimed: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, status: str, n: int = 1) -> None:
        self.counts[status] = self.counts.get(status, 0) + n


def claim(session: Session, edition_id: int, lo: int, hi: int, token: str, now: datetime) -> int:
    """Take the batch's pending rows (and back the ones this same task held before a crash), while the
    edition is being sent."""
    return ledger.claim(session, Delivery, and_(
        Delivery.edition_id == edition_id, Delivery.id.between(lo, hi),
        select(Edition.id).where(Edition.id == edition_id, Edition.status == "sending").exists()), token, now)


def send_batch(sessions: sessionmaker, settings: Settings, transport: Transport, edition_id: int,
               lo: int, hi: int, token: str, clock=utcnow, pacer: Pacer | None = None) -> BatchResult:
    """Send the claimed rows of one batch over one connection, recording each outcome as it happens.

    With a `pacer`, each message waits its turn under the shared rate limits, and a 421/454 from the
    provider slows every worker down (this batch's rest is deferred, as for any lost connection).
    A 4.7.x deferral of one recipient slows that recipient's domain only (pacing.DomainPacer): the
    batch goes on with the other domains, and a row whose domain has no token right now is deferred
    to the domain's turn, never tried and never waited for, so a slowed domain doesn't hold the
    connection; its rows come back as batches of their own (requeue) when their turn is due."""
    result = BatchResult()
    with sessions() as session:
        with session.begin():
            result.claimed = claim(session, edition_id, lo, hi, token, clock())
        if not result.claimed:
            return result
        edition = session.get(Edition, edition_id)
        newsletter = session.get(Newsletter, edition.newsletter_id)
        rows = [Row(*row) for row in session.execute(
            select(Delivery.id, Delivery.attempts, Delivery.variant_id, Subscriber.id.label("subscriber_id"),
                   Subscriber.email,
                   Subscriber.name, Subscriber.status.label("subscriber_status"),
                   Subscription.status.label("subscription_status"))
            .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)  # gone: the row is settled, skipped
            .outerjoin(Subscription, and_(Subscription.subscriber_id == Subscriber.id,
                                          Subscription.newsletter_id == newsletter.id))
            .where(Delivery.edition_id == edition_id, Delivery.id.between(lo, hi),
                   Delivery.status == "sending", Delivery.claimed_by == token)
            .order_by(Delivery.id)
        )]
        # Read with the rows, before the commit: nothing may hold the database while the batch sends.
        variants = {v.id: v for v in session.scalars(select(EditionVariant).where(
            EditionVariant.id.in_({row.variant_id for row in rows} - {None})))}
        session.commit()
        with _Ledger(session, settings, result) as ledger, _lazy(transport) as connection:
            batch = _Batch(session, settings, edition, newsletter, (lo, hi, token), rows, ledger, connection,
                           clock, pacer, result, variants)
            try:
                batch.run()
            except (TakenOver, _Stopped):
                pass  # another worker holds the rest, or an editor paused or cancelled the edition
            ledger.fold(edition_id, newsletter.id)
    return result


class Row(NamedTuple):
    """A row of the batch, with what deciding it needs. A plain tuple: SQLAlchemy's Row answers an attribute
    after a failed lookup on its class (an AttributeError made and dropped, ~1 µs), a dozen times a message.
    The subscriber's fields are None when their row is gone (deleted outside syndicate: an erasure skips
    the rows no worker holds), and the row is skipped."""
    id: int
    attempts: int
    variant_id: int | None
    subscriber_id: int | None
    email: str | None
    name: str | None
    subscriber_status: str | None
    subscription_status: str | None


@dataclass
class _Try:
    """A row about to be tried, and its message."""
    row: Row
    domain: str
    message: Outgoing


class _Stopped(Exception):
    """An editor paused or cancelled the edition: the batch's rest was put back."""


class _Batch:
    """One batch's rows, in order, over one connection.

    Message by message: once the server has said yes to its MAIL, RCPT and DATA, the outcome of the
    message before it is committed (the ledger's `flush`), and this message's body and final dot go
    in one write with the next one's MAIL, RCPT and DATA, whose replies come back with the dot's. So
    at any moment at most one message is accepted by the server and not yet marked sent: a killed
    worker leaves at most one duplicate.

    The row after that next one is decided (skipped, held back, or sent) and its message built while
    the server reads this message and the worker would otherwise wait for its reply (`prepare`): what
    is left between a reply and the next write is the commit. An error met while preparing is raised
    where the row would otherwise have been decided, at the next message's `before_end`.
    """

    def __init__(self, session: Session, settings: Settings, edition: Edition, newsletter: Newsletter,
                 claimed: tuple[int, int, str], rows: list[Row], ledger: _Ledger, connection, clock,
                 pacer: Pacer | None, result: BatchResult, variants: dict[int, EditionVariant] | None = None):
        self.session, self.settings, self.edition, self.newsletter = session, settings, edition, newsletter
        self.lo, self.hi, self.token = claimed
        self.rows, self.ledger, self.connection = rows, ledger, connection
        self.clock, self.pacer, self.result = clock, pacer, result
        # One prepared message per story set in the batch (most rows: the edition's own, variant None).
        self.factories: dict[int | None, MessageFactory] = {None: MessageFactory(settings, newsletter, edition)}
        self.variants = variants or {}
        self.next_row, self.looked_at = 0, 0
        self.prepared: _Try | None = None  # decided and built while a reply was awaited, not yet announced
        self.unprepared: Exception | None = None  # what deciding it raised, kept for when it is wanted
        self.left: set[int] = set()  # rows of the rest whose reader left since the batch began (their ids)
        self.stop: str | None = None  # the edition's status once it is no longer "sending"
        self.refreshed, self.refresh_every = time.monotonic(), settings.leases.refresh

    def run(self) -> None:
        current = self.plain_next()
        while current is not None:
            following = None

            def before_end():
                nonlocal following
                self.ledger.flush()  # the message before this one is marked sent before this one's end
                following = self.decided(ahead=True)
                return following.message if following else None

            try:
                status, reply, error = "sent", self.connection().send(current.message, before_end, self.prepare), None
            except ConnectionLost as e:
                if not (e.throttled and self.pacer is not None):
                    decided, self.prepared = [following, self.prepared], None
                    rest = [current.row] + [t.row for t in decided if t] + self.rows[self.next_row:]
                    return self.lost(rest, e)
                # The recipient's domain said 421 4.7.x: this row waits, the domain is slowed below,
                # and the rest go on over a new connection (_lazy opens one).
                status, reply, error = "deferred", str(e), e
            except TransportError as e:
                status, reply, error = ("failed" if e.permanent else "deferred"), str(e), e
            self.outcome(current, status, reply, error)
            current = following or self.plain_next()
        if self.stop is not None:
            self.put_back()
        self.ledger.flush()

    def plain_next(self) -> _Try | None:
        try:
            return self.decided(ahead=False)
        except PacingUnavailable as e:  # as for a lost mail server: the rest waits
            self.lost(self.rows[self.next_row:], e)
            return None

    def prepare(self) -> None:
        """While the server reads a message: the row after the one announced with it, decided and built
        (`next(ahead=True)`: nothing here waits). Never raises: the connection is waiting for a reply."""
        if self.prepared is None and self.unprepared is None:
            try:
                self.prepared = self.next(ahead=True)
            except Exception as e:  # raised where the row is wanted (decided)
                self.unprepared = e

    def decided(self, ahead: bool) -> _Try | None:
        """The next row to try: the one prepared, or decided now."""
        if self.unprepared is not None:
            error, self.unprepared = self.unprepared, None
            raise error
        if self.prepared is not None:
            prepared, self.prepared = self.prepared, None
            return prepared
        return self.next(ahead)

    def next(self, ahead: bool) -> _Try | None:
        """The next row to try; rows that need no try (skipped, held back) are recorded on the way.

        `ahead`: asked while a message waits for its final dot, to announce the next one with it. Then
        nothing here may wait or fail: None if the next row can't be decided at once (the stream has
        no token, the pacing store is away), and the row is decided again, plainly, once the message
        is done."""
        while self.next_row < len(self.rows) and self.stop is None:
            i = self.next_row
            if i - self.looked_at >= CHECK_EVERY:
                self.look_again()
                if self.stop is not None:
                    break
            row = self.rows[i]
            if row.subscriber_status != "confirmed":
                self.next_row += 1
                self.ledger.write(row, self.token, "skipped", f"{row.subscriber_status or 'deleted'} before sending",
                                  self.now())
                continue
            if row.subscription_status != "active" or row.id in self.left:
                self.next_row += 1
                self.ledger.write(row, self.token, "skipped", "unsubscribed before sending", self.now())
                continue
            domain = row.email.rpartition("@")[2].lower()
            if self.pacer is not None:
                try:
                    if ahead and not self.pacer.has_turn():
                        return None
                    wait = self.pacer.domains.ready(domain)  # before the stream's turn: a held row takes none
                except PacingUnavailable:
                    if ahead:
                        return None
                    raise
                if wait:
                    self.next_row += 1
                    held, now = Held(domain, wait, self.pacer.domains.pace_of(domain)), self.now()
                    # Never tried: its attempts and backoff stay as they were.
                    self.ledger.write(row, self.token, self.retry_status(now), str(held), now,
                                      retry_at=now + timedelta(seconds=held.wait), tried=False)
                    continue
                self.pacer.wait_turn()
            self.next_row += 1
            return _Try(row, domain, self.message_for(row.variant_id)(row.id, row.subscriber_id, row.email, row.name))
        return None

    def message_for(self, variant_id: int | None) -> MessageFactory:
        if variant_id not in self.factories:  # prepared on first use: most batches have one set or two
            self.factories[variant_id] = MessageFactory(self.settings, self.newsletter, self.edition,
                                                        self.variants[variant_id])
        return self.factories[variant_id]

    def look_again(self) -> None:
        """Every CHECK_EVERY rows, in one read: is the edition still sending, and which of the rows up to the
        next look are for a reader who left meanwhile? (The rows after those are looked at then: the look
        costs the same whatever the batch's size.)"""
        self.looked_at = self.next_row
        window = self.rows[self.next_row:self.next_row + CHECK_EVERY]
        looked = dict(edition=self.edition.id, lo=window[0].id, hi=window[-1].id, token=self.token,
                      newsletter=self.newsletter.id)
        found = self.ledger.read("look-again", looked)
        status = found[0][0]
        if status == "sending":
            self.left = {row for _, row in found if row is not None}
        else:
            self.stop = status

    def put_back(self) -> None:
        """Paused: the rest goes back to pending, for resume; cancelled: it is skipped."""
        self.ledger.flush()
        status = "skipped" if self.stop == "cancelled" else "pending"
        batch = dict(edition=self.edition.id, lo=self.lo, hi=self.hi, token=self.token, reply="edition cancelled")
        n = self.ledger.run(lambda c: c.execute(_put_back(status), batch).rowcount)
        self.result.add(status, n)
        raise _Stopped

    def outcome(self, current: _Try, status: str, reply: str, error: TransportError | None) -> None:
        now = self.now()
        if status == "deferred":
            status = self.retry_status(now)
            if error.throttled and self.pacer is not None:
                self.pacer.domains.slow_down(current.domain)  # never raises, as pacer.slow_down
        if status == "failed":
            # The outcome, the reader's cursor (back before this edition, if a later mail passed it) and, for
            # a refused address or one that kept answering 4xx until we gave up, the bounce it counts as,
            # recorded together.
            self.ledger.flush()
            with self.session.begin():
                if not _record(self.session.connection(), current.row, self.token, status, reply, now,
                               self.settings):
                    raise TakenOver
                choices.back(self.session, self.edition.id, self.newsletter.id, current.row.subscriber_id)
                if error.bounce or not error.permanent:
                    bounces.record_delivery_failure(
                        self.session, self.settings, subscriber_id=current.row.subscriber_id,
                        delivery_id=current.row.id, newsletter_id=self.newsletter.id, reply=reply,
                        hard=error.bounce, now=now)
            self.result.add(status)
        else:
            self.ledger.hold(current.row, self.token, status, reply, now)
        if time.monotonic() - self.refreshed > self.refresh_every:
            self.ledger.flush()
            self.ledger.run(lambda c: _refresh(c, self.edition.id, self.lo, self.hi, self.token, now))
            self.refreshed = time.monotonic()

    def lost(self, rest: list[Row], e: ConnectionLost) -> None:
        """The stream is gone (or the relay asked the whole stream to slow down): nothing more goes over
        it; this row and the rest wait for a later try."""
        if self.pacer is not None and e.code in (421, 454):
            self.pacer.slow_down()  # never raises: pacing is advice, the deferral below is the rule
        self.ledger.flush()
        now = self.now()
        status = self.retry_status(now)
        with self.session.begin():
            for j, row in enumerate(rest):
                _record(self.session.connection(), row, self.token, status, str(e), now, self.settings,
                        tried=j == 0)
        self.result.add(status, len(rest))

    def retry_status(self, now: datetime) -> str:
        return _retry_status(self.edition, self.settings, now)

    def now(self) -> datetime:
        return self.clock()


def _the_rest():
    """The rows of a batch (edition, lo, hi) still "sending" under a task's claim (token)."""
    return (Delivery.edition_id == bindparam("edition"), Delivery.id.between(bindparam("lo"), bindparam("hi")),
            Delivery.claimed_by == bindparam("token"), Delivery.status == "sending")


# The look again (every CHECK_EVERY rows), one statement: the edition's status, with the id of each of the
# batch's rows lo…hi, still "sending" under this task's claim, whose reader unsubscribed, was suppressed or was
# erased since the batch began (an unsubscribe is honoured even mid-batch): one row (status, None) when there
# is none. By the row, not the reader: an erased reader's rows name nobody (subscriber_id NULL). Read through
# the driver, as the outcomes are written (_Ledger.read).
_LOOK_AGAIN = (
    select(Edition.status, Delivery.id)
    .outerjoin(Delivery, and_(
        *_the_rest(),
        ~select(Subscription.id).join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscription.subscriber_id == Delivery.subscriber_id,
               Subscription.newsletter_id == bindparam("newsletter"),
               Subscription.status == "active", Subscriber.status == "confirmed")
        .exists()))
    .where(Edition.id == bindparam("edition"))
)


@cache
def _put_back(status: str):
    values = dict(status=status, claimed_by=None)
    if status == "skipped":
        values["last_reply"] = bindparam("reply")
    return update(Delivery.__table__).where(*_the_rest()).values(**values)


def _retry_status(edition: Edition, settings: Settings, now: datetime) -> str:
    """Deferred, or failed once the give-up period since the cut has passed."""
    give_up = edition.cut_at + timedelta(seconds=settings.give_up_after)
    return "failed" if now >= give_up else "deferred"


def _record(connection: Connection, row: Row, token: str, status: str, reply: str,
            now: datetime, settings: Settings, tried: bool = True, retry_at: datetime | None = None) -> bool:
    """Mark one row's outcome if this task still holds it, by a statement compiled once (the ORM
    path around it cost 0.56 ms a row, this 0.18)."""
    return connection.execute(_outcome(status, tried),
                              _outcome_values(row, token, status, reply, now, settings, retry_at)).rowcount == 1


def _outcome_values(row: Row, token: str, status: str, reply: str, now: datetime, settings: Settings,
                    retry_at: datetime | None = None) -> dict:
    values = dict(row=row.id, token=token, new_status=status, reply=reply[:2000])
    if status == "sent":
        values["at"] = now
    if status == "deferred":
        delay = min(settings.retry_base * 2 ** row.attempts, settings.retry_max)
        values["at"] = retry_at or now + timedelta(seconds=delay)
    return values


class Held(TransportError):
    """Not tried: the recipient's domain is slowed and has no token now; the row waits for its turn."""

    def __init__(self, domain: str, wait: float, cap: float | None):
        pace = f", so it is sent {cap:.3g} messages a second for now" if cap else ""
        super().__init__(f"held back: {domain} deferred our mail{pace}; this one in {wait:.1f} s", permanent=False)
        self.wait = wait


class TakenOver(Exception):
    """Another worker holds this batch now (this one's claim had gone stale): this one stops."""


class _Ledger:
    """The batch's outcomes, written on a connection of the batch's own, each in a commit of its own.

    A message's "sent" is held (`hold`) and written just before the next message is ended (`flush`,
    the next message's `before_end`), or before anything that needs every outcome written. A row
    found no longer ours (another worker took the batch over) raises TakenOver.

    The outcome is written through the driver: the statement is compiled once per kind of outcome, and
    each write is the driver's execute and commit, with nothing around them (SQLAlchemy's execute path
    cost a worker 0.03–0.06 ms of CPU a message, a tenth of all it does for one).

    On PostgreSQL the driver is libpq itself (psycopg's `pgconn`): the statement is prepared once per
    connection, then each write is one blocking PQexecPrepared. psycopg's own execute waits for the
    reply in Python, polling a non-blocking socket: 85 µs of the worker's CPU a mark against libpq's 37,
    and 12 µs more of the server's (bench/README.md). The connection is in autocommit (one statement,
    one round trip) with `synchronous_commit` off: the commit is acknowledged once the server has it,
    not once it is on the server's disk. The ledger has to outlast a killed worker, and does; a crash
    of the database server itself may forget the last fraction of a second of outcomes (at most 3 ×
    wal_writer_delay, 0.6 s by default), whose messages are then sent again, never lost. SQLite's
    synchronous=NORMAL (db.py) makes the same choice for a crash of the machine. Waiting for the disk
    made each message wait for an fsync: two workers sent a 15 KB edition at 0.46 × the wire instead
    of 0.76 (bench/README.md). `SYNDICATE_DURABLE_SENT=1` waits for it all the same, for operators who
    would rather.

    A "sent" doesn't move the reader's cursor: the batch's fold does, once the batch is done
    (delivery.choices). A "failed" is not written here: it moves the cursor back in the same commit
    (_Batch.outcome).
    """

    def __init__(self, session: Session, settings: Settings, result: BatchResult):
        self.engine, self.settings, self.result = session.get_bind(), settings, result
        self.held: tuple | None = None
        self.sent: list[int] = []  # the readers whose "sent" was written, for the batch's fold
        self.sqlite = self.engine.dialect.name == "sqlite"

    def __enter__(self) -> _Ledger:
        self.connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.driver = self.connection.connection.dbapi_connection
        if not self.sqlite:
            self.cursor = self.driver.cursor()
            self.prepared = self.connection.connection.info.setdefault("syndicate_prepared", set())
            if not self.settings.durable_sent:
                self.cursor.execute("SET synchronous_commit TO off")
        return self

    def __exit__(self, *exc) -> None:
        try:
            if not self.sqlite:
                self.cursor.execute("RESET synchronous_commit")  # before it goes back to the pool
                self.cursor.close()
        except Exception:
            self.connection.invalidate()
        finally:
            self.connection.close()

    def hold(self, row: Row, token: str, status: str, reply: str, now: datetime) -> None:
        self.flush()
        self.held = (row, token, status, reply, now)

    def flush(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            self.write(*held)

    def write(self, row: Row, token: str, status: str, reply: str, now: datetime, tried: bool = True,
              retry_at: datetime | None = None) -> None:
        try:
            self._write(row, token, status, reply, now, tried, retry_at)
        except self.engine.dialect.loaded_dbapi.OperationalError as e:  # away, locked: as SQLAlchemy says it
            raise OperationalError("a delivery's outcome", None, e) from e

    def _write(self, row: Row, token: str, status: str, reply: str, now: datetime, tried: bool,
               retry_at: datetime | None) -> None:
        sql, names, positional, at = _driver_statement(self.engine.dialect, status, tried)
        values = _outcome_values(row, token, status, reply, now, self.settings, retry_at)
        if "at" in values:
            values["at"] = at(values["at"])
        if self.sqlite:
            begin_immediate(self.driver)  # BEGIN IMMEDIATE, as every transaction of ours on SQLite
            try:
                ours = self.driver.execute(sql, _in_order(names, positional, values)).rowcount == 1
                self.driver.commit()
            except BaseException:
                self.driver.rollback()
                raise
        else:
            ours = self._exec_prepared(status, tried, sql, _in_order(names, positional, values)) == 1
        if not ours:
            raise TakenOver
        if status == "sent":
            self.sent.append(row.subscriber_id)
        self.result.add(status)

    def _exec_prepared(self, status: str, tried: bool, sql: str, values: list) -> int:
        """The outcome statement through libpq, prepared on this connection the first time (the pool keeps
        the connection, and with it what was prepared on it); the number of rows it changed.

        One prepared here may be gone since: psycopg deallocates every prepared statement of its connection
        (DEALLOCATE ALL) when it rolls back a transaction after preparing statements of its own, as the
        look-again's read does, and a pooler may too. The server then refuses the execute before doing
        anything (in autocommit, no transaction is left aborted), and the statement is prepared again."""
        pgconn, name = self.driver.pgconn, f"syndicate_outcome_{status}_{int(tried)}".encode()
        parameters = _text(values, self.driver.info.encoding)
        if name not in self.prepared:
            self._prepare(name, sql)
        result = pgconn.exec_prepared(name, parameters)
        if result.status != _COMMAND_OK and result.error_field(_SQLSTATE) == _NO_SUCH_STATEMENT:
            self._prepare(name, sql)
            result = pgconn.exec_prepared(name, parameters)
        self._check(result)
        return result.command_tuples or 0

    def _prepare(self, name: bytes, sql: str) -> None:
        self._check(self.driver.pgconn.prepare(name, sql.encode()))
        self.prepared.add(name)

    def _check(self, result) -> None:
        """psycopg's error for libpq's result, if it is one: OperationalError when the connection is gone."""
        if result.status == _COMMAND_OK:
            return
        from psycopg import OperationalError as Lost
        from psycopg import errors, pq

        if self.driver.pgconn.status != pq.ConnStatus.OK:
            raise Lost(self.driver.pgconn.error_message.decode(errors="replace").strip() or "connection lost")
        raise errors.error_from_result(result, encoding=self.driver.info.encoding)

    def read(self, query: str, values: dict) -> list[tuple]:
        """The rows of one of `_READS`, on the ledger's connection through the driver, after every outcome
        held is written: no transaction around it (on SQLite, no write lock taken for a read)."""
        self.flush()
        sql, names, positional, _ = _driver_read(self.engine.dialect, query)
        try:
            if self.sqlite:
                return self.driver.execute(sql, _in_order(names, positional, values)).fetchall()
            self.cursor.execute(sql, _in_order(names, positional, values), prepare=True)
            return self.cursor.fetchall()
        except self.engine.dialect.loaded_dbapi.OperationalError as e:
            raise OperationalError("a look at the edition", None, e) from e

    def fold(self, edition_id: int, newsletter_id: int) -> None:
        """The cursors of the readers whose "sent" was written (delivery.choices), in one statement on the
        ledger's connection: on PostgreSQL one round trip, not waiting for the server's disk (a fold the
        server forgets in a crash is done again by the next cut or the edition's close, as for a batch cut
        short by an error)."""
        if self.sent:
            self.run(lambda connection: choices.fold(connection, edition_id, newsletter_id, self.sent))

    def run(self, work):
        """`work(connection)` on the ledger's connection, after every outcome held is written; its result."""
        self.flush()
        with self.connection.begin():
            return work(self.connection)


def _in_order(names: list[tuple[str, object]], positional: bool, values: dict):
    if positional:
        return [values.get(name, fixed) for name, fixed in names]
    return {name: values.get(name, fixed) for name, fixed in names}


@cache
def _driver_statement(dialect, status: str, tried: bool) -> tuple[str, list[tuple[str, object]], bool, Callable]:
    """`_outcome` compiled for the driver: its SQL; its parameters in order, each with the value the
    statement itself fixes, if any; whether the driver takes them by position (SQLite's ?, libpq's $1)
    or by name; and how `at` is passed (UTCDateTime's way for this database)."""
    return _for_driver(_outcome(status, tried), _dollar(dialect) if dialect.name == "postgresql" else dialect)


@cache
def _dollar(dialect):
    """PostgreSQL's dialect compiling $1, $2 … as libpq's PQprepare takes them."""
    return type(dialect)(paramstyle="numeric_dollar")


_COMMAND_OK = 1  # libpq's PGRES_COMMAND_OK (psycopg.pq.ExecStatus.COMMAND_OK)
_SQLSTATE = ord("C")  # libpq's PG_DIAG_SQLSTATE (psycopg.pq.DiagnosticField.SQLSTATE)
_NO_SUCH_STATEMENT = b"26000"  # invalid_sql_statement_name: no prepared statement by that name


def _text(values: list, encoding: str) -> list[bytes | None]:
    """Parameters as libpq's text format has them."""
    return [None if value is None else value.isoformat().encode() if type(value) is datetime
            else str(value).encode(encoding) for value in values]


@cache
def _driver_read(dialect, query: str) -> tuple[str, list[tuple[str, object]], bool, Callable]:
    """One of `_READS` compiled for the driver, as `_driver_statement`."""
    return _for_driver(_READS[query], dialect)


def _for_driver(statement, dialect) -> tuple[str, list[tuple[str, object]], bool, Callable]:
    compiled = statement.compile(dialect=dialect)
    fixed = compiled.construct_params(dict.fromkeys(_OUTCOME_PARAMETERS))  # ours are filled in per write
    # A list, not a dict: by position, a parameter used twice is passed twice.
    names = [(name, fixed.get(name)) for name in (compiled.positiontup or fixed)]
    return (compiled.string, names, compiled.positiontup is not None,
            UTCDateTime().bind_processor(dialect) or (lambda value: value))


_OUTCOME_PARAMETERS = ("row", "token", "new_status", "reply", "at", "edition", "newsletter", "lo", "hi")
_READS = {"look-again": _LOOK_AGAIN}


@cache
def _outcome(status: str, tried: bool):
    table = Delivery.__table__
    # A row the batch never got to (the stream was lost before it) keeps its attempt count and backoff.
    values = dict(status=bindparam("new_status"), last_reply=bindparam("reply"), claimed_by=None,
                  attempts=table.c.attempts + (1 if tried else 0))
    if status == "sent":
        values["sent_at"] = bindparam("at", type_=UTCDateTime())
    if status == "deferred":
        values["next_attempt_at"] = bindparam("at", type_=UTCDateTime())
    return (update(table)
            .where(table.c.id == bindparam("row"), table.c.claimed_by == bindparam("token"),
                   table.c.status == "sending")
            .values(**values))


def _refresh(connection: Connection, edition_id: int, lo: int, hi: int, token: str, now: datetime) -> None:
    connection.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.id.between(lo, hi),
               Delivery.claimed_by == token, Delivery.status == "sending")
        .values(claimed_at=now)
    )


class _lazy:
    """Open the transport's connection on first use: a batch of skips never dials the server. One the
    server closed for a single recipient's domain (a 421 4.7.x at RCPT) is replaced on the next use."""

    def __init__(self, transport: Transport):
        self.transport, self._cm, self._connection = transport, None, None

    def __enter__(self):
        def get():
            if self._connection is not None and not getattr(self._connection, "healthy", True):
                cm, self._cm, self._connection = self._cm, None, None
                cm.__exit__(None, None, None)  # the transport drops it: it is not healthy
            if self._connection is None:
                self._cm = self.transport.connect()
                self._connection = self._cm.__enter__()
            return self._connection
        return get

    def __exit__(self, *exc):
        if self._cm is not None:
            self._cm.__exit__(*exc)
        return False
