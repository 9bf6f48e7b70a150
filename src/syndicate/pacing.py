"""Send pacing shared by every worker: a token bucket per transport (messages per second and per
hour), and the provider's own word: a 421 or 454 halves the rate of the whole stream, which then
doubles back every RECOVER_AFTER seconds without another one.

The state lives where all workers see it: in Redis when the broker is Redis, else in the database.
Workers take tokens in small chunks (CHUNK), so the shared store is asked once per few messages,
not once per message.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from redis.exceptions import RedisError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from syndicate.errors import ConnectionLost
from syndicate.models import SendRate

log = logging.getLogger(__name__)

CHUNK = 20  # tokens a worker takes at a time
RECOVER_AFTER = 30.0  # seconds without a slow-down reply before the rate doubles again
MIN_RATE = 0.5  # messages per second: the slowest a provider can push us
UNMEASURED = 50.0  # messages per second assumed when a 421 comes before any rate was measured
WINDOW = 5.0  # seconds over which the sending rate is measured
SAME_EPISODE = 1.0  # seconds within which further 421s don't halve the rate again


@dataclass
class State:
    tokens_second: float = 0.0
    tokens_hour: float = 0.0
    updated: float = 0.0  # time.time() of the last refill; 0: never
    cap: float | None = None  # messages per second imposed after a slow-down reply
    slowed_at: float = 0.0
    window_start: float = 0.0
    window_count: int = 0
    measured: float | None = None  # messages per second over the last full window


@dataclass(frozen=True)
class Limits:
    per_second: float | None = None
    per_hour: int | None = None


def take(state: State, limits: Limits, want: int, now: float) -> tuple[int, float]:
    """The pacing rule, on plain data: how many tokens to grant now, else how long to wait."""
    if state.cap is not None and now - state.slowed_at >= RECOVER_AFTER:
        state.cap, state.slowed_at = state.cap * 2, now
        if limits.per_second is not None and state.cap >= limits.per_second or state.cap >= 10_000:
            state.cap = None
    rate = min(limits.per_second or math.inf, state.cap or math.inf)
    hourly = limits.per_hour / 3600 if limits.per_hour else math.inf
    if state.updated == 0.0:  # a fresh bucket starts full (with no rate it has no tokens to count)
        # Never infinity: the state is stored as JSON, and PostgreSQL's json type refuses "Infinity".
        state.tokens_second = max(1.0, rate) if rate < math.inf else 0.0
        state.tokens_hour = float(limits.per_hour or 0)
    elapsed = max(0.0, now - state.updated) if state.updated else 0.0
    state.updated = now
    if rate < math.inf:
        state.tokens_second = min(max(1.0, rate), state.tokens_second + elapsed * rate)
    if hourly < math.inf:
        state.tokens_hour = min(float(limits.per_hour), state.tokens_hour + elapsed * hourly)
    grant = want
    if rate < math.inf:
        grant = min(grant, int(state.tokens_second))
    if hourly < math.inf:
        grant = min(grant, int(state.tokens_hour))
    if grant < 1:
        waits = [(1 - state.tokens_second) / rate if rate < math.inf else 0.0,
                 (1 - state.tokens_hour) / hourly if hourly < math.inf else 0.0]
        return 0, max(waits)
    if rate < math.inf:
        state.tokens_second -= grant
    if hourly < math.inf:
        state.tokens_hour -= grant
    if now - state.window_start >= WINDOW:
        if state.window_start:
            state.measured = state.window_count / (now - state.window_start)
        state.window_start, state.window_count = now, 0
    state.window_count += grant
    return grant, 0.0


def slow_down(state: State, limits: Limits, now: float) -> None:
    """The provider said 421/454: half the rate we were going at (or were allowed), for everyone.

    Several connections refused in the same moment are one episode: halved once, not once each."""
    if state.cap is not None and now - state.slowed_at < SAME_EPISODE:
        return
    current = state.cap or state.measured or limits.per_second or UNMEASURED
    current = min(current, limits.per_second or current)
    state.cap, state.slowed_at = max(MIN_RATE, current / 2), now
    state.tokens_second = min(state.tokens_second, 0.0)


# ── where the state lives ────────────────────────────────────────────────────


class Store(Protocol):
    def update(self, name: str, change: Callable[[State], object]) -> object:
        """Apply `change` to the named state atomically (for all processes) and return its result."""


class RedisStore:
    def __init__(self, url: str):
        import redis

        self.redis = redis.Redis.from_url(url)

    def update(self, name: str, change):
        key = f"syndicate:pacing:{name}"
        result = []

        def apply(pipe):
            raw = pipe.get(key)
            state = State(**json.loads(raw)) if raw else State()
            result[:] = [change(state)]
            pipe.multi()
            pipe.set(key, json.dumps(asdict(state)), ex=2 * 3600)

        self.redis.transaction(apply, key)  # WATCH/MULTI: retried if another worker wrote in between
        return result[0]


class DatabaseStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def update(self, name: str, change):
        with self.engine.begin() as connection:  # SQLite: BEGIN IMMEDIATE; PostgreSQL: the row lock below
            row = connection.execute(select(SendRate.state).where(SendRate.name == name).with_for_update()).first()
            if row is None:
                try:
                    with connection.begin_nested():
                        connection.execute(insert(SendRate).values(name=name, state={}))
                except IntegrityError:
                    pass  # another worker made it first
                row = connection.execute(select(SendRate.state).where(SendRate.name == name)
                                         .with_for_update()).first()
            state = State(**(row.state or {}))
            result = change(state)
            connection.execute(update(SendRate).where(SendRate.name == name).values(state=asdict(state)))
            return result


class Pacer:
    """One per process and transport: hands out send permissions, asking the shared store per chunk."""

    def __init__(self, store: Store, name: str, limits: Limits, clock=time.time, sleep=time.sleep):
        self.store, self.name, self.limits = store, name, limits
        self.clock, self.sleep = clock, sleep
        self.lock = threading.Lock()
        self.granted = 0

    def wait_turn(self) -> float:
        """Block until this process may send one message; returns the seconds waited.

        Raises PacingUnavailable (a ConnectionLost) if the shared store can't be reached: the batch
        defers its rest, as when the mail server goes away, rather than send unpaced or fail."""
        waited = 0.0
        with self.lock:
            while self.granted < 1:
                grant, wait = self._update(lambda s: take(s, self.limits, CHUNK, self.clock()))
                self.granted += grant
                if grant < 1:
                    pause = min(max(wait, 0.01), 1.0)
                    self.sleep(pause)
                    waited += pause
            self.granted -= 1
        return waited

    def slow_down(self) -> None:
        with self.lock:
            self.granted = 0  # what this process holds was granted at the old rate
            try:
                self._update(lambda s: slow_down(s, self.limits, self.clock()))
            except PacingUnavailable as e:
                log.warning("could not slow the other workers down: %s", e)

    def state(self) -> State:
        return self._update(lambda s: State(**asdict(s)))

    def _update(self, change):
        try:
            return self.store.update(self.name, change)
        except (RedisError, SQLAlchemyError, OSError) as e:
            raise PacingUnavailable(f"the pacing store is unreachable ({type(e).__name__}: {e}); "
                                    "the rest of the batch is deferred") from e


class PacingUnavailable(ConnectionLost):
    """The shared pacing state can't be read: sending waits, as for a lost mail server."""
