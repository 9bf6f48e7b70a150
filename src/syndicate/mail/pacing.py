"""Send pacing shared by every worker, at two levels.

The stream: a token bucket per transport (messages per second and per hour), and the relay's own
word: a 421 or 454 for the session (at the greeting, at MAIL, a 421 without a 4.7.x status) halves
the rate of the whole stream, which then doubles back every RECOVER_AFTER seconds without another one.

The receiving domain: a deferral in reply to one recipient (a 4.7.x at RCPT or at the end of DATA,
"450 4.7.28 rate limited", "421 4.7.0 try again later") is that recipient's domain asking us to slow
down, and only that domain is slowed: additive increase, multiplicative decrease (`Domain`). Other
domains go on at the stream's pace. A row whose domain has no token right now is not waited for: the
batch defers it to the domain's next turn and goes on with the others (delivery.batches.send_batch).

Why by the reply's place and not by who answers: sending straight to a domain's MX, every RCPT reply
is that domain's; through a relay (a smarthost, a provider's API-SMTP), the relay accepts at RCPT and
queues, so a 4.7.x at RCPT is either the relay passing on a destination's deferral (Postfix
`smtpd_*_restrictions` with a policy service, PowerMTA, Haraka outbound) or the relay rate-limiting
us as a client ("450 4.7.1 too many recipients from"). The second is slowed domain by domain too,
and so, as every domain it refuses halves, the stream slows as a whole: per domain is right for the
first and adds up to the stream's rule for the second; the stream's rule would be wrong for the first.

The state lives where all workers see it: in Redis when the broker is Redis, else in the database.
Workers take tokens in small chunks (CHUNK; UNLIMITED_CHUNK when no rate applies, so a slow-down by
another worker is seen within a tenth of a second), so the shared store is asked once per few messages,
not once per message; the list of slowed domains is read once a second (LOOK_EVERY), and only a
slowed domain's tokens are asked for.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from redis.exceptions import RedisError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from syndicate.errors import ConnectionLost
from syndicate.models import SendRate

log = logging.getLogger(__name__)

CHUNK = 20  # tokens a worker takes at a time
UNLIMITED_CHUNK = 100  # when no rate applies: at a worker's full pace, a tenth of a second's worth or less
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
    grant = want if rate < math.inf or hourly < math.inf else max(want, UNLIMITED_CHUNK)
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


# ── per receiving domain ─────────────────────────────────────────────────────

INCREASE_EVERY = 10.0  # seconds without a deferral before a slowed domain's rate grows by one step
STEPS_BACK = 20  # steps from nothing to a slowed domain's ceiling: from half its rate, 15 steps (150 s)
LOOK_EVERY = 1.0  # seconds between a worker's looks at which domains are slowed


@dataclass
class Domain:
    """A receiving domain under a cap of its own; a domain with none goes at the stream's pace."""

    cap: float  # messages per second, for all workers together
    ceiling: float  # the cap is lifted once it grows back to this: twice the rate that was deferred
    step: float  # messages per second added per INCREASE_EVERY without a deferral
    slowed_at: float
    grown_at: float
    tokens: float = 0.0
    updated: float = 0.0
    deferrals: int = 0


@dataclass
class Domains:
    slowed: dict[str, Domain] = field(default_factory=dict)

    def __post_init__(self):
        self.slowed = {name: d if isinstance(d, Domain) else Domain(**d) for name, d in self.slowed.items()}


def grow(domains: Domains, now: float) -> None:
    """Additive increase: every INCREASE_EVERY seconds without a deferral a slowed domain's cap grows by
    its step, whether or not anything was sent to it; at its ceiling the cap is lifted."""
    for name, d in list(domains.slowed.items()):
        steps = int((now - d.grown_at) // INCREASE_EVERY)
        if steps > 0:
            d.cap, d.grown_at = d.cap + steps * d.step, d.grown_at + steps * INCREASE_EVERY
        if d.cap >= d.ceiling:
            del domains.slowed[name]


def slow_domain(domains: Domains, name: str, observed: float | None, now: float,
                sent_under: float | None = None) -> Domain:
    """Multiplicative decrease: the domain deferred a recipient, so its cap is halved (a domain not yet
    slowed: half the rate we were sending to it, `observed`).

    Only a message sent under the cap in force is news about that cap: `sent_under` is the `slowed_at`
    of the cap the sending worker knew when it sent. The messages other workers (or this one) had on
    the wire at full pace before they heard of the cap are counted, not halved for again; the probes
    sent at the new pace that are deferred too halve it again, each, however soon."""
    grow(domains, now)
    d = domains.slowed.get(name)
    if d is not None and (sent_under is None or sent_under < d.slowed_at):
        d.deferrals += 1
        return d
    if d is None:
        current = max(observed or UNMEASURED, MIN_RATE)
        d = domains.slowed[name] = Domain(cap=current, ceiling=2 * current, step=2 * current / STEPS_BACK,
                                          slowed_at=now, grown_at=now, updated=now)
    d.cap, d.slowed_at, d.grown_at = max(MIN_RATE, d.cap / 2), now, now
    d.tokens = min(d.tokens, 0.0)
    d.deferrals += 1
    return d


def take_domain(domains: Domains, name: str, want: int, now: float) -> tuple[int, float]:
    """A slowed domain's token bucket (one second's worth at most): how many of `want` messages may go
    now, else how long until one may. A domain with no cap (any more): all of them."""
    grow(domains, now)
    d = domains.slowed.get(name)
    if d is None:
        return want, 0.0
    d.tokens = min(max(1.0, d.cap), d.tokens + max(0.0, now - d.updated) * d.cap)
    d.updated = now
    grant = min(want, int(d.tokens))
    if grant < 1:
        return 0, (1 - d.tokens) / d.cap
    d.tokens -= grant
    return grant, 0.0


# ── where the state lives ────────────────────────────────────────────────────


class Store(Protocol):
    def update(self, name: str, change: Callable[[State], object], kind: type = State) -> object:
        """Apply `change` to the named state (a `kind`: State, or Domains) atomically (for all
        processes) and return its result."""


class RedisStore:
    def __init__(self, url: str):
        import redis

        self.redis = redis.Redis.from_url(url)

    def update(self, name: str, change, kind: type = State):
        key = f"syndicate:pacing:{name}"
        result = []

        def apply(pipe):
            raw = pipe.get(key)
            state = kind(**json.loads(raw)) if raw else kind()
            result[:] = [change(state)]
            pipe.multi()
            pipe.set(key, json.dumps(asdict(state)), ex=2 * 3600)

        self.redis.transaction(apply, key)  # WATCH/MULTI: retried if another worker wrote in between
        return result[0]


class DatabaseStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def update(self, name: str, change, kind: type = State):
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
            state = kind(**(row.state or {}))
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
        self.domains = DomainPacer(store, name, clock)  # the receiving domains of this stream

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

    def has_turn(self) -> bool:
        """Whether `wait_turn` would return at once now (a chunk is asked for if none is held here).
        Raises PacingUnavailable as `wait_turn` does."""
        with self.lock:
            if self.granted < 1:
                grant, _wait = self._update(lambda s: take(s, self.limits, CHUNK, self.clock()))
                self.granted += grant
            return self.granted >= 1

    def slow_down(self) -> None:
        with self.lock:
            self.granted = 0  # what this process holds was granted at the old rate
            try:
                self._update(lambda s: slow_down(s, self.limits, self.clock()))
            except PacingUnavailable as e:
                log.warning("could not slow the other workers down: %s", e)

    def state(self) -> State:
        return self._update(lambda s: State(**asdict(s)))

    def paces(self) -> list[dict]:
        """The pace now, for people (`syndicate pace`, /metrics): the stream's first, then each slowed
        domain's. `per_second` None: as fast as the server takes; `full_at`: when a slowed domain's cap,
        growing step by step without another deferral, will be lifted."""
        stream = self.state()
        rates = [r for r in (self.limits.per_second, stream.cap) if r is not None]
        rows = [dict(to=f"all mail ({self.name})", per_second=min(rates) if rates else None,
                     slowed_since=_when(stream.slowed_at) if stream.cap is not None else None,
                     deferrals=None, full_at=None)]
        for domain, d in sorted(self.domains.snapshot().items()):
            steps = math.ceil((d.ceiling - d.cap) / d.step)
            rows.append(dict(to=domain, per_second=round(d.cap, 3), slowed_since=_when(d.slowed_at),
                             deferrals=d.deferrals, full_at=_when(d.grown_at + steps * INCREASE_EVERY)))
        return rows

    def _update(self, change):
        try:
            return self.store.update(self.name, change)
        except (RedisError, SQLAlchemyError, OSError) as e:
            raise PacingUnavailable(f"the pacing store is unreachable ({type(e).__name__}: {e}); "
                                    "the rest of the batch is deferred") from e


class DomainPacer:
    """One per process and transport: which receiving domains are slowed (looked up once a second) and
    tokens for those, taken in chunks. A message to a domain that is not slowed costs no store round
    trip: a dict lookup and a count, for the rate a first slow-down halves."""

    def __init__(self, store: Store, transport: str, clock=time.time):
        self.store, self.name, self.clock = store, f"{transport}:domains", clock
        self.lock = threading.Lock()
        self.slowed: dict[str, Domain] = {}  # as last looked up
        self.looked = -math.inf
        self.held: dict[str, int] = {}  # tokens of a slowed domain taken and not used yet
        self.next_ask: dict[str, float] = {}  # a slowed domain had no token: not asked again before this
        self.turns: dict[str, float] = {}  # the last turn handed to a row held back, per domain
        self.sent_under: dict[str, float] = {}  # the cap (its slowed_at) the last message to a slowed domain went under
        self.window_start, self.counts, self.rates = 0.0, {}, {}  # messages per domain, this process

    def ready(self, domain: str) -> float:
        """0 if a message to `domain` may go now (counted as gone); else the seconds until its turn:
        each row held back in a row gets the next turn, 1/cap apart, so that they come back spread out.
        Raises PacingUnavailable if the shared store can't be reached."""
        with self.lock:
            now = self.clock()
            if now - self.looked >= LOOK_EVERY:
                self._look(now)
            if domain in self.slowed and self.held.get(domain, 0) < 1:
                if now < self.next_ask.get(domain, now):
                    return self._turn(domain, now)
                grant, wait, slowed = self._update(lambda ds: (*take_domain(ds, domain, CHUNK, now),
                                                                  ds.slowed.get(domain)))
                if slowed is None:  # grown back to full pace since we looked
                    self._forget(domain)
                else:
                    self.slowed[domain] = slowed
                    if grant < 1:
                        self.next_ask[domain] = now + wait
                        return self._turn(domain, now)
                    self.held[domain] = grant
            if domain in self.slowed:
                self.held[domain] -= 1
                self.sent_under[domain] = self.slowed[domain].slowed_at
            self._count(domain, now)
            return 0.0

    def slow_down(self, domain: str) -> None:
        """`domain` deferred a recipient with a 4.7.x (or 421): slow it, for every worker."""
        with self.lock:
            now = self.clock()
            observed, sent_under = self._observed(domain, now), self.sent_under.get(domain)
            self.held.pop(domain, None)
            try:
                slowed = self._update(lambda ds: Domain(**asdict(slow_domain(ds, domain, observed, now, sent_under))))
            except PacingUnavailable as e:
                log.warning("could not slow %s down for the other workers: %s", domain, e)
                return
            self.slowed[domain] = slowed
            self.next_ask[domain] = now + (1 - slowed.tokens) / slowed.cap

    def pace_of(self, domain: str) -> float | None:
        """The domain's cap as last seen here (None: full pace)."""
        slowed = self.slowed.get(domain)
        return slowed.cap if slowed is not None else None

    def snapshot(self) -> dict[str, Domain]:
        """The slowed domains as they are now, for all workers (`syndicate pace`, /metrics)."""
        now = self.clock()
        return self._update(lambda ds: (grow(ds, now), {name: Domain(**asdict(d)) for name, d in ds.slowed.items()})[1])

    def _look(self, now: float) -> None:
        self.slowed = self.snapshot()
        self.looked = now
        for domain in set(self.held) | set(self.next_ask) | set(self.turns):
            if domain not in self.slowed:
                self._forget(domain)

    def _forget(self, domain: str) -> None:
        self.slowed.pop(domain, None)
        for kept in (self.held, self.next_ask, self.turns, self.sent_under):
            kept.pop(domain, None)

    def _turn(self, domain: str, now: float) -> float:
        # Booked by this process only: with several workers the turns they hand out overlap, and a row
        # that comes back before the domain has a token for it is simply held back again, a little later.
        turn = max(self.next_ask.get(domain, now), self.turns.get(domain, now) + 1 / self.slowed[domain].cap)
        self.turns[domain] = turn
        return max(turn - now, 1 / self.slowed[domain].cap)

    def _count(self, domain: str, now: float) -> None:
        if now - self.window_start >= WINDOW:
            if self.window_start:
                self.rates = {d: n / (now - self.window_start) for d, n in self.counts.items()}
            self.window_start, self.counts = now, {}
        self.counts[domain] = self.counts.get(domain, 0) + 1

    def _observed(self, domain: str, now: float) -> float | None:
        """The rate this process sent to `domain` at lately: with several workers, each sees its own part,
        so a first slow-down cuts deeper than half; the additive increase brings it back."""
        if not self.rates and now - self.window_start < WINDOW:
            return None  # nothing measured yet: UNMEASURED, as for the stream
        current = self.counts.get(domain, 0) / max(now - self.window_start, 1.0)
        return max(self.rates.get(domain, 0.0), current) or None

    def _update(self, change):
        try:
            return self.store.update(self.name, change, Domains)
        except (RedisError, SQLAlchemyError, OSError) as e:
            raise PacingUnavailable(f"the pacing store is unreachable ({type(e).__name__}: {e}); "
                                    "the rest of the batch is deferred") from e


def _when(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class PacingUnavailable(ConnectionLost):
    """The shared pacing state can't be read: sending waits, as for a lost mail server."""
