"""edition → delivery: the ledger's rows, one per recipient. The fan-out makes them; batches.py sends a
batch of them over one connection; the tick's requeue hands out again what needs a worker; the counts.

pending ──claim──▶ sending ──▶ sent | deferred (4xx, retried later) | failed (5xx) | skipped
waiting (a reader whose local time hasn't come, delivery.waves) ──the tick, when it comes──▶ pending
A row is marked sent only after the server accepted the message, in its own commit.
Three windows remain for a duplicate, each of at most one message, measured in tests/pipeline/test_faults.py
and bench/chaos.py: a worker killed between the server's "250" and that commit (one per killed
worker); the database connection cut at that moment (one per batch being sent); and a connection
lost after the message's final "." but before the server's reply, when the server kept the message
(one per lost connection): we can't know it arrived, so it is sent again rather than perhaps lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, aliased

from syndicate import ledger
from syndicate.config import Settings
from syndicate.delivery import choices
from syndicate.ledger import MAIL_OPEN, MailStatus
from syndicate.models import (
    Delivery,
    Edition,
    SubscriberEvent,
    Subscription,
)

log = logging.getLogger(__name__)
OPEN = MAIL_OPEN


def fan_out(session: Session, edition: Edition, batch_size: int, now: datetime, settings: Settings,
            progress: Callable[[int, int], object] | None = None) -> list[tuple[int, int, int]]:
    """One delivery per reader confirmed and subscribed at the cut who is due and has a story in it, pending
    or waiting for their local time (choices.insert_recipients: most in INSERT … SELECT slices, reporting
    `progress(done, total)` as they go), then the pending ones' batches to hand to workers, worked out by
    the database, not from a list of every delivery id in this process."""
    choices.insert_recipients(session, edition, settings, now, progress)
    return [(edition.id, lo, hi) for lo, hi in id_ranges(session, edition.id, batch_size)]


def id_ranges(session: Session, edition_id: int, size: int) -> list[tuple[int, int]]:
    """The edition's pending delivery ids cut into runs of `size`, first and last id of each, in id order (at
    the fan-out, every row but those waiting for their reader's local time)."""
    numbered = select(Delivery.id, ((func.row_number().over(order_by=Delivery.id) - 1) // size).label("n")) \
        .where(Delivery.edition_id == edition_id, Delivery.status == "pending").subquery()
    return [tuple(r) for r in session.execute(
        select(func.min(numbered.c.id), func.max(numbered.c.id)).group_by(numbered.c.n)
        .order_by(func.min(numbered.c.id)))]


def ranges(ids: list[int], size: int) -> list[tuple[int, int]]:
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


# ── keeping every row moving ─────────────────────────────────────────────────


def _take(session: Session, condition, values) -> list[tuple[int, int]]:
    """The rows `condition` finds, changed to `values`, in one UPDATE … RETURNING; (edition id, id) each.
    (A SELECT and then an UPDATE of the ids found sent a wave's 10,000 ids back as bound values: 0.35 s on
    PostgreSQL.)"""
    return [(r.edition_id, r.id) for r in session.execute(
        update(Delivery).where(condition).values(**values).returning(Delivery.id, Delivery.edition_id)
        .execution_options(synchronize_session=False))]


def _live():
    return select(Edition.id).where(Edition.status == "sending")


def wake(session: Session, settings: Settings, now: datetime) -> list[tuple[int, int, int]]:
    """The waves whose local time has come (delivery.waves): their rows pending, as batches. A paused
    edition's wait on."""
    return _batches(_take(session, and_(Delivery.status == "waiting", Delivery.next_attempt_at <= now,
                                        Delivery.edition_id.in_(_live())),
                          dict(status="pending", next_attempt_at=now, claimed_by=None)), settings.batch_size)


def requeue(session: Session, settings: Settings, now: datetime) -> list[tuple[int, int, int]]:
    """Batches that need a (new) task: waves due, retries now due, tasks lost, workers dead. Then close finished
    editions."""
    revived: list[tuple[int, int]] = []

    def take(condition, values) -> None:
        revived.extend(_take(session, condition, values))

    leases = settings.leases
    live = _live()
    fresh = dict(status="pending", next_attempt_at=now, claimed_by=None)
    woken = wake(session, settings, now)
    take(and_(Delivery.status == "deferred", Delivery.next_attempt_at <= now, Delivery.edition_id.in_(live)), fresh)
    # Pending rows whose task was lost: only in an edition no worker has claimed anything of for
    # leases.requeue. While an edition moves, its pending rows are queued, just not reached yet
    # (a 100,000-reader send outlasts that), and publishing them again only fills the queue.
    recent = aliased(Delivery)
    moving = select(recent.id).where(recent.edition_id == Delivery.edition_id,
                                     recent.claimed_at > now - leases.requeue).exists()
    take(and_(Delivery.status == "pending", Delivery.next_attempt_at <= now - leases.requeue,
              Delivery.edition_id.in_(live), ~moving), fresh)
    revived.extend((edition_id, row_id) for row_id, edition_id in session.execute(
        select(Delivery.id, Delivery.edition_id).where(Delivery.id.in_(
            ledger.revive(session, Delivery, now, leases, next_attempt_at=now)))).all())

    batches = woken + _batches(revived, settings.batch_size)
    still_open = select(Delivery.id).where(Delivery.edition_id == Edition.id, Delivery.status.in_(OPEN)).exists()
    for edition in session.scalars(select(Edition).where(Edition.status == "sending", ~still_open)):
        _close(session, edition, now)
    return batches


def _close(session: Session, edition: Edition, now: datetime) -> None:
    """Every row has its outcome: the edition is sent; or failed, saying why, when it reached no one and
    the server refused it (a sender the relay won't take, a DMARC policy): an editor sees it and can
    resend once that is fixed (sending.resend_failed). Its readers' cursors are folded once more: a batch
    whose worker was killed never folded its own (delivery.choices)."""
    choices.fold_edition(session, edition)
    done = dict(session.execute(select(Delivery.status, func.count()).where(Delivery.edition_id == edition.id)
                                .group_by(Delivery.status)).all())
    edition.status, edition.sent_at = "sent", now
    if done.get("failed") and not done.get("sent"):
        reply, times = session.execute(
            select(Delivery.last_reply, func.count()).where(Delivery.edition_id == edition.id,
                                                            Delivery.status == "failed")
            .group_by(Delivery.last_reply).order_by(func.count().desc()).limit(1)).one()
        edition.status = "failed"
        edition.note = (f"no reader got it: all {done['failed']:,} deliveries failed"
                        + (f"; {times:,} of them with \"{(reply or '')[:300]}\"" if reply else "")
                        + ". Fix what the mail server says, then resend to the failed recipients.")
        log.warning("edition %d failed: %s", edition.id, edition.note)


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
    result = dict.fromkeys(("waiting", "pending", "sending", "sent", "deferred", "failed", "skipped"), 0)
    result.update(counts(session, edition.id))
    of_edition = select(Delivery.id).where(Delivery.edition_id == edition.id)

    def events(*kinds) -> int:
        return session.scalar(select(func.count(func.distinct(SubscriberEvent.subscriber_id))).where(
            SubscriberEvent.kind.in_(kinds), SubscriberEvent.delivery_id.in_(of_edition)))

    def erased(what: str) -> int:  # readers erased since, whose events went with them (subscribers.rights)
        return session.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.edition_id == edition.id, Delivery.subscriber_id.is_(None),
            Delivery.erased_with.contains(what)))

    result["bounced"] = events("bounce", "soft_bounce") + erased("bounced")
    result["complained"] = events("complaint") + erased("complained")
    result["unsubscribed since"] = session.scalar(select(func.count()).select_from(Subscription).where(
        Subscription.newsletter_id == edition.newsletter_id, Subscription.status == "unsubscribed",
        Subscription.unsubscribed_at >= (edition.started_at or edition.cut_at),
        Subscription.subscriber_id.in_(select(Delivery.subscriber_id).where(
            Delivery.edition_id == edition.id, Delivery.status == "sent")))) + erased("unsubscribed") \
        if edition.started_at else 0
    return result


STATUSES = tuple(MailStatus)


def counts_of(session: Session, edition_ids: list[int]) -> dict[int, dict[str, int]]:
    """Deliveries by status for several editions in one query; every status present, 0 if none."""
    found = {edition_id: dict.fromkeys(STATUSES, 0) for edition_id in edition_ids}
    rows = session.execute(
        select(Delivery.edition_id, Delivery.status, func.count())
        .where(Delivery.edition_id.in_(edition_ids)).group_by(Delivery.edition_id, Delivery.status))
    for edition_id, status, n in rows:
        found[edition_id][status] = n
    return found
