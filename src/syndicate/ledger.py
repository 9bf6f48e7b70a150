"""The ledger: how every lane that sends something (deliveries, confirmation mails, posts) keeps it
exactly once. One idiom for all of them:

- a row per thing to send, with a status from one of the enums below;
- a task **claims** its rows with one conditional UPDATE carrying its token (the Celery task id): open rows,
  or rows this token holds already, so a task delivered again after its worker died resumes its own claim;
- it writes an outcome **only while its claim holds** (`settle`): a worker whose claim was taken over
  writes nothing;
- a row that failed for now gets attempts and a next try (`backoff`); past a limit, a terminal `failed`;
- the tick **revives** claims nobody refreshed (the worker died) and hands out rows whose task was lost.

The clock of it (Leases) is one setting, SYNDICATE_CLAIM_TIMEOUT, in fixed proportions: a worker refreshes
its claim 15 times per timeout, so only a dead one loses it, and a lost task is noticed in a third of it.
Subscriber imports (ImportStatus) are resumable jobs rather than claimed rows: a lost one goes on from
where it stopped (subscribers/csv_files.lost_imports), on the same clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# The statuses, the clock and backoff need no database: the settings use them, and `syndicate --help` loads
# the settings. The four operations on rows import SQLAlchemy (0.15 s) where they run.

DEFAULT_CLAIM = 900  # seconds: longer than any SMTP or HTTP deadline a worker may block on between refreshes
SHORTEST_CLAIM = 60  # below this, a worker blocked on one slow server (30 s) could lose a live claim
LONGEST_CLAIM = 24 * 3600  # beyond a day a dead worker's rows wait past any newsroom's next edition

SUBSCRIBER_SUPPRESSED = ("unsubscribed", "bounced", "complained")  # a subscriber's statuses no mail goes to


class MailStatus(StrEnum):
    """A delivery's or a confirmation mail's way:
    pending ──claim──▶ sending ──▶ sent | deferred (4xx: due again later) | failed (5xx, given up) | skipped;
    waiting ──(its reader's local time comes: the tick)──▶ pending, for a newsletter sent at each reader's
    local time (delivery.waves). No claim takes a waiting row."""

    WAITING = "waiting"
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"


MAIL_OPEN = (MailStatus.WAITING, MailStatus.PENDING, MailStatus.SENDING, MailStatus.DEFERRED)
MAIL_UNCLAIMED = (MailStatus.WAITING, MailStatus.PENDING, MailStatus.DEFERRED)  # open, in no worker's hands


class PostStatus(StrEnum):
    """A post's way: pending ──claim──▶ sending ──▶ posted | ambiguous (an attempt went unanswered and
    the network can't say) | failed | skipped; held by an editor, cancelled by an editor; posted | ambiguous
    ──▶ retracted when an editor takes it back."""

    PENDING = "pending"
    HELD = "held"
    SENDING = "sending"
    POSTED = "posted"
    AMBIGUOUS = "ambiguous"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    RETRACTED = "retracted"


POST_OPEN = (PostStatus.PENDING, PostStatus.HELD, PostStatus.SENDING)


class ImportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Leases:
    claim: timedelta = timedelta(seconds=DEFAULT_CLAIM)  # a claim nobody refreshed: its worker died

    @property
    def requeue(self) -> timedelta:
        """A row handed to a task and not claimed for this long: the task was lost (broker restarted,
        worker killed with it prefetched); the tick hands it out again."""
        return self.claim / 3

    @property
    def refresh(self) -> float:
        """Seconds between a long task's claim refreshes."""
        return self.claim.total_seconds() / 15

    @property
    def stuck(self) -> timedelta:
        """A lane with work due and nothing done for this long is stuck (/healthz): longer than any healthy
        pause, since a dead worker's rows come back only after `claim`."""
        return self.claim


def claim(session: Session, table, where, token: str, now: datetime) -> int:
    """Take the rows `where` for `token`: pending ones, and those `token` holds already. How many it took."""
    from sqlalchemy import and_, or_, update

    return session.execute(
        update(table)
        .where(where, or_(table.status == "pending", and_(table.status == "sending", table.claimed_by == token)))
        .values(status="sending", claimed_by=token, claimed_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount


def settle(session: Session, table, row_id: int, token: str, **values) -> bool:
    """Write a row's outcome, only while `token`'s claim holds; False if another task took it over."""
    from sqlalchemy import update

    return session.execute(
        update(table).where(table.id == row_id, table.status == "sending", table.claimed_by == token)
        .values(claimed_by=None, **values).execution_options(synchronize_session=False)
    ).rowcount == 1


def revive(session: Session, table, now: datetime, leases: Leases, **values) -> list[int]:
    """Claims nobody refreshed for `leases.claim` (their worker died) are open again; their ids."""
    from sqlalchemy import and_, select, update

    stale = and_(table.status == "sending", table.claimed_at <= now - leases.claim)
    ids = list(session.scalars(select(table.id).where(stale)))
    if ids:
        session.execute(update(table).where(table.id.in_(ids), stale)
                        .values(status="pending", claimed_by=None, **values)
                        .execution_options(synchronize_session=False))
    return ids


def tally(session: Session, table) -> dict[str, int]:
    """A lane's rows by status, over all of them (every edition's deliveries, every account's posts); a status
    no row has is missing."""
    from sqlalchemy import func, select

    return dict(session.execute(select(table.status, func.count()).group_by(table.status)).all())


def backoff(attempts: int, base: float, most: float) -> timedelta:
    """The wait before try `attempts` + 1: base, 2 × base, 4 × base … at most `most` (seconds)."""
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), most))
