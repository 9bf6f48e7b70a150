"""Throttles: at most N attempts per key in a fixed window, counted in the database so every process
(web workers, the CLI, Celery) shares one count. The window opens with the first attempt counted."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from syndicate.models import Throttle

KEY_LENGTH = 300  # the column's width
ATTEMPTS = 5  # each retry follows a row another transaction wrote; a few always settle it


def hit(session: Session, key: str, limit: int, window_seconds: float, now: datetime, cost: int = 1) -> bool:
    """Count `cost` attempts at `key` (one, unless a request does many things at once). False, and not
    counted, when they would take the window that holds `now` over `limit`. Part of the caller's
    transaction: a rollback takes the count back."""
    if cost > limit:
        return False
    key = _fit(key)
    opened_after = now - timedelta(seconds=window_seconds)
    for _ in range(ATTEMPTS):
        # Conditional UPDATEs, not read-then-write: two processes hitting at once both count, and
        # on PostgreSQL the second waits for the first's row and re-checks the condition.
        counted = session.execute(
            update(Throttle)
            .where(Throttle.key == key, Throttle.window_start > opened_after, Throttle.count <= limit - cost)
            .values(count=Throttle.count + cost).execution_options(synchronize_session=False))
        if counted.rowcount == 1:
            return True
        renewed = session.execute(
            update(Throttle).where(Throttle.key == key, Throttle.window_start <= opened_after)
            .values(window_start=now, count=cost).execution_options(synchronize_session=False))
        if renewed.rowcount == 1:
            return True
        row = session.execute(select(Throttle.window_start, Throttle.count).where(Throttle.key == key)).first()
        if row is not None:
            if row.window_start > opened_after and row.count > limit - cost:
                return False
            continue  # changed by someone else since our UPDATEs: look again
        try:
            with session.begin_nested():  # a savepoint: losing the race below must not undo the caller's work
                session.execute(insert(Throttle).values(key=key, window_start=now, count=cost))
            return True
        except IntegrityError:
            continue  # another process counted the key's first attempt at the same moment: count on top
    # Only endless contention on one key gets here; refusing is the safe answer for a limit.
    return False


def refund(session: Session, key: str) -> None:
    """Take back one attempt counted at `key` (one that turned out not to count, e.g. a sign-in that worked)."""
    session.execute(update(Throttle).where(Throttle.key == _fit(key), Throttle.count > 0)
                    .values(count=Throttle.count - 1).execution_options(synchronize_session=False))


def forget(session: Session, key: str) -> None:
    """Every attempt counted at `key` taken back: its window starts afresh with the next one."""
    session.execute(delete(Throttle).where(Throttle.key == _fit(key)).execution_options(synchronize_session=False))


def _fit(key: str) -> str:
    """Keys are built from what visitors type: a long one keeps its start, readable, and a hash of the whole."""
    if len(key) <= KEY_LENGTH:
        return key
    return key[: KEY_LENGTH - 65] + "#" + hashlib.sha256(key.encode()).hexdigest()
