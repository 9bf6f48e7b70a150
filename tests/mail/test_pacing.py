"""Send pacing shared by all workers: token buckets per second and per hour, slowing down on 421/454
and speeding up again; on the database (embedded default) and on Redis. Time is simulated."""

from __future__ import annotations

import math
import threading
from dataclasses import asdict
from datetime import UTC, datetime

import pytest

from conftest import configured
from syndicate.db import transaction
from syndicate.delivery import deliveries, sending
from syndicate.delivery.batches import send_batch
from syndicate.mail import pacing
from syndicate.mail.pacing import Limits, Pacer, State
from syndicate.models import Article
from syndicate.newsletters import lists
from syndicate.subscribers import consent


class Clock:
    """Simulated time: sleeping advances it, so paced loops run instantly and deterministically."""

    def __init__(self, start: float = 1_000_000.0):
        self.now, self.lock = start, threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def sent_in(pacer: Pacer, clock: Clock, seconds: float) -> int:
    """How many messages the pacer lets through in `seconds` of simulated time."""
    end, n = clock.now + seconds, 0
    while True:
        pacer.wait_turn()
        if clock.now > end:
            return n
        n += 1


# ── the rule itself ──────────────────────────────────────────────────────────


def test_without_limits_everything_is_granted_at_once_in_a_bigger_chunk():
    assert pacing.take(State(), Limits(), 20, 100.0) == (pacing.UNLIMITED_CHUNK, 0.0)
    slowed = State(cap=50.0, slowed_at=100.0, updated=100.0, tokens_second=50.0)
    assert pacing.take(slowed, Limits(), 20, 100.0) == (20, 0.0)  # a rate applies again: small chunks


def test_a_per_second_limit_lets_a_one_second_burst_then_that_rate():
    state, limits = State(), Limits(per_second=10)
    assert pacing.take(state, limits, 20, 100.0) == (10, 0.0)  # the full bucket: one second's worth
    grant, wait = pacing.take(state, limits, 20, 100.0)
    assert grant == 0 and wait == pytest.approx(0.1)
    assert pacing.take(state, limits, 20, 100.55)[0] == 5


def test_a_per_hour_limit_holds_across_the_hour():
    state, limits = State(), Limits(per_hour=100)
    assert pacing.take(state, limits, 80, 0.5)[0] == 80
    assert pacing.take(state, limits, 80, 0.5)[0] == 20
    grant, wait = pacing.take(state, limits, 80, 0.5)
    assert grant == 0 and wait == pytest.approx(36.0)  # one message's worth of the hour


def test_a_slow_down_halves_the_measured_rate_and_it_doubles_back_later():
    state, limits = State(), Limits(per_second=1000)
    now = 10.0
    for _ in range(60):  # 200 messages a second for six seconds
        pacing.take(state, limits, 20, now)
        now += 0.1
    assert state.measured == pytest.approx(200, rel=0.05)
    pacing.slow_down(state, limits, now)
    assert state.cap == pytest.approx(100, rel=0.05)
    pacing.slow_down(state, limits, now + 0.2)  # another connection refused in the same moment: one episode
    assert state.cap == pytest.approx(100, rel=0.05)
    now += 2
    pacing.slow_down(state, limits, now)  # refused again later: halved again
    assert state.cap == pytest.approx(50, rel=0.05)
    pacing.take(state, limits, 1, now + pacing.RECOVER_AFTER)
    assert state.cap == pytest.approx(100, rel=0.05)
    for i in range(1, 5):
        pacing.take(state, limits, 1, now + (pacing.RECOVER_AFTER + 1) * (1 + i))
    assert state.cap is None  # back above the configured rate: no cap any more


def test_a_slow_down_never_stops_the_stream():
    state = State(cap=pacing.MIN_RATE)
    pacing.slow_down(state, Limits(), 0.0)
    assert state.cap == pacing.MIN_RATE


# ── shared by workers ────────────────────────────────────────────────────────


def test_workers_share_one_rate(pacing_store):
    clock = Clock()
    limits = Limits(per_second=50)
    workers = [Pacer(pacing_store, "smtp:mx:25", limits, clock=clock, sleep=clock.sleep) for _ in range(3)]
    sent, end = 0, clock.now + 10
    while clock.now <= end:
        for worker in workers:
            worker.wait_turn()
            sent += 1
    # Three workers, one budget: ten seconds at 50/s plus the first second's burst (and chunks in hand).
    assert 500 <= sent <= 550 + 3 * pacing.CHUNK


def test_a_slow_down_reported_by_one_worker_slows_the_others(pacing_store):
    clock = Clock()
    first, second = (Pacer(pacing_store, "smtp:mx:25", Limits(per_second=100), clock=clock, sleep=clock.sleep)
                     for _ in range(2))
    assert sent_in(first, clock, 10) == pytest.approx(1000, rel=0.1)
    first.slow_down()
    assert second.state().cap == pytest.approx(50, rel=0.1)
    assert sent_in(second, clock, 10) == pytest.approx(500, rel=0.15)


def test_an_unlimited_rate_is_stored_by_every_store(pacing_store):
    # No SYNDICATE_SEND_RATE, the default: `syndicate deliver` and `syndicate run` on PostgreSQL keep their
    # bucket in the database, whose json type refused the infinite rate, and every message was deferred.
    clock = Clock()
    pacer = Pacer(pacing_store, "smtp:mx:25", Limits(), clock=clock, sleep=clock.sleep)
    for _ in range(3 * pacing.CHUNK):
        assert pacer.wait_turn() == 0.0
    assert all(math.isfinite(value) for value in asdict(pacer.state()).values() if value is not None)


def test_transports_are_paced_apart(pacing_store):
    clock = Clock()
    limits = Limits(per_second=10)
    one, other = (Pacer(pacing_store, name, limits, clock=clock, sleep=clock.sleep) for name in ("a", "b"))
    one.slow_down()
    assert other.state().cap is None


# ── in the send loop, against a real SMTP server ─────────────────────────────


@pytest.fixture
def desk(make_settings, smtp_server, tmp_path):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'p.db'}", smtp_url=smtp_server.url,
                                   batch_size=100, send_rate=20))
    with transaction(svc.Session) as session:
        newsletter = lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com")
        for i in range(40):
            consent.subscribe(session, f"reader{i:02}@example.com", [newsletter.id], confirmed=True)
        now = datetime.now(UTC)
        session.add(Article(identity="a", url="https://news.example/a", title="Story", content_hash="x",
                            published_at=now, first_seen_at=now))
    return svc


def cut(svc):
    with transaction(svc.Session) as session:
        return sending.cut(session, lists.get_newsletter(session, "daily"), svc.settings)


def test_the_send_loop_waits_its_turn_under_the_configured_rate(desk, smtp_server):
    clock = Clock()
    pacer = Pacer(pacing.DatabaseStore(desk.engine), "smtp", Limits(desk.settings.send_rate), clock=clock,
                  sleep=clock.sleep)
    started = clock.now
    for edition_id, lo, hi in cut(desk).batches:
        send_batch(desk.Session, desk.settings, desk.transport, edition_id, lo, hi, "t", pacer=pacer)
    assert len(smtp_server.messages) == 40
    # 40 messages at 20/s with a one-second burst of 20: the other 20 waited about a second.
    assert clock.now - started == pytest.approx(1.0, abs=0.1)


def test_a_421_for_the_session_defers_the_rest_and_slows_every_worker_down(desk, smtp_server):
    clock = Clock()
    pacer = Pacer(pacing.DatabaseStore(desk.engine), "smtp", Limits(desk.settings.send_rate), clock=clock,
                  sleep=clock.sleep)
    # At MAIL, before any recipient: the relay's word about the whole stream, not one domain's.
    smtp_server.mail_reply, smtp_server.mail_reply_after = "421 4.7.0 Try again later, you are sending too fast", 10
    made = cut(desk)
    for edition_id, lo, hi in made.batches:
        send_batch(desk.Session, desk.settings, desk.transport, edition_id, lo, hi, "t", pacer=pacer)
    with transaction(desk.Session) as session:
        assert deliveries.counts(session, made.edition.id) == {"sent": 10, "deferred": 30}  # deferred, not failed
    assert pacer.state().cap == pytest.approx(10, rel=0.01)  # half the allowed 20/s
    assert pacer.domains.snapshot() == {}  # no receiving domain is blamed for it
    assert len(smtp_server.messages) == 10


def test_settings_for_the_rates_are_checked(make_settings):
    from syndicate.errors import SettingsError

    assert make_settings(send_rate="14", send_hourly="50000").send_rate == 14.0
    with pytest.raises(SettingsError, match="SEND_RATE"):
        make_settings(send_rate="fast")
    with pytest.raises(SettingsError, match="SEND_HOURLY"):
        make_settings(send_hourly="-5")


def test_an_unreachable_pacing_store_defers_instead_of_failing(make_settings, tmp_path, closed_port):
    from syndicate.errors import ConnectionLost

    pacer = Pacer(pacing.RedisStore(f"redis://127.0.0.1:{closed_port}/0"), "smtp", Limits(per_second=10))
    with pytest.raises(ConnectionLost, match="pacing store is unreachable"):
        pacer.wait_turn()
    pacer.slow_down()  # only logged: the deferral of the batch is what matters
