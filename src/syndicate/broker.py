"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, for one machine with no Redis.

Chosen over kombu's filesystem transport because every message lives in a
transactional table (a crash never leaves half a message) and SQLite's locking
makes several worker processes safe. Neither redelivers a task whose worker died;
syndicate doesn't rely on that: the beat tick hands stale claims on (see deliveries.requeue).
"""

import logging
import threading
import time

from celery import bootsteps
from celery.signals import worker_process_init
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel, Transport
from sqlalchemy.exc import IntegrityError

log = logging.getLogger(__name__)


class EmbeddedChannel(Channel):
    def _get_or_create(self, queue):
        """kombu creates a queue's row on first use, guarded by a lock of its own process only: on a fresh
        install the worker and beat (or two workers) start together, the second INSERT fails on the unique
        name, and kombu, which expects only OperationalError there, lets the IntegrityError end the worker
        ("Unrecoverable error", found by bench/chaos.py). The other process made the row: read it."""
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()


class EmbeddedTransport(Transport):
    Channel = EmbeddedChannel
    # kombu polls this transport once a second by default, so a worker took about one
    # task a second; the option can't go through broker_transport_options, which this
    # transport hands on to create_engine().
    polling_interval = 0.1


# `sqla+sqlite:///…` URLs keep their usual spelling and get the faster polling.
TRANSPORT_ALIASES["sqla"] = "syndicate.broker:EmbeddedTransport"


@worker_process_init.connect
def _own_connections_after_fork(**_) -> None:
    """kombu caches its engines on the class, as (engine, sessionmaker): a pool child forked after the
    worker connected (any child that replaces one that died) inherits the parent's SQLite connections,
    and two processes on one connection lose messages. Each child opens its own."""
    for engine, _ in Channel._engines.values():
        engine.dispose(close=False)  # forget the parent's connections without closing them under it
    Channel._engines.clear()


class QueueLockWatch(bootsteps.StartStopStep):
    """Keeps a prefork worker on the embedded broker from hanging for ever after a pool process is killed.

    With a broker that has no socket to watch (this one), Celery's pool hands tasks to its processes
    through one shared pipe, read under one lock (billiard's SimpleQueue). An idle process waits for the
    next task holding that lock; killed there (SIGKILL, the OOM killer), it holds the lock for ever and
    every other process waits on it: the worker takes tasks and runs none (found by bench/chaos.py). So
    every CHECK seconds this looks for a task handed to the pool and taken by no process for WAIT
    seconds. A live holder would have read it at once, so if the lock can't be had, its holder is dead:
    the lock is released, and the next process reads the task. (With Redis the pool uses a pipe per
    process and no shared lock: nothing to watch.)"""

    requires = {"celery.worker.components:Pool"}
    CHECK = 2.0
    WAIT = 10.0

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.stopped = threading.Event()
        self.first_seen: dict[int, float] = {}

    def start(self, worker) -> None:
        pool = getattr(worker.pool, "_pool", None)
        if worker.use_eventloop or pool is None or not hasattr(pool, "_inqueue"):
            return
        threading.Thread(target=self._watch, args=(pool,), name="queue-lock-watch", daemon=True).start()

    def stop(self, worker) -> None:
        self.stopped.set()

    def _watch(self, pool) -> None:
        while not self.stopped.wait(self.CHECK):
            try:
                self.check(pool, time.monotonic())
            except Exception:  # noqa: BLE001 - the pool's internals moved under us: look again next time
                log.exception("queue lock watch")

    def check(self, pool, now: float) -> bool:
        """Release the shared queue's lock if its holder is dead; whether it did."""
        waiting = {id(job) for job in list(pool._cache.values()) if getattr(job, "_worker_pid", 1) is None}
        self.first_seen = {job: self.first_seen.get(job, now) for job in waiting}
        if not any(now - seen >= self.WAIT for seen in self.first_seen.values()):
            return False
        lock = pool._inqueue._rlock
        if lock.acquire(timeout=0.5):  # free: the tasks wait for busy processes, as they should
            lock.release()
            return False
        log.warning("a task has waited %.0f s for a pool process while the pool's queue stayed locked: the "
                    "process holding the lock was killed; releasing it", self.WAIT)
        lock.release()
        self.first_seen.clear()
        return True

