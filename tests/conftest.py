"""The test harness: real parts (SMTP server, feed server, Redis, PostgreSQL, Celery worker) as fixtures.

Redis- and PostgreSQL-backed tests run when SYNDICATE_TEST_REDIS_URL /
SYNDICATE_TEST_DATABASE_URL are set, and skip with a note otherwise; with
SYNDICATE_REQUIRE_SERVICES=1 (as in CI) a missing service fails instead.
"""

from __future__ import annotations

import asyncio
import html as html_lib
import imaplib
import os
import re
import socket
import ssl
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope
from click.testing import CliRunner

from syndicate import db, tasks
from syndicate.cli.main import main
from syndicate.config import ImapSettings, Settings
from syndicate.db import transaction
from syndicate.mail import pacing
from syndicate.newsletters import lists
from syndicate.services import Services

REDIS_URL = os.environ.get("SYNDICATE_TEST_REDIS_URL")
DATABASE_URL = os.environ.get("SYNDICATE_TEST_DATABASE_URL")
REQUIRED = os.environ.get("SYNDICATE_REQUIRE_SERVICES") == "1"
FIGURES: list[str] = []  # printed at the end of the run: measured, never asserted


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/ from the current render (on purpose only; review the diff)")


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll until `condition()` holds; for work other threads or processes do."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def hidden_fields(html: str) -> dict[str, str]:
    """The hidden fields of a page's form (the form token), as a browser sends them back."""
    return {html_lib.unescape(name): html_lib.unescape(value)
            for name, value in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', html)}


def form_fields(client, path: str) -> dict[str, str]:
    """Open the page at `path` as a reader would and take its form's hidden fields."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    return hidden_fields(page.text)


def submit(client, path: str, data: dict | None = None, **kwargs):
    """POST a reader's form as a browser does: open its page (the subscribe form is the home page), then
    send its hidden fields back with `data`."""
    fields = form_fields(client, "/" if path == "/subscribe" else path)
    return client.post(path, data={**fields, **(data or {})}, **kwargs)


def cli_in(env: dict[str, str]):
    """`syndicate …` run in this process with `env` as its whole environment; its output. It must succeed."""
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(main, list(args), env=env)
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    return run


def missing(service: str, variable: str, example: str):
    message = f"{service} not available: set {variable}={example} to run this test"
    if REQUIRED:
        pytest.fail(message + " (SYNDICATE_REQUIRE_SERVICES=1 makes it mandatory)")
    pytest.skip(message)


# ── settings and databases ───────────────────────────────────────────────────


@pytest.fixture
def make_settings(tmp_path):
    """Settings as the environment would give them, on a private data folder."""

    def make(**env) -> Settings:
        base = {
            "SYNDICATE_DATA_DIR": str(tmp_path / "data"),
            "SYNDICATE_SECRET_KEY": "test-secret",
            "SYNDICATE_BASE_URL": "http://testserver",
            "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1",
            # Stories here link to pages nobody serves (the feed server answers 404): a test that means
            # the pre-send link check turns it on.
            "SYNDICATE_LINK_CHECK": "0",
        }
        base.update({f"SYNDICATE_{k.upper()}": str(v) for k, v in env.items()})
        return Settings.from_env(base)

    return make


@pytest.fixture
def postgres_url():
    """A fresh schema on the test PostgreSQL server, dropped afterwards."""
    if not DATABASE_URL:
        missing("PostgreSQL", "SYNDICATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = Settings.from_env({"SYNDICATE_DATABASE_URL": DATABASE_URL,
                             "SYNDICATE_SECRET_KEY": "x", "SYNDICATE_DATA_DIR": "/tmp"}).database_url
    admin = sa.create_engine(url)
    try:
        with admin.begin() as connection:
            connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as e:
        admin.dispose()
        missing("PostgreSQL", "SYNDICATE_TEST_DATABASE_URL", f"a reachable server ({e.orig})")
    sep = "&" if "?" in url else "?"
    yield f"{url}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def svc(make_settings, tmp_path) -> Services:
    """Services on a migrated SQLite database, Celery tasks run inline."""
    return configured(make_settings(database_url=f"sqlite:///{tmp_path / 'test.db'}"), eager=True)


@pytest.fixture
def site(make_settings, tmp_path, smtp_server) -> Services:
    """The public pages' newsroom: tasks inline, mail to the test SMTP server, one newsletter, "daily"."""
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'site.db'}", smtp_url=smtp_server.url),
                     eager=True)
    with transaction(svc.Session) as session:
        # The sample feed's stories are from 2023: any age goes here (the newsletters' own tests try --max-age).
        lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com", max_age_hours=0)
    return svc


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def pacing_store(request, make_settings, tmp_path):
    """Each store the send pacing can share its state in: the database (SQLite, PostgreSQL) and Redis."""
    if request.param == "redis":
        return pacing.RedisStore(request.getfixturevalue("redis_url"))
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else f"sqlite:///{tmp_path}/s.db"
    return pacing.DatabaseStore(configured(make_settings(database_url=url)).engine)


def configured(settings: Settings, eager: bool = False) -> Services:
    services = tasks.configure(settings)
    tasks.app.conf.task_always_eager = eager
    db.upgrade(services.engine)
    return services


@pytest.fixture(autouse=True)
def _reset_celery():
    yield
    tasks.app.conf.task_always_eager = False


# ── a real SMTP server ───────────────────────────────────────────────────────


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class SmtpHandler:
    """Records what it accepts; `replies` maps a recipient to the reply to give at RCPT."""

    messages: list[Received] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None  # answer DATA with this instead of 250
    mail_reply: str | None = None  # answer MAIL with this (the whole session's refusal) ...
    mail_reply_after: int = 0  # ... once this many messages were accepted
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(self, server, session, envelope: Envelope, address, mail_options):
        if self.mail_reply and len(self.messages) >= self.mail_reply_after:
            return self.mail_reply
        envelope.mail_from, envelope.mail_options = address, mail_options
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope: Envelope, address, rcpt_options):
        reply = self.replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope: Envelope):
        if self.data_reply:
            return self.data_reply
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted for delivery"


def answers(url: str) -> bool:
    """Whether a server started for a test answers `url` with 200 yet."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def terminate(process, timeout: float) -> None:
    """SIGTERM to a command a test started in its own process group; the whole group killed if it
    hasn't stopped by `timeout`."""
    import signal
    import subprocess

    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def subscriber_by_email(svc, address: str):
    """The Subscriber row of `address`, or None."""
    from sqlalchemy import select

    from syndicate.models import Subscriber

    with transaction(svc.Session) as session:
        return session.scalar(select(Subscriber).where(Subscriber.email == address))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_smtp(handler):
    """Run an aiosmtpd server with `handler` on a free port (its URL in handler.url) until the generator ends."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.url = f"smtp://127.0.0.1:{port}"
    yield handler
    controller.stop()


@pytest.fixture
def smtp_server():
    yield from serve_smtp(SmtpHandler())


@pytest.fixture
def closed_port():
    """A port nobody listens on: a mail server or feed that is down."""
    return free_port()


# ── a real HTTP server for feeds ─────────────────────────────────────────────


class FeedServer:
    """Serves `routes`: path → (status, headers, body). Records requests with their headers."""

    def __init__(self):
        self.routes: dict[str, tuple[int, dict, bytes]] = {}
        self.requests: list[tuple[str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, dict(self.headers)))
                status, headers, body = server.routes.get(self.path, (404, {}, b"not found"))
                if callable(body):
                    status, headers, body = body(self)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def serve(self, path: str, body: bytes, status: int = 200, **headers) -> str:
        self.routes[path] = (status, {"Content-Type": "application/rss+xml; charset=utf-8", **headers}, body)
        return self.base + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def feed_server():
    server = FeedServer()
    yield server
    server.close()


@pytest.fixture
def sample_feed() -> bytes:
    return (Path(__file__).parents[1] / "src" / "syndicate" / "sample" / "feed.xml").read_bytes()



# ── a real IMAP server ───────────────────────────────────────────────────────


class ImapServer:
    """pymap (an asyncio IMAP4rev1 server; its "dict" backend keeps mailboxes in memory) on a thread of
    its own, listening on 127.0.0.1 four ways: "tls" (TLS from the start), "starttls", "none" (plain) and
    "old" (plain, without the MOVE and UIDPLUS extensions, which it then refuses as unknown commands).
    Its certificate is signed by `ca`, a test CA that `client_context()` trusts and nothing else does.
    Each `account()` is a new user with empty mailboxes, so tests share one server and not their mail."""

    SECURITY = {"tls": "tls", "starttls": "starttls", "none": "none", "old": "none"}

    def __init__(self):
        import trustme

        self.ca = trustme.CA()
        self.ports: dict[str, int] = {}
        self._client_context: ssl.SSLContext | None = None
        self._users = iter(range(1, 10**6))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._servers = self._call(self._start())

    def _call(self, coroutine, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _start(self) -> list:
        from argparse import Namespace

        from proxyprotocol.reader import ProxyProtocolReader
        from pymap.backend.dict import Config, Login
        from pymap.imap import IMAPServer
        from pysasl.hashing import BuiltinHash

        class OldConfig(Config):
            @property
            def login_capability(self):
                return [c for c in super().login_capability if c not in (b"MOVE", b"UIDPLUS")]

            @property
            def commands(self):
                commands = super().commands
                for name in (b"MOVE", b"UID MOVE", b"UID EXPUNGE"):
                    commands.deregister(name)
                return commands

        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(tls)
        args = Namespace(passlib_cfg=None, proxy_protocol=None)
        quick = BuiltinHash(rounds=1)  # pymap's default 1,000,000 rounds cost 0.3 s a login; they aren't tested

        def config(kind=Config, **options):
            return kind(args, host="127.0.0.1", port=0, demo_data=False, demo_user="demo", demo_password="demo",
                        invalid_user_sleep=0, reject_dnsbl=False, ssl_context=tls, hash_context=quick,
                        **options)

        # One Login, so one set of users and mailboxes, whichever way a client comes in.
        self._config = config(tls_enabled=True)
        self._login = Login(self._config)
        proxy = ProxyProtocolReader(self._config.proxy_protocol)
        listeners = {"tls": (config(tls_enabled=False), tls), "starttls": (self._config, None),
                     "none": (config(tls_enabled=False), None), "old": (config(OldConfig, tls_enabled=False), None)}
        servers = []
        for kind, (server_config, implicit) in listeners.items():
            callback = proxy.get_callback(IMAPServer(self._login, server_config))
            server = await asyncio.start_server(callback, "127.0.0.1", 0, ssl=implicit)
            self.ports[kind] = server.sockets[0].getsockname()[1]
            servers.append(server)
        return servers

    async def _add_user(self, name: str, password: str) -> None:
        from pymap.backend.dict import Identity
        from pymap.user import Passwords, UserMetadata

        hashed = await Passwords(self._config).hash_password(password)
        await Identity(name, self._login, None, frozenset()).set(UserMetadata(self._config, name, password=hashed))

    def client_context(self) -> ssl.SSLContext:
        """A client's context that trusts the test CA (made once: loading the system's CAs costs 30 ms)."""
        if self._client_context is None:
            self._client_context = ssl.create_default_context()
            self.ca.configure_trust(self._client_context)
        return self._client_context

    def account(self, kind: str = "tls", *, password: str = 'pa55 "w\\rd"', **options) -> ImapSettings:
        """A new user's mailbox, as SYNDICATE_INBOUND_IMAP_URL would name it, reached the `kind` way."""
        user = f"bounces{next(self._users)}@example.com"
        self._call(self._add_user(user, password))
        return ImapSettings(host="127.0.0.1", port=self.ports[kind], security=self.SECURITY[kind], username=user,
                            password=password, timeout=10, **options)

    def client(self, imap: ImapSettings) -> imaplib.IMAP4:
        """A second client of that mailbox, logged in: the test's own hands (in the clear, to be quick)."""
        client = imaplib.IMAP4("127.0.0.1", self.ports["none"], timeout=10)
        # imaplib writes a literal and its CRLF apart: without this each APPEND waits 40 ms for a delayed ACK.
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.authenticate("PLAIN", lambda _: f"\0{imap.username}\0{imap.password}".encode())
        return client

    def append(self, imap: ImapSettings, *messages: bytes, folder: str | None = None) -> None:
        client = self.client(imap)
        try:
            for raw in messages:
                kind, data = client.append(f'"{folder or imap.folder}"', None, None, raw)
                assert kind == "OK", data
        finally:
            client.logout()

    def messages(self, imap: ImapSettings, folder: str | None = None) -> list[bytes]:
        """The messages in `folder` (the polled one if None), oldest first; [] when there is no such folder."""
        client = self.client(imap)
        try:
            kind, data = client.select(f'"{folder or imap.folder}"', readonly=True)
            if kind != "OK":
                return []
            kind, data = client.fetch("1:*", "(BODY.PEEK[])") if int(data[0]) else ("OK", [])
            return [item[1] for item in data if isinstance(item, tuple)]
        finally:
            client.logout()

    def close(self) -> None:
        for server in self._servers:
            self._loop.call_soon_threadsafe(server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def imap_server():
    server = ImapServer()
    yield server
    server.close()


# ── mail sent back to us ─────────────────────────────────────────────────────


def postfix_dsn(return_path: str, recipient: str, original: bytes, *, status: str = "5.1.1",
                reply: str = "550 5.1.1 <{r}>: Recipient address rejected: User unknown in virtual mailbox table",
                action: str = "failed") -> bytes:
    """A bounce report as Postfix's bounce daemon writes it (RFC 3464, the original's headers returned),
    delivered to the return path by Postfix's local delivery (Delivered-To, X-Original-To)."""
    headers = original.split(b"\r\n\r\n", 1)[0].decode()
    domain = recipient.rpartition("@")[2]
    return (f"""Return-Path: <>
X-Original-To: {return_path}
Delivered-To: {return_path}
Received: by relay.news.example (Postfix)
\tid 4ZxY3k1Qz9z9sWp; Mon,  7 Dec 2026 07:01:12 +0000 (UTC)
Date: Mon,  7 Dec 2026 07:01:12 +0000 (UTC)
From: MAILER-DAEMON@relay.news.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {return_path}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4ZxY3k1Qz9z9sWp.1765090872/relay.news.example"
Content-Transfer-Encoding: 8bit
Message-Id: <20261207070112.4ZxY3k1Qz9z9sWp@relay.news.example>

This is a MIME-encapsulated message.

--4ZxY3k1Qz9z9sWp.1765090872/relay.news.example
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host relay.news.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<{recipient}>: host mx.{domain}[192.0.2.25] said: {reply.format(r=recipient)} (in reply to RCPT TO
    command)

--4ZxY3k1Qz9z9sWp.1765090872/relay.news.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.news.example
X-Postfix-Queue-ID: 4ZxY3k1Qz9z9sWp
X-Postfix-Sender: rfc822; {return_path}
Arrival-Date: Mon,  7 Dec 2026 07:01:10 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.{domain}
Diagnostic-Code: smtp; {reply.format(r=recipient)}

--4ZxY3k1Qz9z9sWp.1765090872/relay.news.example
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

{headers}

--4ZxY3k1Qz9z9sWp.1765090872/relay.news.example--
""").replace("\n", "\r\n").encode()


# ── the CLI as a terminal runs it ────────────────────────────────────────────


@pytest.fixture
def console(env, monkeypatch, capsys):
    """Run `syndicate …` through the console script's entry point, in this process (the test module gives its
    `env`): (exit code, out, err)."""
    from syndicate.cli.main import cli

    for name in list(os.environ):
        if name.startswith("SYNDICATE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["syndicate", *args])
        try:
            cli()
            code = 0
        except SystemExit as exited:
            code = exited.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return run


# ── Redis and a real Celery worker ───────────────────────────────────────────


@pytest.fixture
def redis_url():
    if not REDIS_URL:
        missing("Redis", "SYNDICATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:
        missing("Redis", "SYNDICATE_TEST_REDIS_URL", f"a reachable server ({e})")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def celery_worker_for():
    """Start a real Celery worker (solo pool, in a thread) consuming every queue of the configured app."""
    from celery.contrib.testing.worker import start_worker

    started = []

    def start():
        context = start_worker(tasks.app, pool="solo", concurrency=1, perform_ping_check=False,
                               loglevel="WARNING", shutdown_timeout=30)
        worker = context.__enter__()
        started.append(context)
        return worker

    yield start
    for context in started:
        context.__exit__(None, None, None)


# ── a real browser against the app served on localhost (the desk) ───────────

CHROMIUM = os.environ.get("SYNDICATE_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).parent / "screenshots"


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not Path(CHROMIUM).exists():
        message = ("a browser is needed: `apt-get install chromium` (and `pip install -e '.[test]'` for "
                   "Playwright); SYNDICATE_TEST_CHROMIUM names another Chromium")
        if REQUIRED:
            pytest.fail(message + " (SYNDICATE_REQUIRE_SERVICES=1 makes it mandatory)")
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def served(svc):
    """The web app on a real port, in this process (it shares the test's services)."""
    import uvicorn

    from syndicate.web.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "uvicorn")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def wait_in_page(page, expression: str, timeout: float = 30.0) -> None:
    """Until `expression` is true in the page. Not Playwright's wait_for_function: it evaluates its predicate
    with eval, which the pages' Content-Security-Policy refuses, as it should."""
    wait_for(lambda: page.evaluate(expression), timeout, expression)


def sign_in_browser(page, served: str, username: str, password: str, path: str = "/desk") -> None:
    """Sign in through the desk's login form, then be on `path`."""
    page.goto(served + path)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(served + path)


# ── clicks counted per story ─────────────────────────────────────────────────

CLICK_STORIES = ("https://news.example.com/library?a=1&b=2", "https://news.example.com/trams/")


def clicks_newsroom(svc, count_clicks: bool = True, start: bool = True) -> int:
    """A newsletter "morning" (counting clicks or not), two stories (CLICK_STORIES), two readers, and an edition
    of it: gone out (started), or a draft. Returns the edition's id."""
    from datetime import timedelta

    from syndicate.delivery import sending
    from syndicate.models import Article, utcnow
    from syndicate.newsletters import editions
    from syndicate.subscribers import consent

    now = utcnow()
    with transaction(svc.Session) as session:
        newsletter = lists.add_newsletter(session, slug="morning", name="Morning", from_address="news@example.com",
                                          cron=None, now=now - timedelta(hours=1), count_clicks=count_clicks)
        for address in ("ann@example.org", "bob@example.org"):
            consent.subscribe(session, address, [newsletter.id], confirmed=True)
        for i, url in enumerate(CLICK_STORIES):
            session.add(Article(identity=url, url=url, title=f"Story {i}", lead="A lead.", content_hash=str(i),
                                published_at=now - timedelta(minutes=i), first_seen_at=now))
        session.flush()
        if start:
            return sending.cut(session, newsletter, svc.settings, kind="one-off").edition.id
        return editions.create_edition(session, newsletter, svc.settings, status="draft").id


def counted_links(svc, edition_id: int) -> list[str]:
    """The edition's counting links as its HTML holds them, each once, in order (paths: /r/…)."""
    from syndicate.models import Edition

    with transaction(svc.Session) as session:
        html = session.get(Edition, edition_id).html
    return list(dict.fromkeys(re.findall(r"(?<=http://testserver)/r/\d+/\d+\.[A-Za-z0-9_-]{16}", html)))
