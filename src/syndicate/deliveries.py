"""edition → delivery: one ledger row per recipient, claimed in batches, each outcome recorded.

pending ──claim──▶ sending ──▶ sent | deferred (4xx, retried later) | failed (5xx) | skipped
A row is marked sent only after the server accepted the message, in its own commit.
Two windows remain for a duplicate, each of at most one message, and both are measured
in tests/test_faults.py: a worker killed between the server's "250" and that commit (one
per killed worker), and a connection lost after the message's final "." but before the
server's reply, when the server kept the message (one per lost connection): we can't know
it arrived, so it is sent again rather than perhaps lost.
"""

from __future__ import annotations

import re
import secrets
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from functools import cache

from sqlalchemy import Connection, and_, bindparam, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from syndicate import bounces, tokens
from syndicate.config import Settings
from syndicate.errors import ConnectionLost, InvalidInput, TransportError
from syndicate.mail import Mailbox, Outgoing, Template, Transport, phrase
from syndicate.mail import message_id as make_message_id
from syndicate.models import (
    Delivery,
    Edition,
    Newsletter,
    Subscriber,
    SubscriberEvent,
    Subscription,
    UTCDateTime,
    utcnow,
)
from syndicate.pacing import Pacer
from syndicate.subscribers import normalise_email

OPEN = ("pending", "sending", "deferred")
# Rendered into every edition once; replaced per recipient by their own signed links.
UNSUBSCRIBE_URL = "https://syndicate.invalid/unsubscribe-url"
PREFERENCES_URL = "https://syndicate.invalid/preferences-url"
PUBLIC_ONLY = re.compile(r"<!--public-->.*?<!--/public-->", re.S)  # lines only the public web view shows
REQUEUE_AFTER = timedelta(minutes=5)  # a due row nobody claimed: its task was lost
STALE_CLAIM = timedelta(minutes=15)  # a claim nobody refreshed: its worker died
REFRESH_EVERY = 60.0  # seconds between claim refreshes during a long batch
CHECK_EVERY = 25  # messages between looks at the edition's status (an editor may pause it)


def fan_out(session: Session, edition: Edition, batch_size: int, now: datetime) -> list[tuple[int, int]]:
    """One pending delivery per subscriber confirmed and subscribed at the cut, in one statement."""
    recipients = (
        select(
            literal(edition.id), Subscriber.id, literal("pending"), literal(0),
            literal(now, UTCDateTime()), literal(now, UTCDateTime()),
        )
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.newsletter_id == edition.newsletter_id, Subscription.status == "active",
               Subscriber.status == "confirmed")
        .order_by(Subscriber.id)
    )
    session.execute(
        insert(Delivery).from_select(
            ["edition_id", "subscriber_id", "status", "attempts", "created_at", "next_attempt_at"], recipients
        )
    )
    ids = session.scalars(select(Delivery.id).where(Delivery.edition_id == edition.id).order_by(Delivery.id)).all()
    return [(edition.id, lo, hi) for lo, hi in ranges(ids, batch_size)]


def ranges(ids: list[int], size: int) -> list[tuple[int, int]]:
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


# ── one batch ────────────────────────────────────────────────────────────────


@dataclass
class BatchResult:
    claimed: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, status: str, n: int = 1) -> None:
        self.counts[status] = self.counts.get(status, 0) + n


def claim(session: Session, edition_id: int, lo: int, hi: int, token: str, now: datetime) -> int:
    """Take the batch's pending rows (and back the ones this same task held before a crash)."""
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.edition_id == edition_id,
            Delivery.id.between(lo, hi),
            or_(Delivery.status == "pending", and_(Delivery.status == "sending", Delivery.claimed_by == token)),
            select(Edition.id).where(Edition.id == edition_id, Edition.status == "sending").exists(),
        )
        .values(status="sending", claimed_by=token, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def send_batch(Session: sessionmaker, settings: Settings, transport: Transport, edition_id: int,
               lo: int, hi: int, token: str, clock=utcnow, pacer: Pacer | None = None) -> BatchResult:
    """Send the claimed rows of one batch over one connection, recording each outcome as it happens.

    With a `pacer`, each message waits its turn under the shared rate limits, and a 421/454 from the
    provider slows every worker down (this batch's rest is deferred, as for any lost connection).
    A 4.7.x deferral of one recipient slows that recipient's domain only (pacing.DomainPacer): the
    batch goes on with the other domains, and a row whose domain has no token right now is deferred
    to the domain's turn, never tried and never waited for, so a slowed domain doesn't hold the
    connection; its rows come back as batches of their own (requeue) when their turn is due."""
    result = BatchResult()
    with Session() as session:
        with session.begin():
            result.claimed = claim(session, edition_id, lo, hi, token, clock())
        if not result.claimed:
            return result
        edition = session.get(Edition, edition_id)
        newsletter = session.get(Newsletter, edition.newsletter_id)
        rows = session.execute(
            select(Delivery, Subscriber, Subscription.status)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .outerjoin(Subscription, and_(Subscription.subscriber_id == Subscriber.id,
                                          Subscription.newsletter_id == newsletter.id))
            .where(Delivery.edition_id == edition_id, Delivery.id.between(lo, hi),
                   Delivery.status == "sending", Delivery.claimed_by == token)
            .order_by(Delivery.id)
        ).all()
        session.commit()
        message_for = MessageFactory(settings, newsletter, edition)
        refreshed, left = time.monotonic(), set()
        with _Recorder(session, result) as recorder, _lazy(transport) as connection:
            for i, (delivery, subscriber, subscription_status) in enumerate(rows):
                if i and i % CHECK_EVERY == 0:
                    if not recorder.settle():
                        return result
                    left = recorder.run(lambda ledger: _look_again(ledger, edition_id, newsletter.id, lo, hi, token,
                                                                   result))
                    if left is None:
                        return result  # paused or cancelled by an editor: the rest was put back
                if subscriber.id in left:
                    subscription_status = "unsubscribed"
                domain = subscriber.email.rpartition("@")[2].lower()
                try:
                    status, reply, error = _attempt(connection, message_for, delivery, subscriber,
                                                    subscription_status, pacer, domain, before_end=recorder.hold_back)
                except TakenOver:
                    return result  # another worker took this batch over; this message was never finished
                except ConnectionLost as e:
                    if e.throttled and pacer is not None:
                        # The recipient's domain said 421 4.7.x: this row waits, the domain is slowed
                        # below, and the rest go on over a new connection (_lazy opens one).
                        status, reply, error = "deferred", str(e), e
                    else:
                        return _lost(session, recorder, rows[i:], e, edition, settings, token, clock, pacer, result)
                now = clock()
                if status == "held":  # never tried: its attempts and backoff stay as they were
                    recorder.record(delivery, token, _retry_status(edition, settings, now), reply, now, settings,
                                    retry_at=now + timedelta(seconds=error.wait), tried=False)
                    status = None
                elif status == "deferred":
                    status = _retry_status(edition, settings, now)
                    if error.throttled and pacer is not None:
                        pacer.domains.slow_down(domain)  # never raises, as pacer.slow_down
                if status == "failed" and error is not None and (error.bounce or not error.permanent):
                    # A refused address, or one that kept answering 4xx until we gave up: the
                    # outcome and the bounce it counts as are recorded together.
                    if not recorder.settle():
                        return result
                    with session.begin():
                        if not _record(session.connection(), delivery, token, status, reply, now, settings):
                            return result
                        bounces.record_delivery_failure(
                            session, settings, subscriber_id=subscriber.id, delivery_id=delivery.id,
                            newsletter_id=newsletter.id, reply=reply, hard=error.bounce, now=now)
                    result.add(status)
                elif status is not None:
                    recorder.record(delivery, token, status, reply, now, settings)
                if time.monotonic() - refreshed > REFRESH_EVERY:
                    recorder.refresh(edition_id, lo, hi, token, now)
                    refreshed = time.monotonic()
    return result


def _lost(session: Session, recorder: _Recorder, rest: list, e: ConnectionLost, edition: Edition,
          settings: Settings, token: str, clock, pacer: Pacer | None, result: BatchResult) -> BatchResult:
    """The stream is gone (or the relay asked the whole stream to slow down): nothing more goes over
    it; this row and the rest wait for a later try."""
    if pacer is not None and e.code in (421, 454):
        pacer.slow_down()  # never raises: pacing is advice, the deferral below is the rule
    if not recorder.settle():
        return result
    now = clock()
    status = _retry_status(edition, settings, now)
    with session.begin():
        for j, (row, _, _) in enumerate(rest):
            _record(session.connection(), row, token, status, str(e), now, settings, tried=j == 0)
    result.add(status, len(rest))
    return result


def _look_again(connection: Connection, edition_id: int, newsletter_id: int, lo: int, hi: int, token: str,
                result: BatchResult) -> set[int] | None:
    """Every few messages: is the edition still sending, and who of the batch's rest left meanwhile?

    The rest are the batch's rows still "sending" under this task's claim: every row before them has
    its outcome written. None if an editor paused the edition (the rest goes back to pending, for
    resume) or cancelled it (it is skipped). Otherwise the subscribers of the rest who unsubscribed or
    were suppressed since the batch began: an unsubscribe is honoured even mid-batch.
    Statements of a fixed shape, compiled and (by psycopg) prepared once, on the ledger's connection.
    """
    batch = dict(edition=edition_id, lo=lo, hi=hi, token=token)
    with connection.begin():  # on PostgreSQL, where the ledger is in autocommit, no BEGIN or COMMIT is sent
        status = connection.execute(_EDITION_STATUS, dict(edition=edition_id)).scalar()
        if status == "sending":
            return set(connection.execute(_LEFT_MEANWHILE, dict(batch, newsletter=newsletter_id)).scalars())
        put_back = "skipped" if status == "cancelled" else "pending"
        n = connection.execute(_put_back(put_back), dict(batch, reply="edition cancelled")).rowcount
    result.add(put_back, n)
    return None


def _the_rest():
    """The rows of a batch (edition, lo, hi) still "sending" under a task's claim (token)."""
    return (Delivery.edition_id == bindparam("edition"), Delivery.id.between(bindparam("lo"), bindparam("hi")),
            Delivery.claimed_by == bindparam("token"), Delivery.status == "sending")


_EDITION_STATUS = select(Edition.status).where(Edition.id == bindparam("edition"))
_LEFT_MEANWHILE = select(Delivery.subscriber_id).where(
    *_the_rest(),
    ~select(Subscription.id).join(Subscriber, Subscriber.id == Subscription.subscriber_id)
    .where(Subscription.subscriber_id == Delivery.subscriber_id, Subscription.newsletter_id == bindparam("newsletter"),
           Subscription.status == "active", Subscriber.status == "confirmed")
    .exists(),
)


@cache
def _put_back(status: str):
    values = dict(status=status, claimed_by=None)
    if status == "skipped":
        values["last_reply"] = bindparam("reply")
    return update(Delivery.__table__).where(*_the_rest()).values(**values)


def _attempt(connection, message_for, delivery: Delivery, subscriber: Subscriber, subscription_status: str | None,
             pacer: Pacer | None, domain: str, before_end=None) -> tuple[str, str, TransportError | None]:
    """One recipient: (status, reply, the refusal if any); "held" if its domain has no token now.
    ConnectionLost goes up: it concerns the whole batch (unless its 421 was the recipient's domain's)."""
    if subscriber.status != "confirmed":
        return "skipped", f"{subscriber.status} before sending", None
    if subscription_status != "active":
        return "skipped", "unsubscribed before sending", None
    if pacer is not None:
        wait = pacer.domains.ready(domain)  # before the stream's turn: a held row takes none of its tokens
        if wait:
            held = Held(domain, wait, pacer.domains.pace_of(domain))
            return "held", str(held), held
        pacer.wait_turn()
    try:
        return "sent", connection().send(message_for(delivery, subscriber), before_end), None
    except ConnectionLost:
        raise
    except TransportError as e:
        return ("failed" if e.permanent else "deferred"), str(e), e


def _retry_status(edition: Edition, settings: Settings, now: datetime) -> str:
    """Deferred, or failed once the give-up period since the cut has passed."""
    give_up = edition.cut_at + timedelta(seconds=settings.give_up_after)
    return "failed" if now >= give_up else "deferred"


def _record(connection: Connection, delivery: Delivery, token: str, status: str, reply: str,
            now: datetime, settings: Settings, tried: bool = True, retry_at: datetime | None = None) -> bool:
    """Mark one row's outcome if this task still holds it, by a statement compiled once (the ORM
    path around it cost 0.56 ms a row, this 0.18)."""
    values = dict(row=delivery.id, token=token, new_status=status, reply=reply[:2000])
    if status == "sent":
        values["at"] = now
    if status == "deferred":
        delay = min(settings.retry_base * 2 ** delivery.attempts, settings.retry_max)
        values["at"] = retry_at or now + timedelta(seconds=delay)
    return connection.execute(_outcome(status, tried), values).rowcount == 1


class Held(TransportError):
    """Not tried: the recipient's domain is slowed and has no token now; the row waits for its turn."""

    def __init__(self, domain: str, wait: float, cap: float | None):
        pace = f", so it is sent {cap:.3g} messages a second for now" if cap else ""
        super().__init__(f"held back: {domain} deferred our mail{pace}; this one in {wait:.1f} s", permanent=False)
        self.wait = wait


class TakenOver(Exception):
    """Another worker holds this batch now (this one's claim had gone stale): this one stops."""


class _Recorder:
    """Writes the batch's outcomes in a thread of its own, on a connection of its own, so that the
    commit of one message's outcome overlaps the sending of the next.

    The next message's end waits for that commit (`hold_back` is its `before_end`): at any moment at
    most one message is accepted by the server and not yet marked sent, so a killed worker still
    leaves at most one duplicate. On PostgreSQL the connection is in autocommit, each outcome one
    statement and one round trip (in the session, BEGIN, UPDATE and COMMIT were three, and 0.36 ms
    of a worker's CPU against 0.11); on SQLite `begin()` still brackets it in db.py's BEGIN
    IMMEDIATE … COMMIT, as every write.
    """

    def __init__(self, session: Session, result: BatchResult):
        self.engine, self.result = session.get_bind(), result
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="ledger")
        self.last: Future | None = None
        self.taken_over, self.error = False, None

    def __enter__(self) -> _Recorder:
        self.ledger = self.thread.submit(
            lambda: self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")).result()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self.settle()
        finally:
            self.thread.submit(self.ledger.close)
            self.thread.shutdown(wait=True)

    def record(self, delivery: Delivery, token: str, status: str, reply: str, now: datetime,
               settings: Settings, tried: bool = True, retry_at: datetime | None = None) -> None:
        self._submit(lambda ledger: _record(ledger, delivery, token, status, reply, now, settings, tried, retry_at),
                     status)

    def refresh(self, edition_id: int, lo: int, hi: int, token: str, now: datetime) -> None:
        self._submit(lambda ledger: _refresh(ledger, edition_id, lo, hi, token, now) or True, None)

    def settle(self) -> bool:
        """Wait until every outcome handed over is written; False if the batch is no longer ours."""
        if self.last is not None:
            self.last.result()
        if self.error is not None:
            raise self.error
        return not self.taken_over

    def hold_back(self) -> None:
        if not self.settle():
            raise TakenOver

    def run(self, work):
        """`work(ledger)` on the ledger's thread and connection, after every outcome handed over; its result."""
        return self.thread.submit(work, self.ledger).result()

    def _submit(self, write, status: str | None) -> None:
        def run():
            if self.taken_over or self.error is not None:
                return  # nothing after a row found taken, or a failed write, is written
            try:
                with self.ledger.begin():
                    ours = write(self.ledger)
            except BaseException as e:
                self.error = e
                return
            if not ours:
                self.taken_over = True
            elif status is not None:
                self.result.add(status)
        self.last = self.thread.submit(run)


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


# ── the message for one recipient ────────────────────────────────────────────


def mail_html(html: str) -> str:
    """The edition's HTML as mailed: without the lines meant for the public web view."""
    return PUBLIC_ONLY.sub("", html)



def list_id(newsletter: Newsletter) -> str:
    """RFC 2919: the newsletter's name (as a phrase: it is an editor's text) and an id under the sender's domain."""
    return f"{phrase(newsletter.name)} <{newsletter.slug}.{newsletter.from_address.rpartition('@')[2]}>"


class MessageFactory:
    """The edition's message is rendered once (mail.Template); per recipient only their tokens."""

    def __init__(self, settings: Settings, newsletter: Newsletter, edition: Edition):
        self.settings, self.newsletter, self.edition = settings, newsletter, edition
        self.domain = newsletter.from_address.rpartition("@")[2]
        self.mailto = f"mailto:unsubscribe@{self.domain}?subject=unsubscribe"
        self.template = Template(
            sender=Mailbox(newsletter.from_name, newsletter.from_address),
            subject=edition.subject, text=edition.text, html=mail_html(edition.html), reply_to=newsletter.reply_to,
            headers={
                "List-Id": list_id(newsletter),
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "Auto-Submitted": "auto-generated",
            },
            dkim=settings.dkim,
        )

    def __call__(self, delivery: Delivery, subscriber: Subscriber) -> Outgoing:
        token = tokens.unsubscribe_token(self.settings.secret_key, subscriber.id, self.newsletter.id)
        unsubscribe = f"{self.settings.base_url}/u/{token}"
        preferences = f"{self.settings.base_url}/p/{tokens.preferences_token(self.settings.secret_key, subscriber.id)}"
        message_id = make_message_id(self.domain, self.settings.secret_key, delivery.id, self.edition.id)
        return self.template.message(
            to=subscriber.email, name=subscriber.name or "",
            message_id=message_id,
            date=utcnow(),
            per_recipient={"List-Unsubscribe": f"<{unsubscribe}>, <{self.mailto}%20{token}>"},
            replace={UNSUBSCRIBE_URL: unsubscribe, PREFERENCES_URL: preferences},
        )


def test_messages(settings: Settings, newsletter: Newsletter, edition: Edition, addresses: list[str]) -> list[Outgoing]:
    """The edition as a recipient gets it, for an editor's check: marked as a test in the subject and a
    header, with links that unsubscribe no one, and no delivery row (a test is not counted)."""
    domain = newsletter.from_address.rpartition("@")[2]
    archive = f"{settings.base_url}/n/{newsletter.slug}"
    template = Template(
        sender=Mailbox(newsletter.from_name, newsletter.from_address),
        subject=f"[Test] {edition.subject}", text=edition.text, html=mail_html(edition.html),
        reply_to=newsletter.reply_to,
        headers={"List-Id": list_id(newsletter),
                 "Auto-Submitted": "auto-generated",
                 "X-Syndicate-Test": f"edition {edition.number} of {newsletter.slug}; not counted"},
        dkim=settings.dkim,
    )
    messages = []
    for address in addresses:
        message_id = make_message_id(domain, settings.secret_key, "test", edition.id, secrets.token_hex(6))
        links = {UNSUBSCRIBE_URL: archive, PREFERENCES_URL: archive}
        messages.append(template.message(to=address, message_id=message_id, date=utcnow(),
                                         per_recipient={}, replace=links))
    return messages


# ── keeping every row moving ─────────────────────────────────────────────────


def requeue(session: Session, settings: Settings, now: datetime) -> list[tuple[int, int, int]]:
    """Batches that need a (new) task: retries now due, tasks lost, workers dead. Then close finished editions."""
    revived: list[tuple[int, int]] = []

    def take(condition, values) -> None:
        rows = session.execute(select(Delivery.id, Delivery.edition_id).where(condition)).all()
        if rows:
            session.execute(
                update(Delivery).where(Delivery.id.in_([r.id for r in rows]), condition).values(**values)
                .execution_options(synchronize_session=False)
            )
            revived.extend((r.edition_id, r.id) for r in rows)

    live = select(Edition.id).where(Edition.status == "sending")
    fresh = dict(status="pending", next_attempt_at=now, claimed_by=None)
    take(and_(Delivery.status == "deferred", Delivery.next_attempt_at <= now, Delivery.edition_id.in_(live)), fresh)
    # Pending rows whose task was lost: only in an edition no worker has claimed anything of for
    # REQUEUE_AFTER. While an edition moves, its pending rows are queued, just not reached yet
    # (a 100,000-reader send outlasts REQUEUE_AFTER), and publishing them again only fills the queue.
    recent = aliased(Delivery)
    moving = select(recent.id).where(recent.edition_id == Delivery.edition_id,
                                     recent.claimed_at > now - REQUEUE_AFTER).exists()
    take(and_(Delivery.status == "pending", Delivery.next_attempt_at <= now - REQUEUE_AFTER,
              Delivery.edition_id.in_(live), ~moving), fresh)
    take(and_(Delivery.status == "sending", Delivery.claimed_at <= now - STALE_CLAIM), fresh)

    batches = _batches(revived, settings.batch_size)
    still_open = select(Delivery.id).where(Delivery.edition_id == Edition.id, Delivery.status.in_(OPEN)).exists()
    session.execute(
        update(Edition).where(Edition.status == "sending", ~still_open).values(status="sent", sent_at=now)
        .execution_options(synchronize_session=False)
    )
    return batches


def pending_batches(session: Session, batch_size: int, edition_id: int | None = None) -> list[tuple[int, int, int]]:
    """Every pending row of the editions being sent (or of one), as batches."""
    query = (select(Delivery.edition_id, Delivery.id).join(Edition)
             .where(Edition.status == "sending", Delivery.status == "pending"))
    if edition_id is not None:
        query = query.where(Delivery.edition_id == edition_id)
    return _batches(session.execute(query).all(), batch_size)


def _batches(rows, batch_size: int) -> list[tuple[int, int, int]]:
    by_edition: dict[int, list[int]] = {}
    for edition_id, delivery_id in rows:
        by_edition.setdefault(edition_id, []).append(delivery_id)
    return [(edition_id, lo, hi)
            for edition_id, ids in by_edition.items() for lo, hi in ranges(sorted(ids), batch_size)]


def counts(session: Session, edition_id: int) -> dict[str, int]:
    """One edition's deliveries by status, only the statuses it has (counts_of gives every one)."""
    return {status: n for status, n in counts_of(session, [edition_id])[edition_id].items() if n}


def report(session: Session, edition: Edition) -> dict[str, int]:
    """What happened to an edition: its deliveries by status, and what its recipients did since."""
    result = dict.fromkeys(("pending", "sending", "sent", "deferred", "failed", "skipped"), 0)
    result.update(counts(session, edition.id))
    of_edition = select(Delivery.id).where(Delivery.edition_id == edition.id)

    def events(*kinds) -> int:
        return session.scalar(select(func.count(func.distinct(SubscriberEvent.subscriber_id))).where(
            SubscriberEvent.kind.in_(kinds), SubscriberEvent.delivery_id.in_(of_edition)))

    result["bounced"] = events("bounce", "soft_bounce")
    result["complained"] = events("complaint")
    result["unsubscribed since"] = session.scalar(select(func.count()).select_from(Subscription).where(
        Subscription.newsletter_id == edition.newsletter_id, Subscription.status == "unsubscribed",
        Subscription.unsubscribed_at >= (edition.started_at or edition.cut_at),
        Subscription.subscriber_id.in_(select(Delivery.subscriber_id).where(
            Delivery.edition_id == edition.id, Delivery.status == "sent")))) if edition.started_at else 0
    return result


# ── an edition as one recipient sees it: the desk's preview and the editor's own test ──

MAX_TEST_ADDRESSES = 20  # a test goes to a few colleagues, not to a list
STATUSES = ("pending", "sending", "sent", "deferred", "failed", "skipped")


def preview(settings: Settings, newsletter: Newsletter, edition: Edition) -> EmailMessage:
    """The message exactly as a recipient gets it, assembled by the MessageFactory the send uses, for a
    recipient who doesn't exist (subscriber 0: their own links unsubscribe no one), parsed back."""
    nobody = Subscriber(id=0, email="preview@example.invalid", name="Preview", status="confirmed")
    outgoing = MessageFactory(settings, newsletter, edition)(Delivery(id=0, edition_id=edition.id), nobody)
    return message_from_bytes(outgoing.data, policy=email_policy.default)


def send_tests(settings: Settings, transport: Transport, newsletter: Newsletter, edition: Edition,
               addresses: list[str]) -> list[dict]:
    """Send the edition's test messages (test_messages) over one connection: per address, whether the
    server took it and its reply. A server that can't be reached raises TransportError."""
    checked = list(dict.fromkeys(normalise_email(a) for a in addresses))
    if not checked:
        raise InvalidInput("give at least one address to send the test to")
    if len(checked) > MAX_TEST_ADDRESSES:
        raise InvalidInput(f"a test goes to at most {MAX_TEST_ADDRESSES} addresses; this was {len(checked)}")
    if not edition.html:
        raise InvalidInput(f"edition #{edition.number} has no content ({edition.status}: {edition.note})")
    results = []
    with transport.connect() as connection:
        for message in test_messages(settings, newsletter, edition, checked):
            try:
                results.append(dict(address=message.recipient, accepted=True, reply=connection.send(message)))
            except ConnectionLost:
                raise
            except TransportError as e:
                results.append(dict(address=message.recipient, accepted=False, reply=str(e)))
    return results


def counts_of(session: Session, edition_ids: list[int]) -> dict[int, dict[str, int]]:
    """Deliveries by status for several editions in one query; every status present, 0 if none."""
    found = {edition_id: dict.fromkeys(STATUSES, 0) for edition_id in edition_ids}
    rows = session.execute(
        select(Delivery.edition_id, Delivery.status, func.count())
        .where(Delivery.edition_id.in_(edition_ids)).group_by(Delivery.edition_id, Delivery.status))
    for edition_id, status, n in rows:
        found[edition_id][status] = n
    return found
