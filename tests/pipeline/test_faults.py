"""Real faults, not mocks: a worker killed mid-batch, a broker that restarts empty, a mail server that
throttles, drops the line, stalls, refuses an address or a recipient.

Each test runs `celery -A syndicate.tasks worker` as its own process (prefork pool, as in production) on a
real Redis, against an aiosmtpd server told to misbehave. The test does the beat tick's work itself
(`sending.run_due`, then `deliveries.requeue` with the clock moved forward instead of waiting minutes) and
then holds the ledger against what the server received: nothing lost, and a second copy only inside a
documented window. The copies counted go to FIGURES.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
import redis
from aiosmtpd.smtp import MISSING
from sqlalchemy import func, insert, select, update

from conftest import FIGURES, REQUIRED, Received, configured, free_port, serve_smtp, wait_for
from syndicate import tasks
from syndicate.db import transaction
from syndicate.delivery import deliveries, sending
from syndicate.ingest import feeds
from syndicate.ledger import Leases
from syndicate.models import Delivery, Edition, Newsletter, Subscriber, SubscriberEvent, Subscription, utcnow
from syndicate.newsletters import lists

SMTP_TIMEOUT = 2  # seconds, for the stalling server


# ── a mail server that misbehaves on request ─────────────────────────────────


@dataclass
class Mailbox:
    """An aiosmtpd handler that records what it took in, and how, and misbehaves as told.

    Connections are numbered at their EHLO, messages at the end of their DATA.
    """

    accepted: list[Received] = field(default_factory=list)  # answered 250
    unanswered: list[Received] = field(default_factory=list)  # taken in whole, line dropped before the reply
    connections: int = 0
    messages: int = 0
    delay: float = 0.0  # seconds before answering DATA: keeps a batch on the wire long enough to hit it
    stall: int = 0  # the first N connections never get an answer to EHLO
    throttle: int = 0  # the first N connections get 421 at MAIL
    drops: dict[int, str] = field(default_factory=dict)  # message number → "before the reply" | "after the reply"
    refuse: dict[str, str] = field(default_factory=dict)  # recipient → reply at RCPT, every time
    refuse_once: dict[str, str] = field(default_factory=dict)  # recipient → reply at its first RCPT only
    defer_domain: tuple[str, str, int] | None = None  # (domain, reply, n): the reply to its first n RCPTs
    deferred: list[str] = field(default_factory=list)  # the recipients defer_domain answered
    max_recipients: int = 1  # RCPTs taken per transaction; beyond that, 452 4.5.3
    extra_recipients: int = 0  # RCPTs refused for that
    on_message: Callable[[int], None] | None = None  # called once a message is in, before the reply
    stalled: list[float] = field(default_factory=list)  # seconds each stalled client waited before hanging up
    url: str = ""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.connections += 1
        session.number = self.connections
        if session.number <= self.stall:
            started = time.monotonic()
            try:
                await asyncio.sleep(3600)  # cancelled when the client hangs up
            finally:
                self.stalled.append(time.monotonic() - started)
        responses.insert(1, "250-PIPELINING")  # as Postfix does: the client sends MAIL, RCPT, DATA at once
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if session.number <= self.throttle:
            return "421 4.7.0 try again later"
        return MISSING

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= self.max_recipients:
            self.extra_recipients += 1
            return "452 4.5.3 Too many recipients"
        if self.defer_domain and address.endswith("@" + self.defer_domain[0]) \
                and len(self.deferred) < self.defer_domain[2]:
            self.deferred.append(address)
            return self.defer_domain[1]
        if address in self.refuse:
            return self.refuse[address]
        if address in self.refuse_once:
            return self.refuse_once.pop(address)
        return MISSING

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        self.messages += 1
        number = self.messages
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        drop = self.drops.get(number)
        if drop == "before the reply":
            self.unanswered.append(received)
            server.transport.close()
            await asyncio.sleep(3600)  # cancelled as the connection goes
        self.accepted.append(received)
        if self.on_message is not None:
            self.on_message(number)
        if drop == "after the reply":
            asyncio.get_running_loop().call_soon(server.transport.close)  # runs once the 250 is written
        return "250 2.0.0 Message accepted for delivery"


@pytest.fixture
def mailbox():
    yield from serve_smtp(Mailbox())


# ── real worker processes ────────────────────────────────────────────────────


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


class Worker:
    """`celery -A syndicate.tasks worker` in a process group of its own: the main process and its pool."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int, queue: str = "mail"):
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "syndicate.tasks", "--config", "fault_celeryconfig", "worker",
             "-Q", queue, "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--hostname", f"faults-{uuid.uuid4().hex[:8]}@%h"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def pool(self) -> list[int]:
        """The pool's processes: the first ones are the main thread's children, a replacement is the
        children of the pool's supervisor thread (/proc lists children per thread)."""
        pids = []
        for children in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            try:
                pids += [pid for pid in map(int, children.read_text().split()) if not gone(pid)]
            except FileNotFoundError:
                pass
        return sorted(pids)

    def kill_pool_process(self) -> None:
        """SIGKILL the pool process that holds the batch; the main process lives on and sees it die."""
        pid, = self.pool()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: gone(pid), 5, f"pool process {pid} to die")

    def kill(self) -> None:
        """SIGKILL the main process and its pool at once, as when the machine goes away."""
        pids = [self.process.pid, *self.pool()]
        os.killpg(self.process.pid, signal.SIGKILL)
        wait_for(lambda: all(gone(pid) for pid in pids), 5, "the worker to die")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        # The test has checked everything: no warm shutdown (2 s a worker), the whole group goes.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.log.close()


@pytest.fixture
def workers(tmp_path):
    """`workers(env, concurrency=1)` starts a worker process; every one is stopped afterwards."""
    (tmp_path / "fault_celeryconfig.py").write_text(
        "# A killed pool process's task goes back to the queue at once, not after 10 s (worker_lost_wait).\n"
        "worker_lost_wait = 0.5\n")
    started: list[Worker] = []

    def start(env: dict[str, str], concurrency: int = 1, queue: str = "mail") -> Worker:
        env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
        started.append(Worker(env, tmp_path / f"worker-{len(started) + 1}.log", concurrency, queue))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


# ── one edition, its ledger and the tick's work ──────────────────────────────


def address(i: int) -> str:
    return f"reader{i}@example.org"


@dataclass
class Newsroom:
    svc: object
    env: dict[str, str]  # SYNDICATE_* for the worker processes: the same settings as this process
    broker: redis.Redis
    edition_id: int = 0
    dead_tasks: set = field(default_factory=set)  # taken by a worker killed whole: "unacked" for an hour

    @property
    def settings(self):
        return self.svc.settings

    def cut(self) -> None:
        """What the beat tick does for a newsletter that is due: cut, fan out, queue the batches."""
        batches = sending.run_due(self.svc.Session, self.settings, utcnow())
        self.edition_id = batches[0][0]
        self.hand_out(batches)

    def worker_died(self) -> None:
        """A worker was killed whole: the tasks it had taken, prefetched ones too, are nobody's now. Their
        rows still pending are the tick's to hand out again (REQUEUE_AFTER), as in production."""
        self.dead_tasks |= set(self.broker.hkeys("unacked"))

    def hand_out(self, batches) -> None:
        for edition_id, lo, hi in batches:
            tasks.deliver_batch.delay(edition_id, lo, hi)

    def requeue(self, now: datetime) -> list[tuple[int, int, int]]:
        with transaction(self.svc.Session) as session:
            return deliveries.requeue(session, self.settings, now)

    def statuses(self) -> dict[str, int]:
        with transaction(self.svc.Session) as session:
            return deliveries.counts(session, self.edition_id)

    def ledger(self) -> dict[str, tuple[str, str | None]]:
        """Each recipient's delivery: (status, last reply)."""
        with transaction(self.svc.Session) as session:
            rows = session.execute(select(Subscriber.email, Delivery.status, Delivery.last_reply)
                                   .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                                   .where(Delivery.edition_id == self.edition_id)).all()
        return {email: (status, reply) for email, status, reply in rows}

    def queued(self) -> int:
        """Tasks waiting in the mail queue; -1 while the broker is away."""
        try:
            return sum(self.broker.llen(key) for key in self.broker.scan_iter("mail*"))
        except redis.ConnectionError:
            return -1

    def idle(self) -> bool:
        """No task queued or running and no row claimed: whatever is still open is the tick's to hand out.
        (A task taken by a worker waits in "unacked" until it is done; one whose worker was killed stays.)"""
        counts, queued = self.statuses(), self.queued()
        running = len(set(self.broker.hkeys("unacked")) - self.dead_tasks) if queued == 0 else 0
        return queued == 0 and not counts.get("sending") and (not running or not counts.get("pending"))

    def wait_idle(self, timeout: float = 60) -> None:
        looks: list[bool] = []

        def settled() -> bool:
            looks.append(self.idle())
            return looks[-3:] == [True] * 3  # three looks in a row: no task caught between queue and claim

        wait_for(settled, timeout, f"the workers to finish: {self.statuses()}")

    def wait_quiet(self, seconds: float = 1.5, timeout: float = 60) -> None:
        """Nothing queued and the ledger unchanged for `seconds`: for rows whose claim may never be let go."""
        last = {"look": None, "since": time.monotonic()}

        def still() -> bool:
            look = (self.queued(), self.statuses())
            if look != last["look"]:
                last.update(look=look, since=time.monotonic())
            return look[0] == 0 and time.monotonic() - last["since"] >= seconds

        wait_for(still, timeout, f"the ledger to settle: {self.statuses()}")

    def tick_until_done(self, rounds: int = 8) -> int:
        """Let the workers finish, run the tick with the clock moved to when the open rows are due again, and
        so on until none is open; then the tick closes the edition. The ticks that handed work out."""
        ticks = 0
        for _ in range(rounds):
            self.wait_idle()
            with transaction(self.svc.Session) as session:
                rows = session.execute(select(Delivery.status, Delivery.next_attempt_at).where(
                    Delivery.edition_id == self.edition_id, Delivery.status.in_(("pending", "deferred")))).all()
                last_claim = session.scalar(select(func.max(Delivery.claimed_at))
                                            .where(Delivery.edition_id == self.edition_id))
            if not rows:
                break
            # A deferred row is due at its next attempt; a pending one is taken for lost REQUEUE_AFTER after it
            # was queued and after the edition's last claim (until then its task may just be waiting its turn).
            pending = [at for status, at in rows if status == "pending"]
            stalled = max(filter(None, [last_claim, *pending])) if pending else None
            later = max([at for status, at in rows if status == "deferred"]
                        + ([stalled + Leases().requeue] if stalled else []) + [utcnow()]) + timedelta(seconds=1)
            # Never as far as STALE_CLAIM: that would take the rows of a worker still sending them.
            assert later < utcnow() + Leases().claim
            batches = self.requeue(later)
            assert batches, f"open rows, but nothing handed out at {later}: {self.statuses()}"
            self.hand_out(batches)
            ticks += 1
        self.requeue(utcnow())
        with transaction(self.svc.Session) as session:
            assert session.get(Edition, self.edition_id).status == "sent", self.statuses()
        return ticks


@pytest.fixture
def newsroom(redis_url, make_settings, sample_feed, tmp_path):
    """`newsroom(readers, database_url, smtp_url, broker_url=…, batch_size=…)`: a newsletter due now with
    `readers` confirmed readers; this process is configured like the workers it will start."""
    clients = []

    def make(readers: int, database_url: str, smtp_url: str, broker_url: str = redis_url,
             batch_size: int = 50) -> Newsroom:
        options = dict(database_url=database_url, broker_url=broker_url, smtp_url=smtp_url, batch_size=batch_size)
        svc = configured(make_settings(**options))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
        env.update(SYNDICATE_DATA_DIR=str(tmp_path / "data"), SYNDICATE_SECRET_KEY="test-secret",
                   SYNDICATE_BASE_URL="http://testserver")
        env.update({f"SYNDICATE_{k.upper()}": str(v) for k, v in options.items()})
        now = utcnow()
        with transaction(svc.Session) as session:
            newsletter = lists.add_newsletter(session, max_age_hours=0, slug="daily", name="Daily",
                                              from_address="news@example.com", cron="0 7 * * *")
            feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
            session.execute(insert(Subscriber), [dict(email=address(i), status="confirmed", confirmed_at=now,
                                                      created_at=now) for i in range(readers)])
            session.execute(insert(Subscription), [
                dict(subscriber_id=subscriber_id, newsletter_id=newsletter.id, status="active", created_at=now)
                for subscriber_id in session.scalars(select(Subscriber.id))])
            session.get(Newsletter, newsletter.id).next_run_at = now - timedelta(seconds=1)
        clients.append(redis.Redis.from_url(broker_url) if broker_url.startswith("redis") else None)
        return Newsroom(svc, env, clients[-1])  # no broker client on the embedded broker

    yield make
    for client in filter(None, clients):
        client.close()


@dataclass
class Tally:
    """The ledger held against the server."""

    sent: int
    copies: Counter  # recipient → copies the server holds, answered or not
    duplicates: int
    lost: list[str]


def reconcile(room: Newsroom, box: Mailbox, readers: int) -> Tally:
    """The rows marked sent are exactly the recipients the server answered 250 for; every message it holds has
    one recipient, of this edition; the copies of one delivery carry its one Message-ID."""
    ledger = room.ledger()
    assert len(ledger) == readers
    sent = {email for email, (status, _) in ledger.items() if status == "sent"}
    held = box.accepted + box.unanswered
    answered = Counter(r for m in box.accepted for r in m.recipients)
    copies = answered + Counter(r for m in box.unanswered for r in m.recipients)
    assert all(len(m.recipients) == 1 for m in held)
    assert set(answered) == sent, "the ledger says sent where the server answered nothing, or the reverse"
    assert set(copies) <= set(ledger)
    ids: dict[str, set[str]] = {}
    for m in held:
        ids.setdefault(m.recipients[0], set()).add(BytesHeaderParser().parsebytes(m.data)["Message-ID"])
    assert all(len(found) == 1 for found in ids.values()), "a second copy must carry the same Message-ID"
    lost = sorted(email for email, (status, _) in ledger.items()
                  if (status == "sent" and not copies[email]) or status in deliveries.OPEN)
    return Tally(len(sent), copies, sum(n - 1 for n in copies.values()), lost)


def figure(line: str) -> None:
    FIGURES.append(f"faults: {line}")


# ── 1. kill -9 of the worker that is sending ─────────────────────────────────


@pytest.mark.parametrize("victim", ["pool process", "whole worker"])
def test_a_worker_killed_mid_batch_loses_nothing_and_repeats_at_most_one_message_per_kill(
    victim, database_url, newsroom, mailbox, workers
):
    readers = 120
    room = newsroom(readers, database_url, mailbox.url, batch_size=30)
    mailbox.delay = 0.004  # at most ~250 messages/s: the second kill lands inside a batch too
    current = [workers(room.env)]
    room.cut()
    killed = threading.Event()

    def kill() -> None:
        if victim == "pool process":
            current[-1].kill_pool_process()  # the main process puts the task back: acks_late, reject_on_worker_lost
        else:
            current[-1].kill()
            room.worker_died()

    def in_the_window(number: int) -> None:
        # The server holds message 35 whole and the worker has not read the 250 yet: the worst moment.
        if number == 35:
            kill()
            killed.set()

    def carry_on() -> None:
        if victim == "whole worker":
            # Nobody puts the task back (it waits in "unacked" for Redis's hour-long visibility timeout):
            # the tick finds the dead worker's claim stale and hands its rows to a new task. A claim's lease
            # after the last tick this test ran, on its clock: the first such tick gave the rows it revived
            # its own time, a quarter of an hour ahead, and rows of those still pending when the second
            # kill took their task are lost only a lease after that (in production the tick's clock is the
            # workers', and this is the next tick five minutes on).
            with transaction(room.svc.Session) as session:
                given = session.scalar(select(func.max(Delivery.next_attempt_at)).where(
                    Delivery.edition_id == room.edition_id, Delivery.status == "pending"))
            clock = max(filter(None, [given, utcnow()]))
            room.hand_out(room.requeue(clock + Leases().claim + timedelta(seconds=1)))
            current.append(workers(room.env))

    mailbox.on_message = in_the_window
    wait_for(killed.is_set, 60, "message 35")
    mailbox.on_message = None
    carry_on()
    wait_for(lambda: mailbox.messages >= 80, 60, "message 80")
    kill()  # the second, at whatever moment this thread gets to it
    carry_on()
    room.tick_until_done()

    tally = reconcile(room, mailbox, readers)
    backend = "postgres" if database_url.startswith("postgresql") else "sqlite"
    figure(f"kill -9 of the {victim} mid-batch ({backend}), {readers} readers, 2 kills: {len(tally.lost)} lost, "
           f"{tally.duplicates} duplicates = {tally.duplicates / 2:.1f} per killed worker (the kill inside the window "
           f"repeats its message by construction; the kill at an arbitrary moment repeated "
           f"{max(tally.duplicates - 1, 0)})")
    assert tally.lost == []
    assert room.statuses() == {"sent": readers}
    assert 1 <= tally.duplicates <= 2  # the kill inside the window repeats its message; no kill repeats more
    # Every reader's cursor moved with their "sent", killed worker or not (its batch's fold never ran: the
    # edition's close folded what it left): the next edition carries nothing again.
    with transaction(room.svc.Session) as session:
        cursors = session.execute(select(Subscription.cursor_edition_id, func.count())
                                  .group_by(Subscription.cursor_edition_id)).all()
    assert cursors == [(room.edition_id, readers)]



def test_pool_processes_killed_while_they_wait_for_a_task_leave_an_embedded_worker_able_to_work(
        newsroom, mailbox, workers, tmp_path):
    """On the embedded broker the pool's processes read tasks from one pipe under one lock, and an idle
    process waits for the next task holding it. Killed there, it held the lock for ever: the worker took
    tasks and ran none (bench/chaos.py found it). Killing both idle processes makes sure the holder dies;
    broker.QueueLockWatch releases the lock, and the edition goes out."""
    room = newsroom(20, f"sqlite:///{tmp_path / 'w.db'}", mailbox.url,
                    broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}", batch_size=10)
    worker = workers(room.env, concurrency=2)
    wait_for(lambda: len(worker.pool()) == 2, 30, "the pool's two processes")
    time.sleep(1)  # both idle, one of them inside the lock, waiting for a task
    killed = worker.pool()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(worker.pool()) == 2 and not set(worker.pool()) & set(killed), 30, "two new processes")

    room.cut()

    wait_for(lambda: room.statuses().get("sent") == 20, 60, f"the edition to go out: {room.statuses()}")
    assert len(mailbox.accepted) == 20
    assert "releasing it" in worker.log_text()

# ── 2. the broker restarts empty ─────────────────────────────────────────────


class PrivateRedis:
    """A redis-server of the test's own, without persistence: a restart forgets every queued task."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with (self.folder / f"redis-{self.starts}.log").open("w") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                 "no", "--dir", str(self.folder)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis(port=self.port)

        def answers() -> bool:
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_for(answers, 10, "redis-server to answer")
        client.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def private_redis(redis_url, tmp_path):
    if shutil.which("redis-server") is None:
        message = "redis-server not installed: the test restarts a Redis of its own"
        if REQUIRED:
            pytest.fail(message + " (SYNDICATE_REQUIRE_SERVICES=1 makes it mandatory)")
        pytest.skip(message)
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


class BatchAborted(AssertionError):
    """A batch stopped half-way without recording its rows: they wait for the tick's STALE_CLAIM."""


@pytest.mark.parametrize("down", [
    pytest.param(0, id="between two turns of the pacer"),
    pytest.param(1, id="down 1 s"),
])
def test_a_broker_that_restarts_empty_loses_tasks_not_mail(down, private_redis, newsroom, mailbox, workers,
                                                           tmp_path):
    readers = 200
    room = newsroom(readers, f"sqlite:///{tmp_path / 'faults.db'}", mailbox.url, broker_url=private_redis.url,
                    batch_size=100)
    mailbox.delay = 0.004
    killed = threading.Event()

    def kill(number: int) -> None:
        # Message 42 of the first batch. The pacer takes tokens from Redis 20 at a time (pacing.CHUNK):
        # its next turn comes at message 61, inside this batch.
        if number == 42:
            private_redis.kill()
            if not down:
                private_redis.start()  # back before the worker reads its 250
            killed.set()

    mailbox.on_message = kill
    workers(room.env)
    room.cut()  # two tasks queued
    wait_for(killed.is_set, 60, "message 42")
    if down:
        time.sleep(down)  # the outage itself
        private_redis.start()
    # The batch in flight goes on; the task queued behind it went with the broker's memory.
    room.wait_quiet()
    left, stuck = room.statuses().get("pending", 0), room.statuses().get("sending", 0)
    if stuck:
        # Only the tick's stale-claim rule hands these on: a quarter of an hour later in production.
        room.hand_out(room.requeue(utcnow() + Leases().claim + timedelta(seconds=1)))
    ticks = room.tick_until_done() + bool(stuck)  # the tick finds rows nobody claimed for REQUEUE_AFTER

    tally = reconcile(room, mailbox, readers)
    crash = [line.partition("raised unexpected: ")[2] for line in (tmp_path / "worker-1.log").read_text().splitlines()
             if "deliver_batch" in line and "raised unexpected" in line]
    figure(f"broker restarted empty {f'after {down} s' if down else 'between two pacer turns'} mid-send, "
           f"{readers} readers: {left} rows' task lost, handed out again by {ticks} tick(s); {stuck} rows left "
           f"'sending' by the batch in flight{f' (it raised {crash[0]})' if crash else ''}; "
           f"{len(tally.lost)} lost, {tally.duplicates} duplicates")
    assert left == 100
    assert tally.lost == [] and tally.duplicates == 0
    assert room.statuses() == {"sent": readers}
    if stuck:
        raise BatchAborted(f"the outage left {stuck} rows 'sending' until STALE_CLAIM")


# ── 3. 421: slow down ────────────────────────────────────────────────────────


def events(room: Newsroom, *kinds: str) -> list[tuple[str, str, str]]:
    with transaction(room.svc.Session) as session:
        return session.execute(select(Subscriber.email, SubscriberEvent.kind, SubscriberEvent.detail)
                               .join(SubscriberEvent, SubscriberEvent.subscriber_id == Subscriber.id)
                               .where(SubscriberEvent.kind.in_(kinds))).all()


def next_attempts(room: Newsroom) -> list[datetime]:
    with transaction(room.svc.Session) as session:
        return list(session.scalars(select(Delivery.next_attempt_at).where(
            Delivery.edition_id == room.edition_id, Delivery.status == "deferred")))


def test_a_server_answering_421_defers_the_stream_and_a_later_tick_delivers_each_once(
    newsroom, mailbox, workers, tmp_path
):
    readers = 40
    room = newsroom(readers, f"sqlite:///{tmp_path / 'faults.db'}", mailbox.url, batch_size=10)
    mailbox.throttle = 2  # each pool process's first connection: "421 4.7.0 try again later" at MAIL
    workers(room.env, concurrency=2)
    room.cut()
    room.wait_idle()

    # Each throttled connection stopped its batch at the first message: deferred, not failed, no bounce.
    assert room.statuses() == {"sent": 20, "deferred": 20}
    deferred = {email: reply for email, (status, reply) in room.ledger().items() if status == "deferred"}
    assert all(reply.startswith("421 4.7.0 try again later") for reply in deferred.values())
    assert not set(deferred) & {r for m in mailbox.accepted for r in m.recipients}
    assert events(room, "bounce", "soft_bounce") == []
    pace = json.loads(room.broker.get(f"syndicate:pacing:smtp:127.0.0.1:{mailbox.url.rpartition(':')[2]}") or "{}")
    # Not before the retry time...
    assert room.requeue(min(next_attempts(room)) - timedelta(seconds=1)) == []
    ticks = room.tick_until_done()  # ...then all of it, the server answering normally again

    tally = reconcile(room, mailbox, readers)
    figure(f"421 for the first 2 connections, {readers} readers: 20 deferred, delivered by {ticks} later tick(s); "
           f"{len(tally.lost)} lost, {tally.duplicates} duplicates; the shared send rate was capped at "
           f"{pace.get('cap')} msg/s after the two 421s")
    assert tally.lost == [] and tally.duplicates == 0
    assert room.statuses() == {"sent": readers}


def test_a_domain_deferring_at_rcpt_is_slowed_for_every_worker_while_the_others_go_on(
    newsroom, mailbox, workers, tmp_path
):
    readers = 60
    room = newsroom(readers, f"sqlite:///{tmp_path / 'faults.db'}", mailbox.url, batch_size=10)
    with transaction(room.svc.Session) as session:  # every third reader at the domain that will defer
        session.execute(update(Subscriber).where(Subscriber.id % 3 == 0)
                        .values(email=func.replace(Subscriber.email, "@example.org", "@gmail.example")))
    # Its first three RCPTs are deferred (the workers' first messages there), then it takes mail again.
    mailbox.defer_domain = ("gmail.example", "450 4.7.28 rate limited, try again later", 3)
    workers(room.env, concurrency=2)
    room.cut()
    room.wait_idle()

    # The other domain's 40 readers all got theirs in the first pass, whatever happened at gmail.example;
    # there, nothing failed: the refused and the held back wait as deferred.
    ledger = room.ledger()
    gmail = {email for email in ledger if email.endswith("@gmail.example")}
    assert {email for email in ledger if email not in gmail} <= {r for m in mailbox.accepted for r in m.recipients}
    assert {status for email, (status, _) in ledger.items() if email in gmail} <= {"sent", "deferred"}
    # At least the first message there was deferred; how many more were tried before both workers had heard
    # of the slowed domain depends on their timing (the rest wait untried: held back).
    assert 1 <= len(mailbox.deferred) <= 3 and events(room, "bounce", "soft_bounce") == []
    held = sum(reply.startswith("held back: gmail.example") for email, (_, reply) in ledger.items() if email in gmail)
    port = mailbox.url.rpartition(":")[2]
    slowed = json.loads(room.broker.get(f"syndicate:pacing:smtp:127.0.0.1:{port}:domains"))["slowed"]
    assert list(slowed) == ["gmail.example"]  # in Redis, for every worker; the stream itself not slowed:
    assert json.loads(room.broker.get(f"syndicate:pacing:smtp:127.0.0.1:{port}") or "{}").get("cap") is None

    ticks = room.tick_until_done(rounds=30)  # each tick hands out what is due; the domain's pace says how much
    tally = reconcile(room, mailbox, readers)
    figure(f"4.7.28 at RCPT for gmail.example's first 3 recipients, {readers} readers, 2 worker processes: the 40 at "
           f"example.org sent in the first pass; gmail.example capped at {slowed['gmail.example']['cap']:g} msg/s "
           f"for all workers ({slowed['gmail.example']['deferrals']} deferral(s) counted), {held} of its 20 held "
           f"back untried, all delivered by {ticks} later tick(s); {len(tally.lost)} lost, {tally.duplicates} "
           f"duplicates")
    assert tally.lost == [] and tally.duplicates == 0
    assert room.statuses() == {"sent": readers}


# ── 4. the line dropped at the end of DATA ───────────────────────────────────


@pytest.mark.parametrize("moment", ["after the reply", "before the reply"])
def test_a_line_dropped_after_the_data_loses_nothing(moment, newsroom, mailbox, workers, tmp_path):
    readers = 120
    room = newsroom(readers, f"sqlite:///{tmp_path / 'faults.db'}", mailbox.url, batch_size=30)
    mailbox.drops = dict.fromkeys((10, 45, 80), moment)
    workers(room.env, concurrency=2)
    room.cut()
    ticks = room.tick_until_done()

    tally = reconcile(room, mailbox, readers)  # the rows marked sent are exactly the messages answered 250
    figure(f"line dropped {moment} to DATA, 3 times, {readers} readers: {ticks} later tick(s); "
           f"{len(tally.lost)} lost, {tally.duplicates} duplicates")
    assert tally.lost == []
    assert room.statuses() == {"sent": readers}
    if moment == "after the reply":
        assert tally.duplicates == 0 and mailbox.unanswered == []
    else:
        # The worker never heard whether the server took the message: its row was deferred and sent again.
        # A server that kept the unanswered copy delivers it twice: one duplicate per dropped line (RFC 1047).
        # The drops fall on the 10th, 45th and 80th message the server sees: under load a retry can be one of
        # them, so a reader may go unanswered twice and then hold three copies.
        unanswered = Counter(m.recipients[0] for m in mailbox.unanswered)
        assert unanswered.total() == 3
        assert all(tally.copies[email] == 1 + times for email, times in unanswered.items())
        assert tally.duplicates == 3


# ── 5. a server that stops answering ─────────────────────────────────────────


def test_a_stalling_server_times_the_batch_out_as_deferred_and_no_worker_hangs(
    newsroom, mailbox, workers, tmp_path
):
    readers = 90
    room = newsroom(readers, f"sqlite:///{tmp_path / 'faults.db'}", f"{mailbox.url}?timeout={SMTP_TIMEOUT}",
                    batch_size=30)
    mailbox.stall = 2  # the first two connections get the greeting, then no answer to EHLO, ever
    workers(room.env, concurrency=2)
    started = time.monotonic()
    room.cut()
    # Bounded by the SMTP timeout, not by the server: a hung worker would never get here.
    room.wait_idle(timeout=SMTP_TIMEOUT * 4 + 20)
    took = time.monotonic() - started

    assert room.statuses() == {"sent": 30, "deferred": 60}
    deferred = [reply for status, reply in room.ledger().values() if status == "deferred"]
    assert all("timed out" in reply for reply in deferred), deferred[0]
    assert len(mailbox.stalled) == 2 and all(waited < SMTP_TIMEOUT + 5 for waited in mailbox.stalled)
    ticks = room.tick_until_done()

    tally = reconcile(room, mailbox, readers)
    figure(f"stalling server, timeout={SMTP_TIMEOUT}s, {readers} readers: the 2 stalled batches deferred after "
           f"{', '.join(f'{w:.1f}' for w in mailbox.stalled)} s (the worker idle {took:.1f} s after the cut, "
           f"its start included), delivered by {ticks} later tick(s); {len(tally.lost)} lost, "
           f"{tally.duplicates} duplicates")
    assert tally.lost == [] and tally.duplicates == 0
    assert room.statuses() == {"sent": readers}


# ── 6. 550 5.1.1 to one reader ───────────────────────────────────────────────


def test_a_550_fails_that_reader_with_the_reply_and_suppresses_the_address(newsroom, mailbox, workers, tmp_path):
    readers = 60
    room = newsroom(readers, f"sqlite:///{tmp_path / 'faults.db'}", mailbox.url, batch_size=30)
    refused = address(7)
    reply = f"550 5.1.1 <{refused}>: Recipient address rejected: User unknown"
    mailbox.refuse[refused] = reply
    workers(room.env, concurrency=2)
    room.cut()
    ticks = room.tick_until_done()

    assert room.statuses() == {"sent": readers - 1, "failed": 1}
    assert room.ledger()[refused] == ("failed", reply)
    with transaction(room.svc.Session) as session:
        assert session.scalar(select(Subscriber.status).where(Subscriber.email == refused)) == "bounced"
    assert events(room, "bounce", "soft_bounce") == [(refused, "bounce", reply)]
    tally = reconcile(room, mailbox, readers)
    assert refused not in tally.copies
    assert tally.lost == [] and tally.duplicates == 0 and ticks == 0
    figure(f"550 5.1.1 to 1 of {readers} readers: failed with the reply and suppressed as bounced, "
           f"{tally.sent} sent; {len(tally.lost)} lost, {tally.duplicates} duplicates")


# ── 7. 452 4.5.3 too many recipients ─────────────────────────────────────────


def test_one_recipient_per_message_and_a_452_defers_that_reader_until_a_later_try(
    newsroom, mailbox, workers, tmp_path
):
    readers = 60
    room = newsroom(readers, f"sqlite:///{tmp_path / 'faults.db'}", mailbox.url, batch_size=30)
    mailbox.max_recipients = 1  # a second RCPT in one transaction would get 452 4.5.3
    for i in (3, 40):
        mailbox.refuse_once[address(i)] = "452 4.5.3 Too many recipients"
    workers(room.env, concurrency=2)
    room.cut()
    room.wait_idle()

    assert room.statuses() == {"sent": readers - 2, "deferred": 2}
    deferred = {email: reply for email, (status, reply) in room.ledger().items() if status == "deferred"}
    assert deferred == dict.fromkeys((address(3), address(40)), "452 4.5.3 Too many recipients")
    ticks = room.tick_until_done()

    tally = reconcile(room, mailbox, readers)
    assert all(len(m.recipients) == 1 for m in mailbox.accepted) and mailbox.extra_recipients == 0
    assert tally.lost == [] and tally.duplicates == 0
    assert room.statuses() == {"sent": readers}
    figure(f"452 4.5.3 for 2 of {readers} readers: one RCPT per message ({len(mailbox.accepted)} messages), "
           f"the 2 deferred and delivered by {ticks} later tick(s); {len(tally.lost)} lost, "
           f"{tally.duplicates} duplicates")
