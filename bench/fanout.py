"""Benchmark edition → delivery: one edition cut for N subscribers, sent by real Celery workers on Redis.

    python bench/fanout.py                              # 100,000 subscribers, the three sizes, SQLite, 2 workers
    python bench/fanout.py --subscribers 20000 --naive-sample 300        # a quick run of the matrix
    python bench/fanout.py --database sqlite,postgres --sizes 5,15       # fresh PostgreSQL schemas, dropped after
    python bench/fanout.py --subscribers 20000 --sizes 15 --choices none,spread   # readers' choices, both ways
    python bench/fanout.py --subscribers 50000 --sizes 5 --naive-sample 0 --rounds 5   # medians of 5 rounds

`--choices spread`: readers spread over choices (delivery.choices) as a newsletter that offers them may
see: a tenth with one topic, a tenth with two others (each a story set of its own, rendered once), a
tenth on a weekly digest, the rest (70 %) every story of every edition, decided in the fan-out's one
INSERT … SELECT. `none` (the default): everyone gets the edition as it is, the common case.

The matrix (`--sizes`, nominal KB as mailed): 5, a breaking alert (1 story, the slim template in
bench/templates); 15, the bundled sample digest (4 stories); 64, a big digest (20 stories). Each size on
each database is a run of its own, with a fresh database. Four measurements in a run, on the same machine,
with the same bytes, to the same local SMTP sink (Postfix's `smtp-sink`, which accepts and discards; a
small asyncio sink of this file when it is missing):

  syndicate   `sending.cut` (render once + fan-out) in this process, one `deliver_batch` task per
              batch published after the commit, worker processes started with
              `celery -A syndicate.tasks worker -Q mail`; timed from the cut until every delivery
              row is `sent` (the last row's `sent_at`). A beat-like `deliveries.requeue` runs every
              tick interval meanwhile, as in production, and what it publishes is counted too.
  wire limit  as many smtplib connections (TCP_NODELAY) as there are sending worker processes, each in
              its own process, sending the pre-built bytes of the same message, N messages in all:
              once just before the send (after the cut, the batches not yet published; not timed
              as the send's) and once just after it. The baseline is their mean; how far apart they
              are shows a machine whose speed drifted during the run (over 15 %: "unsteady").
  pipelined   the same over connections of syndicate's own SmtpTransport (TCP_NODELAY, PIPELINING, no
   wire       dot scan): what the workers' client does with no ledger. No target; syndicate / this is
              what the ledger and the per-recipient work cost.
  naive       per recipient one Celery task that renders the edition with Jinja2, inlines the CSS
              with premailer, builds an `EmailMessage` (`mail.message.build_message`), sends it through
              syndicate's SMTP transport (whose pool, if it has one, reuses the connection) and
              records the row; on a sample (`--naive-sample`), with the same number of processes.

Prints a table and a JSON record per run, then the matrix and one JSON line with every record. With
`--rounds N` the whole matrix is measured N times, round after round (a slow quarter of an hour falls on
every case alike), and the targets are judged on each case's median, with the ratio's range beside it:
on a shared machine one run's ratio to the wire moves by ±0.1 with the machine's moment.
Figures are printed, never asserted (shared/STYLE.md): the exit status is 0 whether targets are met or not.
The worker's own logs, the SQLite file and the sink's counter are in a temp folder, removed at
the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from celery import Celery
from kombu import Queue

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the sibling ingest benchmark
from ingest import Database, code_version, feed_document  # noqa: E402
from syndicate.config import Settings  # noqa: E402

# The targets.
TARGET_RATIO_TO_WIRE = 0.7
TARGET_SPEEDUP_VS_NAIVE = 15.0
TARGET_PEAK_RSS_MB = 200.0
TARGET_RECIPIENTS_PER_BROKER_MESSAGE = 200  # at most one broker message per 200 recipients

BENCH_DIR = Path(__file__).resolve().parent
NAIVE_QUEUE = "bench-naive"
SAMPLE_STORIES = 4  # the bundled sample feed's; the rest of the digest is WordPress-like synthetic stories
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ── the naive path: one task per mail, everything done per recipient ─────────


def _naive_config() -> dict:
    """syndicate's own Celery settings (broker, serializer, acks), on a queue of the bench's own."""
    from syndicate import services, tasks

    config = tasks.celery_config(services.current().settings)
    config.update(task_queues=[Queue(NAIVE_QUEUE)], task_default_queue=NAIVE_QUEUE, task_routes={},
                  beat_schedule={})
    return config


# Its own app, so the measured workers run syndicate's unchanged: `celery -A fanout:naive_app worker`.
naive_app = Celery("syndicate-bench-naive", set_as_current=False)
naive_app.add_defaults(_naive_config)


@naive_app.task(name="bench.naive_send")
def naive_send(delivery_id: int) -> str:
    return naive_delivery(delivery_id)


def naive_delivery(delivery_id: int) -> str:
    """What a straightforward implementation does for one recipient: render, inline, build, connect, send, record."""
    from premailer import Premailer
    from sqlalchemy import update

    from syndicate import services, templating, tokens
    from syndicate.db import transaction
    from syndicate.mail.message import Mailbox, build_message, message_id
    from syndicate.mail.transport import Outgoing
    from syndicate.models import Delivery, Newsletter, utcnow
    from syndicate.newsletters import rendering
    from syndicate.newsletters.rendering import mail_html

    svc = services.current()
    settings = svc.settings
    with transaction(svc.Session) as session:  # read everything, then render outside the transaction
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.status != "pending":
            return "not pending"
        subscriber, edition = delivery.subscriber, delivery.edition
        newsletter = session.get(Newsletter, edition.newsletter_id)
        articles = [item.article for item in sorted(edition.items, key=lambda item: item.position)]
    token = tokens.unsubscribe_token(settings.secret_key, subscriber.id, newsletter.id)
    unsubscribe = f"{settings.base_url}/u/{token}"
    context = rendering.render_context(newsletter, edition, articles, settings, edition.subject)
    preferences = f"{settings.base_url}/p/{tokens.preferences_token(settings.secret_key, subscriber.id)}"
    context.update(unsubscribe_url=unsubscribe, preferences_url=preferences)
    html = templating.render(f"email/{newsletter.template}/body.html", **context)
    html = Premailer(html, allow_network=False, allow_loading_external_files=False, remove_classes=False,
                     cssutils_logging_level="CRITICAL").transform()
    text = templating.render(f"email/{newsletter.template}/body.txt", **context)
    domain = newsletter.from_address.rpartition("@")[2]
    mid = message_id(domain, settings.secret_key, delivery.id, edition.id)
    data = build_message(
        sender=Mailbox(newsletter.from_name, newsletter.from_address),
        to=Mailbox(subscriber.name or "", subscriber.email),
        subject=edition.subject, text=text, html=mail_html(html), message_id=mid, date=utcnow(),
        reply_to=newsletter.reply_to,
        headers={"List-Id": f"{newsletter.name} <{newsletter.slug}.{domain}>",
                 "List-Unsubscribe": f"<{unsubscribe}>, <mailto:unsubscribe@{domain}?subject=unsubscribe%20{token}>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "Auto-Submitted": "auto-generated"},
    )
    with svc.transport.connect() as connection:  # the transport's own connection handling, per mail
        reply = connection.send(Outgoing(newsletter.from_address, subscriber.email, data, mid))
    with transaction(svc.Session) as session:
        session.execute(update(Delivery).where(Delivery.id == delivery_id, Delivery.status == "pending")
                        .values(status="sent", sent_at=utcnow(), last_reply=reply, attempts=Delivery.attempts + 1)
                        .execution_options(synchronize_session=False))
    return reply


# ── the SMTP sink ────────────────────────────────────────────────────────────


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def asyncio_sink(port: int, received, ready) -> None:
    """Accepts every message and discards it; counts them. For machines without Postfix's smtp-sink."""
    import asyncio

    async def session(reader, writer):
        writer.write(b"220 bench-sink ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-bench-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    await writer.drain()
                    await reader.readuntil(b"\r\n.\r\n")
                    with received.get_lock():
                        received.value += 1
                    writer.write(b"250 2.0.0 Ok: queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()

    async def main():
        server = await asyncio.start_server(session, "127.0.0.1", port, limit=64 * 2**20, backlog=1000)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class Sink:
    """Postfix's smtp-sink if installed (`-c` prints its running counters, read back here), else asyncio_sink."""

    def __init__(self, data_dir: Path, choice: str):
        self.port = free_port()
        binary = shutil.which("smtp-sink") or next(
            (p for p in ("/usr/sbin/smtp-sink", "/usr/bin/smtp-sink") if os.access(p, os.X_OK)), None)
        if choice == "smtp-sink" and binary is None:
            raise SystemExit("--sink smtp-sink: smtp-sink is not installed (apt-get install postfix)")
        self.process = self.child = None
        if binary and choice != "asyncio":
            # smtp-sink refuses to run as root without -u.
            command = [binary, "-c", *(["-u", "nobody"] if os.geteuid() == 0 else []), f"127.0.0.1:{self.port}", "1000"]
            self.counter = data_dir / "smtp-sink.out"
            self.process = subprocess.Popen(command, stdout=self.counter.open("wb"), stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
            self.pid = self.process.pid
            self.description = "Postfix smtp-sink (accepts and discards): " + " ".join(command)
        else:
            context = multiprocessing.get_context("spawn")
            self.received_value, ready = context.Value("q", 0), context.Event()
            self.child = context.Process(target=asyncio_sink, args=(self.port, self.received_value, ready), daemon=True)
            self.child.start()
            ready.wait(30)
            self.pid = self.child.pid
            self.description = ("asyncio sink of bench/fanout.py (accepts and discards"
                                + ("; smtp-sink not installed)" if binary is None else ")"))
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the SMTP sink did not start: {self.description}") from None
                time.sleep(0.05)
        self.url = f"smtp://127.0.0.1:{self.port}"

    def received(self) -> int:
        """Messages the sink took (a '.' answered) since it started."""
        if self.process is None:
            return self.received_value.value
        counters = re.findall(rb"mesg=(\d+)", self.counter.read_bytes()[-200:])
        return int(counters[-1]) if counters else 0

    def cpu_seconds(self) -> float:
        return process_cpu(self.pid) or 0.0

    def close(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
        elif self.child is not None:
            self.child.terminate()
            self.child.join(5)


# ── processes: workers, their memory and CPU ─────────────────────────────────


def process_cpu(pid: int) -> float | None:
    """utime + stime of one process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


def process_memory(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of one process, in KB."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    values[line[:5]] = int(line.split()[1])
    except OSError:
        return None
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        try:
            children = [int(c) for c in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
        except OSError:
            children = []
        found += children
        stack += children
    return found


class Sampler(threading.Thread):
    """RSS and CPU time of a process and its children, read from /proc every `interval` seconds."""

    def __init__(self, root: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.interval, self.halt = root, interval, threading.Event()
        self.peak_one_kb = self.peak_sum_kb = self.samples = self.processes_peak = 0
        self.cpu_first: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.hwm_kb: dict[int, int] = {}

    def run(self) -> None:
        self.sample()
        while not self.halt.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        total = 0
        pids = [self.root, *descendants(self.root)]
        for pid in pids:
            memory, cpu = process_memory(pid), process_cpu(pid)
            if memory is None or cpu is None:
                continue
            rss, hwm = memory
            total += rss
            self.peak_one_kb = max(self.peak_one_kb, rss)
            self.hwm_kb[pid] = hwm
            self.cpu_first.setdefault(pid, cpu)
            self.cpu_last[pid] = cpu
        self.peak_sum_kb = max(self.peak_sum_kb, total)
        self.processes_peak = max(self.processes_peak, len(pids))
        self.samples += 1

    def stop(self) -> dict:
        self.halt.set()
        self.join()
        self.sample()
        return {
            "peak_rss_one_mb": self.peak_one_kb / 1024,
            "peak_rss_sum_mb": self.peak_sum_kb / 1024,
            "vmhwm_max_mb": max(self.hwm_kb.values(), default=0) / 1024,  # the kernel's own peak, between samples too
            "processes": self.processes_peak,
            "rss_samples": self.samples,
            "cpu_s": sum(self.cpu_last[pid] - self.cpu_first[pid] for pid in self.cpu_last),
        }


def stop_process_group(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM (a Celery worker's warm shutdown), then SIGKILL to its whole process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group is the worker's own (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


class Workers:
    """`celery … worker` in its own process group, logging at INFO to a file: one line per task received."""

    RECEIVED = re.compile(r"Task (\S+)\[[^\]]+\] received")

    def __init__(self, app: str, queue: str, concurrency: int, env: dict, log: Path, name: str):
        self.command = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue,
                        "--concurrency", str(concurrency), "--loglevel", "INFO", "-n", f"{name}@%h",
                        "--without-gossip", "--without-mingle", "--without-heartbeat", "--logfile", str(log)]
        self.log = log
        self.output = log.with_suffix(".out")
        self.process = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL,
                                        stdout=self.output.open("wb"), stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=BENCH_DIR.parent)
        deadline = time.monotonic() + 120
        while not (log.exists() and " ready." in log.read_text(errors="replace")):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.output.read_text(errors="replace")[-2000:]
                self.stop()
                raise SystemExit(f"the worker did not start ({' '.join(self.command)}):\n{tail}")
            time.sleep(0.1)
        # The pool's children are forked before "ready": they are all there to be sampled now.

    @property
    def shown(self) -> str:
        return " ".join(["celery", *self.command[3:-2]])

    def alive(self) -> bool:
        return self.process.poll() is None

    def received(self, task: str) -> int:
        return sum(1 for name in self.RECEIVED.findall(self.log.read_text(errors="replace")) if name == task)

    def errors(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines()
                if "ERROR/" in line or "CRITICAL/" in line][:3]

    def stop(self) -> None:
        stop_process_group(self.process)


# ── the edition and its subscribers ──────────────────────────────────────────


def seed(svc, settings, subscribers: int, naive_sample: int, stories: int,
         template: str = "edition", choices: str = "none") -> tuple[int, int]:
    """Two newsletters of the same stories: the measured one for everyone, a naive one for the first sample.
    `choices`: "spread" gives the measured newsletter's readers choices (see the module's help)."""
    from sqlalchemy import insert, select, update

    from syndicate.cli import demo
    from syndicate.db import transaction
    from syndicate.ingest import feeds
    from syndicate.models import Article, Subscriber, Subscription, utcnow
    from syndicate.newsletters import lists

    with transaction(svc.Session) as session:
        measured, naive = (
            lists.add_newsletter(session, slug=slug, name="The Morning Briefing", from_name="The Morning Briefing",
                                 from_address="briefing@news.example", cron=None, timezone="Europe/Berlin",
                                 max_items=stories, template=template, max_age_hours=0)  # the sample's are old
            for slug in ("morning-briefing", "morning-briefing-naive"))
        newsletter_ids = measured.id, naive.id
    with transaction(svc.Session) as session:  # after the newsletters: their first edition takes these stories
        feeds.ingest(session, feeds.add_feed(session, demo.FEED_URL), demo.sample_feed())
        if stories > SAMPLE_STORIES:
            body, _ = feed_document(0, 0, stories - SAMPLE_STORIES)
            feeds.ingest(session, feeds.add_feed(session, "https://site00000.example/feed/"), body)
    now = utcnow()
    chunk = 10_000
    # Straight inserts: how subscribers arrive is not what this measures.
    with transaction(svc.Session) as session:
        for start in range(0, subscribers, chunk):
            session.execute(insert(Subscriber), [
                dict(email=f"reader{i:07d}@example.org", name="Zoë Ødegård" if i % 3 == 0 else f"Reader {i}",
                     status="confirmed", created_at=now, confirmed_at=now, confirmations_sent=1)
                for i in range(start, min(start + chunk, subscribers))])
        ids = session.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
        for newsletter_id, chosen in zip(newsletter_ids, (ids, ids[:naive_sample]), strict=True):
            for start in range(0, len(chosen), chunk):
                session.execute(insert(Subscription), [
                    dict(subscriber_id=i, newsletter_id=newsletter_id, status="active", created_at=now)
                    for i in chosen[start:start + chunk]])
    if choices == "spread":
        with transaction(svc.Session) as session:
            filed = sorted({c for categories in session.scalars(select(Article.categories)) for c in categories})
            for remainder, values in ((0, dict(topics=filed[:1])), (1, dict(topics=filed[1:3])),
                                      (2, dict(frequency="weekly"))):
                session.execute(update(Subscription).where(Subscription.newsletter_id == newsletter_ids[0],
                                                           Subscription.subscriber_id % 10 == remainder)
                                .values(**values))
    with svc.engine.connect() as connection:  # the statistics autovacuum would have gathered within a minute
        connection.exec_driver_sql("ANALYZE")
        connection.commit()
    return newsletter_ids


# 27 zones, of at least 25 different clocks in any season (07:00 there is 25 or more moments, 24 or more waves
# after the first): the local-time case's readers, in turn.
ZONES = ("Pacific/Kiritimati", "Pacific/Tongatapu", "Pacific/Auckland", "Pacific/Noumea", "Australia/Sydney",
         "Australia/Darwin", "Asia/Tokyo", "Asia/Shanghai", "Asia/Bangkok", "Asia/Dhaka", "Asia/Kathmandu",
         "Asia/Kolkata", "Asia/Karachi", "Asia/Dubai", "Asia/Tehran", "Europe/Moscow", "Europe/Athens",
         "Europe/Berlin", "Europe/London", "Atlantic/Cape_Verde", "America/Noronha", "America/Sao_Paulo",
         "America/St_Johns", "America/New_York", "America/Chicago", "America/Denver", "Pacific/Honolulu")


def seed_local_time(svc, stories: int, template: str) -> int:
    """A third newsletter of the same stories for every subscriber, sent at each reader's local time; the
    readers spread over ZONES in turn."""
    from sqlalchemy import case, func, insert, select, update

    from syndicate.db import transaction
    from syndicate.models import Article, Subscriber, Subscription, utcnow
    from syndicate.newsletters import lists

    now = utcnow()
    with transaction(svc.Session) as session:
        made = lists.add_newsletter(session, slug="morning-briefing-local", name="The Morning Briefing",
                                    from_name="The Morning Briefing", from_address="briefing@news.example",
                                    cron="0 7 * * *", timezone="Europe/Berlin", max_items=stories,
                                    template=template, local_time=True, max_age_hours=0, now=now)
        made.articles_since = session.scalar(select(func.min(Article.first_seen_at)))  # the stories seeded
        session.execute(update(Subscriber).values(timezone=case(
            *[(Subscriber.id % len(ZONES) == i, zone) for i, zone in enumerate(ZONES)])))
        ids = session.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
        for start in range(0, len(ids), 10_000):
            session.execute(insert(Subscription), [
                dict(subscriber_id=i, newsletter_id=made.id, status="active", created_at=now)
                for i in ids[start:start + 10_000]])
        return made.id


class Probe:
    """Reads delivery counts on a plain engine: syndicate's SQLite engine begins every transaction
    IMMEDIATE (a write lock), which a poll every half second must not take from the workers. One
    connection, kept: on PostgreSQL a new one each poll was a backend forked and set up every half second
    (3.7 ms of CPU here) on the cores the workers were being measured on."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        self.engine = sa.create_engine(url, pool_size=1, max_overflow=0,
                                       **({"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}))

    def counts(self, edition_id: int) -> dict[str, int]:
        from sqlalchemy import func, select

        from syndicate.models import Delivery

        with self.engine.connect() as connection:
            return dict(connection.execute(select(Delivery.status, func.count()).where(
                Delivery.edition_id == edition_id).group_by(Delivery.status)).all())

    def sent_span(self, edition_id: int):
        from sqlalchemy import func, select

        from syndicate.models import Delivery

        with self.engine.connect() as connection:
            return connection.execute(select(func.min(Delivery.sent_at), func.max(Delivery.sent_at)).where(
                Delivery.edition_id == edition_id, Delivery.status == "sent")).one()

    def close(self) -> None:
        self.engine.dispose()


def wait_for_deliveries(probe: Probe, edition_id: int, expected: int, workers: Workers, timeout: float,
                        stall: float, tick=None, tick_every: float = 30.0, label: str = "") -> dict:
    """Poll until no row of the edition is open any more; `tick()` every `tick_every` s, as beat would."""
    from syndicate.delivery.deliveries import OPEN

    started = last_tick = last_move = time.monotonic()
    last_sent, next_report, outcome = -1, 0.1, "done"
    while True:
        counts = probe.counts(edition_id)
        sent = counts.get("sent", 0)
        if sum(counts.get(s, 0) for s in OPEN) == 0 and sum(counts.values()) >= expected:
            break
        now = time.monotonic()
        if sent != last_sent:
            last_sent, last_move = sent, now
        if sent >= next_report * expected:
            print(f"  … {label}{sent}/{expected} sent, {now - started:.1f} s", file=sys.stderr)
            next_report += 0.1
        if not workers.alive():
            outcome = "worker exited"
            break
        if now - started > timeout:
            outcome = f"timed out after {timeout:.0f} s"
            break
        if now - last_move > stall:
            outcome = f"stalled: nothing sent for {stall:.0f} s"
            break
        if tick is not None and now - last_tick >= tick_every:
            tick()
            last_tick = now
        time.sleep(0.5)
    return {"outcome": outcome, "counts": counts}


# ── the three measurements ───────────────────────────────────────────────────


def broker_state(broker, queue: str) -> dict:
    """What is left in Redis: messages waiting in the queue, and delivered but not acknowledged."""
    return {"queued": broker.llen(queue), "unacked": broker.hlen("unacked")}


def strangers(broker) -> int:
    """Other clients on the bench's Redis database: a worker of someone else's would take its tasks."""
    db, me = broker.connection_pool.connection_kwargs.get("db", 0), broker.client_id()
    return sum(1 for client in broker.client_list() if int(client.get("db", -1)) == db and int(client["id"]) != me)


def refused(edition) -> None:
    """A cut the pre-send checks blocked sends nothing: say why at once, not after --timeout."""
    if edition.status == "blocked":
        raise SystemExit(f"the bench's edition was blocked, nothing was sent: {edition.note}")


def run_syndicate(svc, settings, probe: Probe, newsletter_id: int, args, env: dict, data_dir: Path,
                  sink: Sink, broker, between=None) -> dict:
    """The edition cut and sent by the workers. `between(edition_id)`, if given, runs after the cut and before
    the batches are published (the wire measured just before the send); its time is not the send's."""
    from sqlalchemy import func, select

    from syndicate import tasks
    from syndicate.db import transaction
    from syndicate.delivery import deliveries, sending
    from syndicate.models import Edition, EditionVariant, Newsletter, utcnow

    workers = Workers("syndicate.tasks", "mail", args.workers, env, data_dir / "worker-mail.log", "bench-mail")
    published = {"cut": 0, "requeue": 0}

    def tick():  # what the beat tick does for editions already sending (deliveries.requeue), here
        with transaction(svc.Session) as session:
            batches = deliveries.requeue(session, settings, utcnow())
        for batch in batches:
            tasks.deliver_batch.delay(*batch)
        published["requeue"] += len(batches)

    sampler = Sampler(workers.process.pid)
    sampler.start()
    sink_before, sink_cpu = sink.received(), sink.cpu_seconds()
    try:
        started, t0 = utcnow(), time.perf_counter()
        with transaction(svc.Session) as session:
            cut = sending.cut(session, session.get(Newsletter, newsletter_id), settings, now=started)
            edition_id, batches = cut.edition.id, cut.batches
            refused(cut.edition)
        cut_s = time.perf_counter() - t0
        before = None
        if between is not None:
            paused = time.perf_counter()
            before = between(edition_id)
            paused = time.perf_counter() - paused
            started, t0 = started + timedelta(seconds=paused), t0 + paused  # the send's clock leaves it out
            sink_before, sink_cpu = sink.received(), sink.cpu_seconds()  # and so does its count at the sink
        for batch in batches:  # queue after commit, as tasks.tick does
            tasks.deliver_batch.delay(*batch)
        published["cut"] = len(batches)
        publish_s = time.perf_counter() - t0 - cut_s
        done = wait_for_deliveries(probe, edition_id, args.subscribers, workers, args.timeout, args.stall,
                                   tick=tick, tick_every=settings.tick_interval)
        resources = sampler.stop()
        left_in_broker = broker_state(broker, "mail")
    finally:
        if sampler.is_alive():
            sampler.stop()
        workers.stop()
    first, last = probe.sent_span(edition_id)
    tick()  # closes the finished edition (and would hand out anything left open)
    with transaction(svc.Session) as session:
        edition = session.get(Edition, edition_id)
        edition_status, html_bytes, text_bytes = edition.status, len(edition.html.encode()), len(edition.text.encode())
        variants = session.scalar(select(func.count()).where(EditionVariant.edition_id == edition_id))
    sent = done["counts"].get("sent", 0)
    elapsed = (last - started).total_seconds() if last else time.perf_counter() - t0
    received = workers.received("syndicate.deliver_batch")
    return {
        "edition_id": edition_id, "outcome": done["outcome"], "counts": done["counts"], "sent": sent,
        "edition_status": edition_status, "html_bytes": html_bytes, "text_bytes": text_bytes,
        "wall_s": elapsed, "msgs_per_s": sent / elapsed if elapsed else 0.0,
        "cut_s": cut_s, "publish_s": publish_s, "variants_rendered": variants,
        "first_sent_after_s": (first - started).total_seconds() if first else None,
        "broker_messages": published["cut"] + published["requeue"],
        "published_by_cut": published["cut"], "published_by_requeue": published["requeue"],
        "received_by_workers": received, **left_in_broker,
        "sink_received": sink.received() - sink_before, "sink_cpu_s": sink.cpu_seconds() - sink_cpu,
        "worker_command": workers.shown, "worker_errors": workers.errors(), "wire_before": before,
        **resources,
    }


def run_local_time(svc, settings, probe: Probe, newsletter_id: int, args, env: dict, data_dir: Path,
                   sink: Sink, broker) -> dict:
    """The same send at each reader's local time: the regular run cut at its first wave (render once, the
    fan-out, the later waves' rows held), then the tick at a moment past the last wave, so every wave is due
    in this one run and its msgs/s compares with the single wave's. Timed as run_syndicate is, from the cut.

    As in production: the cut hands workers its first wave's batches, then the tick (here at once) wakes every
    other wave and hands out theirs. Each wave's rows are a run of ids of its own, so its batches don't reach
    into another's.
    """
    from syndicate import tasks
    from syndicate.db import transaction
    from syndicate.delivery import deliveries, sending, waves
    from syndicate.models import Edition, Newsletter, utcnow
    from syndicate.newsletters import schedules

    workers = Workers("syndicate.tasks", "mail", args.workers, env, data_dir / "worker-local.log", "bench-local")
    published = {"waves": 0, "requeue": 0}
    with transaction(svc.Session) as session:
        newsletter = session.get(Newsletter, newsletter_id)
        slot = newsletter.next_run_at
        first = schedules.first_wave(session, newsletter, slot)
        past_last = slot + schedules.WIDEST  # after every zone's 07:00 of that date

    def tick():
        with transaction(svc.Session) as session:
            batches = deliveries.requeue(session, settings, past_last)
        for batch in batches:
            tasks.deliver_batch.delay(*batch)
        published["requeue"] += len(batches)

    sampler = Sampler(workers.process.pid)
    sampler.start()
    try:
        started, t0 = utcnow(), time.perf_counter()
        with transaction(svc.Session) as session:
            cut = sending.run_regular(session, newsletter_id, settings, first)
            edition_id, batches = cut.edition.id, cut.batches
            refused(cut.edition)
            held = deliveries.counts(session, edition_id).get("waiting", 0)
        cut_s = time.perf_counter() - t0
        for batch in batches:
            tasks.deliver_batch.delay(*batch)
        first_wave = len(batches)
        t1 = time.perf_counter()
        with transaction(svc.Session) as session:  # the tick past the last wave: every other wave at once
            batches = deliveries.wake(session, settings, past_last)
        for batch in batches:
            tasks.deliver_batch.delay(*batch)
        wake_s = time.perf_counter() - t1
        published["waves"] = first_wave + len(batches)
        with transaction(svc.Session) as session:
            said = waves.summary(session, session.get(Edition, edition_id))
        done = wait_for_deliveries(probe, edition_id, args.subscribers, workers, args.timeout, args.stall,
                                   tick=tick, tick_every=settings.tick_interval, label="local time: ")
        resources = sampler.stop()
    finally:
        if sampler.is_alive():
            sampler.stop()
        workers.stop()
    _, last = probe.sent_span(edition_id)
    tick()
    with transaction(svc.Session) as session:
        edition_status = session.get(Edition, edition_id).status
    sent = done["counts"].get("sent", 0)
    elapsed = (last - started).total_seconds() if last else time.perf_counter() - t0
    return {
        "edition_id": edition_id, "outcome": done["outcome"], "sent": sent, "edition_status": edition_status,
        "waves": said["total"] if said else 0, "held_at_cut": held, "wall_s": elapsed,
        "msgs_per_s": sent / elapsed if elapsed else 0.0, "cut_s": cut_s, "wake_s": wake_s,
        "broker_messages": sum(published.values()), **{f"published_by_{k}": n for k, n in published.items()},
        "first_wave_batches": first_wave,
        "worker_errors": workers.errors(), **resources,
    }


def wire_sender(url: str, data: bytes, count: int, index: int, gate, results, pipelined: bool) -> None:
    """One connection, pre-built bytes, one message after the other: what the wire takes.

    smtplib's `sendmail` (the issue's wire limit): MAIL, RCPT, DATA and the message, each waiting for
    its reply, and the message scanned for dots; TCP_NODELAY set as syndicate sets it (sendmail writes
    each command and the whole DATA in one `sendall`, so it makes little odds here, but the limit is
    the best the wire does). Pipelined: a connection of syndicate's own `SmtpTransport`, opened as the
    workers open theirs (TCP_NODELAY included), sending as they send (MAIL, RCPT and DATA in one
    write; the message as it is), but with no ledger."""
    import smtplib
    from contextlib import nullcontext

    from syndicate.config import parse_smtp_url
    from syndicate.mail.smtp import SmtpTransport, no_delay
    from syndicate.mail.transport import Outgoing

    settings = parse_smtp_url(url)
    if pipelined:
        transport = SmtpTransport(settings)
        session = transport.connect()
    else:
        transport, smtp = None, smtplib.SMTP(settings.host, settings.port, timeout=60)
        no_delay(smtp.sock)
        smtp.ehlo()
        session = nullcontext()
    with session as connection:
        if pipelined:
            connection.smtp.ehlo_or_helo_if_needed()  # greeted before the clock starts, as smtplib's is
        gate.wait()
        t0 = time.monotonic()
        for i in range(count):
            recipient = f"wire{index}-{i}@example.org"
            if pipelined:
                connection.send(Outgoing("briefing@news.example", recipient, data, "<wire@example.org>",
                                         transparent=True))
            else:
                smtp.sendmail("briefing@news.example", [recipient], data)
        t1 = time.monotonic()
    if transport is not None:
        transport.close()
    else:
        smtp.quit()
    results.put((t0, t1, count))


def run_wire(sink: Sink, data: bytes, messages: int, connections: int, pipelined: bool = False) -> dict:
    context = multiprocessing.get_context("spawn")
    gate, results = context.Event(), context.Queue()
    shares = [messages // connections + (1 if i < messages % connections else 0) for i in range(connections)]
    senders = [context.Process(target=wire_sender, args=(sink.url, data, share, i, gate, results, pipelined))
               for i, share in enumerate(shares)]
    sink_before, sink_cpu = sink.received(), sink.cpu_seconds()
    for sender in senders:
        sender.start()
    time.sleep(1.0)  # every sender connected and greeted
    gate.set()
    spans = [results.get(timeout=3600) for _ in senders]
    for sender in senders:
        sender.join()
    wall = max(t1 for _, t1, _ in spans) - min(t0 for t0, _, _ in spans)
    sent = sum(n for _, _, n in spans)
    return {"connections": connections, "messages": sent, "wall_s": wall, "msgs_per_s": sent / wall,
            "mb_per_s": sent * len(data) / wall / 2**20, "sink_received": sink.received() - sink_before,
            "sink_cpu_s": sink.cpu_seconds() - sink_cpu}


def bracket(before: dict, after: dict) -> dict:
    """The wire measured just before the send and just after it, as one baseline: their mean, each, and how far
    apart they are (a machine whose speed drifts during the run shows it here, not in the ratio alone)."""
    mean = (before["msgs_per_s"] + after["msgs_per_s"]) / 2
    return {**after, "msgs_per_s": mean, "mb_per_s": (before["mb_per_s"] + after["mb_per_s"]) / 2,
            "before_msgs_per_s": before["msgs_per_s"],
            "after_msgs_per_s": after["msgs_per_s"],
            "spread": abs(before["msgs_per_s"] - after["msgs_per_s"]) / mean if mean else 0.0,
            "messages": before["messages"] + after["messages"], "wall_s": before["wall_s"] + after["wall_s"],
            "sink_received": before["sink_received"] + after["sink_received"],
            "sink_cpu_s": before["sink_cpu_s"] + after["sink_cpu_s"]}


def run_naive(svc, settings, probe: Probe, newsletter_id: int, args, env: dict, data_dir: Path, sink: Sink) -> dict:
    from sqlalchemy import select

    from syndicate.db import transaction
    from syndicate.delivery import sending
    from syndicate.models import Delivery, Newsletter, utcnow

    if naive_app._pool is not None:  # tasks.configure, for this run's database, closed kombu's pools
        naive_app._pool.force_close_all()
        naive_app._pool = None
    if "amqp" in naive_app.__dict__:
        naive_app.amqp._producer_pool = None
    naive_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))}
    workers = Workers("fanout:naive_app", NAIVE_QUEUE, args.workers, naive_env, data_dir / "worker-naive.log",
                      "bench-naive")
    sampler = Sampler(workers.process.pid)
    sampler.start()
    sink_before = sink.received()
    try:
        started, t0 = utcnow(), time.perf_counter()
        with transaction(svc.Session) as session:
            cut = sending.cut(session, session.get(Newsletter, newsletter_id), settings, now=started)
            edition_id = cut.edition.id
            refused(cut.edition)
            ids = session.scalars(select(Delivery.id).where(Delivery.edition_id == edition_id)
                                  .order_by(Delivery.id)).all()
        for delivery_id in ids:  # one task per mail
            naive_send.delay(delivery_id)
        publish_s = time.perf_counter() - t0
        done = wait_for_deliveries(probe, edition_id, len(ids), workers, args.timeout, args.stall,
                                   label="naive: ")
        resources = sampler.stop()
    finally:
        if sampler.is_alive():
            sampler.stop()
        workers.stop()
    _, last = probe.sent_span(edition_id)
    sent = done["counts"].get("sent", 0)
    elapsed = (last - started).total_seconds() if last else time.perf_counter() - t0
    return {"outcome": done["outcome"], "counts": done["counts"], "sent": sent, "wall_s": elapsed,
            "msgs_per_s": sent / elapsed if elapsed else 0.0, "publish_s": publish_s,
            "received_by_workers": workers.received("bench.naive_send"),
            "sink_received": sink.received() - sink_before, "worker_command": workers.shown,
            "worker_errors": workers.errors(), **resources}


def sample_message(svc, settings, edition_id: int) -> bytes:
    """The bytes one recipient of the measured edition got, built as the workers build them."""
    from sqlalchemy import select

    from syndicate.db import transaction
    from syndicate.delivery.copies import MessageFactory
    from syndicate.models import Delivery, Edition, Newsletter

    with transaction(svc.Session) as session:
        edition = session.get(Edition, edition_id)
        delivery = session.scalars(select(Delivery).where(Delivery.edition_id == edition_id)
                                   .order_by(Delivery.id).limit(1)).one()
        factory = MessageFactory(settings, session.get(Newsletter, edition.newsletter_id), edition)
        subscriber = delivery.subscriber
        return factory(delivery.id, subscriber.id, subscriber.email, subscriber.name).data


# ── report ───────────────────────────────────────────────────────────────────


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def report(args, main: dict, wire: dict, pipelined: dict, naive: dict, message_bytes: int, sink: Sink, loads,
           versions) -> dict:
    import syndicate

    ratio = main["msgs_per_s"] / wire["msgs_per_s"] if wire["msgs_per_s"] else 0.0
    ratio_pipelined = main["msgs_per_s"] / pipelined["msgs_per_s"] if pipelined["msgs_per_s"] else 0.0
    speedup = main["msgs_per_s"] / naive["msgs_per_s"] if naive["msgs_per_s"] else 0.0
    per_message = main["sent"] / main["broker_messages"] if main["broker_messages"] else 0.0
    complete = main["outcome"] == "done" and main["sent"] == args.subscribers
    met = judged(complete, ratio, speedup, main["peak_rss_one_mb"], main["broker_messages"], args.subscribers)

    def row(label, value="", target="", status=""):
        return f"  {label:<44}{value:>14}  {target:<22}{status}"

    def ms(seconds, count):
        return f"{1000 * seconds / count:.2f}" if count else "—"

    def wire_rows(title: str, figures: dict) -> list[str]:
        return [title,
                row("wall time (s)", f"{figures['wall_s']:.1f}"),
                row("messages/s", f"{figures['msgs_per_s']:.0f}"),
                *([row("  just before the send / just after it", f"{figures['before_msgs_per_s']:.0f} / "
                       f"{figures['after_msgs_per_s']:.0f}"),
                   row("  apart (of their mean)", f"{figures['spread']:.0%}", f"≤ {UNSTEADY:.0%}",
                       "" if figures["spread"] <= UNSTEADY else "unsteady: the ratio carries it")]
                  if "spread" in figures else []),
                row("MB/s", f"{figures['mb_per_s']:.0f}"),
                row("sink received / its CPU per message (ms)",
                    f"{figures['sink_received']:,} / {ms(figures['sink_cpu_s'], figures['sink_received'])}"),
                ""]

    code = versions[0] if versions[0] == versions[1] else f"{versions[0]} at start, {versions[1]} at end"
    lines = [
        f"fanout: {args.subscribers:,} confirmed subscribers, {args.database}, batch {args.batch_size}, "
        f"{args.workers} worker processes, {os.cpu_count()} CPUs",
        f"code: {code}; load average at start / end: " + " / ".join(f"{a:.1f}" for a in loads),
        f"message: {args.stories} stories, template {args.template}, {message_bytes / 1024:.1f} KB on the wire "
        f"(edition HTML {main['html_bytes'] / 1024:.1f} KB, text {main['text_bytes'] / 1024:.1f} KB, "
        "quoted-printable)",
        *([f"PostgreSQL: synchronous_commit = {main['synchronous_commit']} for the workers' connections, "
           + ("and for each sent mark too (--durable-sent)" if args.durable_sent else
              "off for the sent marks (the ledger's own, SYNDICATE_DURABLE_SENT unset)")]
          if main.get("synchronous_commit") else []),
        f"syndicate imported from {Path(syndicate.__file__).parent}; other clients on the Redis database at the start: "
        f"{main['strangers_on_redis']}",
        f"sink: {sink.description}",
        f"workers: {main['worker_command']}",
        "",
        f"syndicate: cut (render + fan-out) → deliver_batch tasks on Redis → {args.workers} prefork processes → sink",
        row("recipients sent", f"{main['sent']:,}"),
        row("outcome", main["outcome"]),
        row("rows by status", ", ".join(f"{k} {v}" for k, v in sorted(main["counts"].items()))),
        row("edition status afterwards", main["edition_status"]),
        row("wall time, cut → last row sent (s)", f"{main['wall_s']:.1f}"),
        row("  cut: render + fan-out + commit (s)", f"{main['cut_s']:.2f}"),
        row("  story sets rendered besides the edition's", f"{main.get('variants_rendered', 0)}"),
        row("  publishing the batches (s)", f"{main['publish_s']:.2f}"),
        row("  first row sent after (s)", "—" if main["first_sent_after_s"] is None
            else f"{main['first_sent_after_s']:.2f}"),
        row("messages/s", f"{main['msgs_per_s']:.0f}"),
        row("broker messages (deliver_batch published)", f"{main['broker_messages']}",
            f"≤ {args.subscribers // TARGET_RECIPIENTS_PER_BROKER_MESSAGE} (1 per 200)",
            verdict(met["broker_messages"])),
        row("  by the cut / by requeue ticks", f"{main['published_by_cut']} / {main['published_by_requeue']}"),
        row("  received by workers (worker log)", f"{main['received_by_workers']}"),
        row("  left in Redis: queued / unacked", f"{main['queued']} / {main['unacked']}"),
        row("  recipients per broker message", f"{per_message:.0f}"),
        row("peak worker RSS, largest process (MB)", f"{main['peak_rss_one_mb']:.0f}", f"≤ {TARGET_PEAK_RSS_MB:.0f}",
            verdict(met["peak_worker_rss"])),
        row("peak worker RSS, all processes (MB)", f"{main['peak_rss_sum_mb']:.0f}"),
        row("  VmHWM of the largest process (MB)", f"{main['vmhwm_max_mb']:.0f}"),
        row("  processes / RSS samples", f"{main['processes']} / {main['rss_samples']}"),
        row("worker CPU (s)", f"{main['cpu_s']:.1f}"),
        row("  worker CPU per message (ms)", ms(main["cpu_s"], main["sent"])),
        row(f"  worker CPU / wall (of {os.cpu_count()} CPUs)", f"{main['cpu_s'] / main['wall_s']:.2f}"),
        row("sink received / its CPU per message (ms)",
            f"{main['sink_received']:,} / {ms(main['sink_cpu_s'], main['sink_received'])}"),
        "",
        *local_rows(main.get("local_time"), main, row, ms),
        *wire_rows(f"wire limit: {wire['connections']} smtplib connections (TCP_NODELAY), each in its own process, "
                   f"pre-built bytes, all {args.subscribers:,} messages just before the send and again just after "
                   "it; their mean", wire),
        *wire_rows(f"pipelined wire: {pipelined['connections']} connections of syndicate's SmtpTransport "
                   "(TCP_NODELAY, PIPELINING, no dot scan), each in its own process, pre-built bytes, no ledger, all "
                   f"{pipelined['messages']:,} messages", pipelined),
        f"naive: one task per mail (Jinja2 + premailer + build_message + transport send + record), "
        f"{naive['sent']:,} recipients",
        row("outcome", naive["outcome"]),
        row("wall time, cut → last row sent (s)", f"{naive['wall_s']:.1f}"),
        row("  publishing one task per mail (s)", f"{naive['publish_s']:.2f}"),
        row("messages/s", f"{naive['msgs_per_s']:.1f}"),
        row("tasks received by workers", f"{naive['received_by_workers']:,}"),
        row("worker CPU per message (ms)", ms(naive["cpu_s"], naive["sent"])),
        row("peak worker RSS, largest / all (MB)", f"{naive['peak_rss_one_mb']:.0f} / {naive['peak_rss_sum_mb']:.0f}"),
        "",
        "against the targets",
        row("ratio to wire = syndicate / wire", f"{ratio:.2f}", f"≥ {TARGET_RATIO_TO_WIRE}",
            verdict(met["ratio_to_wire"])),
        row("speedup vs naive = syndicate / naive", f"{speedup:.1f}", f"≥ {TARGET_SPEEDUP_VS_NAIVE:.0f}",
            verdict(met["speedup_vs_naive"])),
        row("ratio to pipelined wire (no target: the ledger's cost)", f"{ratio_pipelined:.2f}"),
    ]
    for phase, figures in (("syndicate", main), ("local time", main.get("local_time") or {"worker_errors": []}),
                           ("naive", naive)):
        for line in figures["worker_errors"]:
            lines.append(f"  {phase} worker error: {line[:200]}")
    print("\n".join(lines))
    return {
        "bench": "fanout", "code": versions[0], "code_at_end": versions[1], "cpus": os.cpu_count(),
        "load_average": loads,
        "recipients": main["sent"], "subscribers": args.subscribers, "database": args.database,
        "msgs_per_s": round(main["msgs_per_s"], 1), "wire_msgs_per_s": round(wire["msgs_per_s"], 1),
        "naive_msgs_per_s": round(naive["msgs_per_s"], 2), "ratio_to_wire": round(ratio, 3),
        "wire_pipelined_msgs_per_s": round(pipelined["msgs_per_s"], 1),
        "ratio_to_pipelined_wire": round(ratio_pipelined, 3),
        "speedup_vs_naive": round(speedup, 2), "peak_worker_rss_mb": round(main["peak_rss_one_mb"], 1),
        "peak_worker_rss_sum_mb": round(main["peak_rss_sum_mb"], 1), "broker_messages": main["broker_messages"],
        "broker_messages_received": main["received_by_workers"], "batch_size": args.batch_size,
        "workers": args.workers, "synchronous_commit": main.get("synchronous_commit"),
        "durable_sent": args.durable_sent, "stories": args.stories,
        "template": args.template, "message_bytes": message_bytes,
        "wall_s": round(main["wall_s"], 2), "cut_s": round(main["cut_s"], 3),
        "choices": args.choices, "variants_rendered": main.get("variants_rendered", 0),
        "worker_cpu_ms_per_msg": round(1000 * main["cpu_s"] / main["sent"], 3) if main["sent"] else None,
        "naive_sample": naive["sent"], "naive_cpu_ms_per_msg": round(1000 * naive["cpu_s"] / naive["sent"], 2)
        if naive["sent"] else None,
        "wire_connections": wire["connections"], "wire_messages": wire["messages"],
        "wire_before_msgs_per_s": round(wire["before_msgs_per_s"], 1),
        "wire_after_msgs_per_s": round(wire["after_msgs_per_s"], 1), "wire_spread": round(wire["spread"], 3),
        "sink": "smtp-sink" if sink.process is not None else "asyncio",
        "outcome": main["outcome"], "left_in_redis": {"queued": main["queued"], "unacked": main["unacked"]},
        "targets_met": met,
        **({"local_time": {k: round(v, 3) if isinstance(v, float) else v for k, v in main["local_time"].items()
                           if k in LOCAL_KEYS}} if main.get("local_time") else {}),
    }


UNSTEADY = 0.15  # the two wire runs this far apart: the machine's speed drifted during the run


def judged(complete: bool, ratio: float, speedup: float, rss_mb: float, broker_messages: int,
           subscribers: int) -> dict[str, bool]:
    """The issue's targets, met or not; none is met by a run that didn't send every row."""
    return {
        "ratio_to_wire": complete and ratio >= TARGET_RATIO_TO_WIRE,
        "speedup_vs_naive": complete and speedup >= TARGET_SPEEDUP_VS_NAIVE,
        "peak_worker_rss": rss_mb <= TARGET_PEAK_RSS_MB,
        "broker_messages": complete and broker_messages * TARGET_RECIPIENTS_PER_BROKER_MESSAGE <= subscribers,
    }


def _mark(record: dict, target: str) -> str:
    return "✓" if record["targets_met"][target] else "✗"

LOCAL_KEYS = ("order", "waves", "sent", "outcome", "edition_status", "held_at_cut", "msgs_per_s",
              "ratio_to_single_wave", "wall_s", "cut_s", "wake_s", "broker_messages", "first_wave_batches",
              "published_by_waves", "published_by_requeue", "peak_rss_one_mb", "cpu_s")
TARGET_LOCAL_TIME = 0.9  # the issue's: local-time waves cost at most 10 % of the single wave's msgs/s


def local_rows(local: dict | None, main: dict, row, ms) -> list[str]:
    if not local:
        return []
    return [
        f"at each reader's local time ({local['order']}): the same edition, readers over {len(ZONES)} zones, cut at "
        "the first wave, every later wave made due by one tick past the last",
        row("recipients sent / outcome", f"{local['sent']:,}", local["outcome"]),
        row("waves (distinct moments) / held at the cut", f"{local['waves']} / {local['held_at_cut']:,}"),
        row("edition status afterwards", local["edition_status"]),
        row("wall time, cut → last row sent (s)", f"{local['wall_s']:.1f}"),
        row("  cut: render + fan-out + commit (s)", f"{local['cut_s']:.2f}",
            f"single wave: {main['cut_s']:.2f}"),
        row("  the tick waking the later waves, handing out their batches (s)", f"{local['wake_s']:.2f}"),
        row("messages/s", f"{local['msgs_per_s']:.0f}", f"≥ {TARGET_LOCAL_TIME:.0%} of {main['msgs_per_s']:.0f}",
            verdict(local["ratio_to_single_wave"] >= TARGET_LOCAL_TIME and local["outcome"] == "done")),
        row("  ratio to the single wave", f"{local['ratio_to_single_wave']:.2f}"),
        row("broker messages: all waves / requeue", f"{local['published_by_waves']} / {local['published_by_requeue']}"),
        row("    of them, the first wave's at the cut", f"{local['first_wave_batches']}"),
        row("peak worker RSS, largest process (MB)", f"{local['peak_rss_one_mb']:.0f}"),
        row("  worker CPU per message (ms)", ms(local["cpu_s"], local["sent"])),
        "",
    ]


# The matrix: the sizes readers get. Nominal KB as mailed → stories in the edition (the bundled sample
# feed's first, then WordPress-like synthetic ones) and the template: a breaking alert in a slim frame
# (bench/templates), the sample digest and a big digest in the bundled one.
SIZES = {"5": ("breaking alert", 1, "alert"), "15": ("normal digest", SAMPLE_STORIES, "edition"),
         "64": ("big digest", 20, "edition")}
TEMPLATE_DIR = BENCH_DIR / "templates"  # the alert's slim template ('alert'); the bundled 'edition' for the rest


def run_case(args, kind: str, stories: int, template: str, sink: Sink, broker, choices: str = "none") -> dict:
    """One edition size on one database: seed, syndicate, both wires and naive, each to the same sink."""
    from syndicate import db, tasks
    from syndicate.config import Settings

    case = argparse.Namespace(**{**vars(args), "database": kind, "stories": stories, "template": template,
                                 "choices": choices})
    load_at_start, version_at_start = os.getloadavg()[0], code_version()
    broker.flushdb()
    data_dir = Path(tempfile.mkdtemp(prefix="syndicate-fanout-"))
    database = probe = svc = None
    try:
        database = Database(kind, str(data_dir), args.database_url)
        if kind == "postgres":
            # PostgreSQL's own default, which a server tuned for tests may have turned off: every commit but the
            # sent marks is on disk before it returns, as in production; the marks are too with --durable-sent.
            database.url += "%20-csynchronous_commit%3Don"
        variables = {
            "SYNDICATE_DATA_DIR": str(data_dir), "SYNDICATE_DATABASE_URL": database.url,
            "SYNDICATE_BROKER_URL": args.redis_url, "SYNDICATE_SMTP_URL": sink.url,
            "SYNDICATE_BATCH_SIZE": str(args.batch_size), "SYNDICATE_SECRET_KEY": "bench-fanout",
            "SYNDICATE_BASE_URL": "https://news.example", "SYNDICATE_TEMPLATE_DIR": str(TEMPLATE_DIR),
            "SYNDICATE_DURABLE_SENT": "1" if args.durable_sent else "0",
            # The stories' pages are on made-up domains: asking them at the cut timed the resolver (5 s for
            # the 64 KB edition's 20 stories), not the fan-out. In production the tick asks them before the cut.
            "SYNDICATE_LINK_CHECK": "0",
        }
        env = {**os.environ, **variables}
        settings = Settings.from_env(env)
        svc = tasks.configure(settings)
        db.upgrade(svc.engine)
        print(f"seeding {args.subscribers:,} subscribers, {stories} stories, template {template} ({kind}) …",
              file=sys.stderr)
        measured_id, naive_id = seed(svc, settings, args.subscribers, args.naive_sample, stories, template, choices)
        local_id = seed_local_time(svc, stories, template) if args.local_time else None
        probe = Probe(database.url)

        print(f"syndicate: cut and send to {args.subscribers:,} …", file=sys.stderr)
        if others := strangers(broker):
            print(f"warning: {others} other client(s) on {args.redis_url}: a worker among them would take the "
                  "bench's tasks", file=sys.stderr)
        local = None
        if local_id is not None and args.local_time == "before":  # the order's own effect (a warm cache), seen
            print(f"local time (first): the same {args.subscribers:,} over {len(ZONES)} zones …", file=sys.stderr)
            local = run_local_time(svc, settings, probe, local_id, case, env, data_dir, sink, broker)
        def wire_before(edition_id: int) -> dict:
            print(f"wire limit (before the send): {args.subscribers:,} messages over {args.workers} connections …",
                  file=sys.stderr)
            return run_wire(sink, sample_message(svc, settings, edition_id), args.subscribers, args.workers)

        main_figures = run_syndicate(svc, settings, probe, measured_id, case, env, data_dir, sink, broker,
                                     between=wire_before)
        main_figures["strangers_on_redis"] = others
        if kind == "postgres":
            with svc.engine.connect() as connection:
                main_figures["synchronous_commit"] = connection.exec_driver_sql("SHOW synchronous_commit").scalar()
        if local_id is not None:
            if local is None:
                print(f"local time: the same {args.subscribers:,} over {len(ZONES)} zones …", file=sys.stderr)
                local = run_local_time(svc, settings, probe, local_id, case, env, data_dir, sink, broker)
            local["order"] = f"{args.local_time} the single wave"
            local["ratio_to_single_wave"] = (local["msgs_per_s"] / main_figures["msgs_per_s"]
                                             if main_figures["msgs_per_s"] else 0.0)
            main_figures["local_time"] = local
            print(f"  local time: {local['waves']} waves, {local['msgs_per_s']:,.0f} msgs/s "
                  f"({local['ratio_to_single_wave']:.2f} of the single wave's {main_figures['msgs_per_s']:,.0f}), "
                  f"cut {local['cut_s']:.2f} s (single wave: {main_figures['cut_s']:.2f} s), "
                  f"{local['sent']:,} sent, {local['outcome']}", file=sys.stderr)
        message = sample_message(svc, settings, main_figures["edition_id"])
        print(f"wire limit (after the send): {args.subscribers:,} messages over {args.workers} connections …",
              file=sys.stderr)
        wire = bracket(main_figures.pop("wire_before"), run_wire(sink, message, args.subscribers, args.workers))
        print(f"pipelined wire: {args.subscribers:,} messages over {args.workers} connections …", file=sys.stderr)
        pipelined = run_wire(sink, message, args.subscribers, args.workers, pipelined=True)
        if args.naive_sample:
            print(f"naive: {args.naive_sample:,} recipients, one task each …", file=sys.stderr)
            naive = run_naive(svc, settings, probe, naive_id, case, env, data_dir, sink)
        else:
            naive = NO_NAIVE
        loads = (load_at_start, os.getloadavg()[0])
        return report(case, main_figures, wire, pipelined, naive, len(message), sink, loads,
                      (version_at_start, code_version()))
    finally:
        if probe is not None:
            probe.close()
        if svc is not None:
            svc.close()
        broker.flushdb()
        if args.keep:
            print(f"kept {data_dir}" + (f" and schema {database.schema} (DROP SCHEMA {database.schema} CASCADE)"
                                        if database is not None and database.schema else ""), file=sys.stderr)
        else:
            if database is not None:
                database.drop()
            shutil.rmtree(data_dir, ignore_errors=True)


NO_NAIVE = {"outcome": "not run (--naive-sample 0)", "counts": {}, "sent": 0, "wall_s": 0.0, "msgs_per_s": 0.0,
            "publish_s": 0.0, "received_by_workers": 0, "cpu_s": 0.0, "peak_rss_one_mb": 0.0,
            "peak_rss_sum_mb": 0.0, "worker_errors": []}


def summary(records: list[dict]) -> str:
    """The matrix, one line per size and database."""
    head = ("size", "db", "readers", "KB", "msgs/s", "wire", "pipelined", "÷wire", "÷pipe", "×naive", "RSS one/all",
            "broker", "CPU/msg", "load")
    lines = ["", "matrix (" + ", ".join(f"{k} KB: {name}, {n} stor{'y' if n == 1 else 'ies'}, template {t}"
                                        for k, (name, n, t) in SIZES.items()) + ")",
             "  " + "".join(f"{h:>12}" for h in head)]
    for r in records:
        cells = (r["size"], r["database"], f"{r['recipients']:,}", f"{r['message_bytes'] / 1024:.1f}",
                 f"{r['msgs_per_s']:,.0f}", f"{r['wire_msgs_per_s']:,.0f}", f"{r['wire_pipelined_msgs_per_s']:,.0f}",
                 f"{r['ratio_to_wire']:.2f} {_mark(r, 'ratio_to_wire')}", f"{r['ratio_to_pipelined_wire']:.2f}",
                 f"{r['speedup_vs_naive']:.1f} {_mark(r, 'speedup_vs_naive')}" if r["naive_sample"] else "not run",
                 f"{r['peak_worker_rss_mb']:.0f}/{r['peak_worker_rss_sum_mb']:.0f} {_mark(r, 'peak_worker_rss')}",
                 f"{r['broker_messages']} {_mark(r, 'broker_messages')}",
                 f"{r['worker_cpu_ms_per_msg'] or 0:.2f} ms", "/".join(f"{a:.1f}" for a in r["load_average"]))
        lines.append("  " + "".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def medians(records: list[dict]) -> list[dict]:
    """Each case (size, database, choices) over its rounds: the median of each figure, the ratio's range, and
    the targets judged on the medians (the memory and broker targets on the worst round)."""
    cases: dict[tuple, list[dict]] = {}
    for record in records:
        cases.setdefault((record["size"], record["database"], record["choices"]), []).append(record)
    out = []
    for (size, database, choices), runs in cases.items():
        def median(key, runs=runs):
            return round(statistics.median(r[key] for r in runs), 3)

        ratio, speedup = median("ratio_to_wire"), median("speedup_vs_naive")
        rss, broker = max(r["peak_worker_rss_mb"] for r in runs), max(r["broker_messages"] for r in runs)
        complete = all(r["outcome"] == "done" and r["recipients"] == r["subscribers"] for r in runs)
        out.append({
            "size": size, "database": database, "choices": choices, "rounds": len(runs),
            "msgs_per_s": median("msgs_per_s"), "wire_msgs_per_s": median("wire_msgs_per_s"),
            "wire_pipelined_msgs_per_s": median("wire_pipelined_msgs_per_s"),
            "ratio_to_wire": ratio, "ratio_to_wire_range": [min(r["ratio_to_wire"] for r in runs),
                                                             max(r["ratio_to_wire"] for r in runs)],
            "ratio_to_pipelined_wire": median("ratio_to_pipelined_wire"), "speedup_vs_naive": speedup,
            "naive_sample": min(r["naive_sample"] for r in runs),
            "peak_worker_rss_mb": rss, "broker_messages": broker,
            "worker_cpu_ms_per_msg": round(statistics.median(r["worker_cpu_ms_per_msg"] or 0 for r in runs), 3),
            "unsteady_rounds": sum(r["wire_spread"] > UNSTEADY for r in runs),
            "targets_met": judged(complete, ratio, speedup, rss, broker, runs[0]["subscribers"]),
        })
    return out


def median_summary(cases: list[dict]) -> str:
    """The medians over the rounds, one line per case."""
    head = ("size", "db", "rounds", "msgs/s", "wire", "÷wire", "range", "×naive", "RSS max", "CPU/msg", "unsteady")
    lines = ["", "medians over the rounds (targets judged on them)", "  " + "".join(f"{h:>12}" for h in head)]
    for c in cases:
        low, high = c["ratio_to_wire_range"]
        cells = (c["size"], c["database"], c["rounds"], f"{c['msgs_per_s']:,.0f}", f"{c['wire_msgs_per_s']:,.0f}",
                 f"{c['ratio_to_wire']:.2f} {_mark(c, 'ratio_to_wire')}", f"{low:.2f}–{high:.2f}",
                 f"{c['speedup_vs_naive']:.1f} {_mark(c, 'speedup_vs_naive')}" if c["naive_sample"] else "not run",
                 f"{c['peak_worker_rss_mb']:.0f} {_mark(c, 'peak_worker_rss')}", f"{c['worker_cpu_ms_per_msg']:.2f} ms",
                 c["unsteady_rounds"])
        lines.append("  " + "".join(f"{x:>12}" for x in cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--sizes", default="5,15,64",
                        help="edition sizes to measure, nominal KB as mailed: " + ", ".join(
                            f"{k} ({name}, {n} stor{'y' if n == 1 else 'ies'})" for k, (name, n, _) in SIZES.items()))
    parser.add_argument("--stories", type=int, help="one edition of this many stories instead of --sizes")
    parser.add_argument("--database", default="sqlite",
                        help="sqlite, postgres, or both as sqlite,postgres (every size on each)")
    parser.add_argument("--database-url",
                        default=os.environ.get("SYNDICATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                        help="PostgreSQL server for --database postgres (default: $SYNDICATE_TEST_DATABASE_URL or the "
                             "local server); a fresh schema is made there for each run and dropped after it")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14",
                        help="the broker; this Redis database is FLUSHED before and after each run")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (celery --concurrency); also the "
                                                               "number of connections of the wire limit")
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size,
                        help="recipients per deliver_batch task (default: the product's, SYNDICATE_BATCH_SIZE)")
    parser.add_argument("--durable-sent", action="store_true",
                        help="SYNDICATE_DURABLE_SENT=1: on PostgreSQL, each sent mark waits for the server's disk")
    parser.add_argument("--naive-sample", type=int, default=2000, help="recipients sent the naive way (0: none)")
    parser.add_argument("--local-time", nargs="?", const="after", choices=("after", "before"),
                        help="also send the same edition at each reader's local time (readers over 27 zones, "
                             "every wave made due in the run) and give its msgs/s next to the single wave's; "
                             "after it (the default) or before it")
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "asyncio"), default="auto",
                        help="auto: Postfix's smtp-sink if installed, else the asyncio sink in this file")
    parser.add_argument("--timeout", type=float, default=3600, help="give up a phase after this many seconds")
    parser.add_argument("--stall", type=float, default=120, help="give up a phase when nothing was sent for this long")
    parser.add_argument("--choices", default="none",
                        help="none (everyone gets the edition as it is), spread (readers spread over topics and "
                             "frequencies), or both as none,spread (every size on each)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folders (worker logs, SQLite file) and the "
                                                            "PostgreSQL schemas for inspection")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the whole matrix this many times, round after round, and judge the targets on "
                             "each case's median: one run's ratio moves with the machine's moment")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.database.split(",") if k.strip()]
    if not kinds or set(kinds) - {"sqlite", "postgres"}:
        parser.error("--database: sqlite, postgres or sqlite,postgres")
    spreads = [c.strip() for c in args.choices.split(",") if c.strip()]
    if not spreads or set(spreads) - {"none", "spread"}:
        parser.error("--choices: none, spread or none,spread")
    if args.stories is not None:
        cases = [(f"{args.stories}st", args.stories, "edition")]
    else:
        sizes = [k.strip().removesuffix("KB").removesuffix("kb") for k in args.sizes.split(",") if k.strip()]
        if not sizes or set(sizes) - set(SIZES):
            parser.error(f"--sizes: a comma list of {', '.join(SIZES)}")
        cases = [(size, *SIZES[size][1:]) for size in sizes]
    if args.subscribers < 1 or args.workers < 1 or args.batch_size < 1 or args.rounds < 1 \
            or any(n < 1 for _, n, _ in cases):
        parser.error("--subscribers, --workers, --batch-size, --rounds and --stories must be at least 1")
    args.naive_sample = max(0, min(args.naive_sample, args.subscribers))

    import redis

    broker = redis.Redis.from_url(args.redis_url)
    try:
        broker.ping()
    except redis.RedisError as e:
        raise SystemExit(f"Redis at {args.redis_url} is not reachable: {e}") from None
    sink_dir = Path(tempfile.mkdtemp(prefix="syndicate-fanout-sink-"))
    records = []
    sink = None
    try:
        sink = Sink(sink_dir, args.sink)
        for round_, kind, ((size, stories, template), choices) in itertools.product(
                range(1, args.rounds + 1), kinds, itertools.product(cases, spreads)):
            print(f"── {size} KB ({stories} stories, template {template}), {kind}, choices {choices}"
                  + (f", round {round_} of {args.rounds}" if args.rounds > 1 else "") + " ──", file=sys.stderr)
            label = size if choices == "none" else f"{size}+ch"
            record = {"size": label, "choices": choices, "round": round_,
                      **run_case(args, kind, stories, template, sink, broker, choices)}
            print(json.dumps(record, default=str), flush=True)  # each run's record as soon as it is measured
            records.append(record)
    finally:
        if sink is not None:
            sink.close()
        broker.flushdb()
        broker.close()
        shutil.rmtree(sink_dir, ignore_errors=True)
    print(summary(records))
    result = {"bench": "fanout", "records": records}
    if args.rounds > 1:
        result["medians"] = medians(records)
        print(median_summary(result["medians"]))
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
