"""Can syndicate do its work right now: the database answers, the broker answers, the mail server greets us.

Each check has a short deadline of its own and they run side by side, so /healthz answers within a few
seconds even when everything is down. What a check says never carries a password: operators paste
these bodies into tickets. Anyone may ask whether each part is ok (`public`); what each check saw, with
the hosts and ports of our own services, goes only to a request with an API token, and to the log.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote, urlsplit

import redis
from kombu import Connection
from sqlalchemy import Connection as Database
from sqlalchemy import Engine, and_, func, or_, select, text

from syndicate.config import Settings, SmtpSettings
from syndicate.ledger import MAIL_UNCLAIMED
from syndicate.models import Delivery, Edition, Feed, Newsletter, Post, SocialAccount

log = logging.getLogger(__name__)
DEADLINE = 4.5  # seconds for all checks together: a load balancer's probe gives up at 5 or 10
CONNECT_TIMEOUT = 3.0  # one network service's own limit (broker, mail server)


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    ms: float

    def as_json(self) -> dict:
        return {"status": "ok" if self.ok else "error", "detail": self.detail, "ms": round(self.ms, 1)}


class Unhealthy(Exception):
    """A service answered, but not as it should (e.g. a mail server greeting us with 421)."""


# ── the checks: each returns what it saw, or raises ─────────────────────────


def database(engine: Engine) -> str:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return f"{engine.dialect.name}: SELECT 1 answered"


def broker(broker_url: str, timeout: float = CONNECT_TIMEOUT) -> str:
    scheme = urlsplit(broker_url).scheme
    if scheme.startswith("sqla+"):
        # kombu's SQLAlchemy transport: its messages are rows in a database on this machine.
        return f"embedded ({scheme}): covered by the database check"
    if scheme in ("redis", "rediss"):
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
        return f"redis at {_where(broker_url)} answered PING"
    with Connection(broker_url, connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=0, timeout=timeout)  # once: no retrying with pauses
    return f"{scheme} at {_where(broker_url)}: connected"


def smtp(settings: SmtpSettings | None, timeout: float = CONNECT_TIMEOUT) -> str:
    """The 220 greeting, EHLO and QUIT: the server is there and talks SMTP. No login: that is the
    sender's business, and a probe every few seconds must not lock an account out."""
    if settings is None:
        return "outbox (no SMTP configured)"
    deadline = time.monotonic() + timeout
    try:
        if settings.security == "tls":
            server = smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout,
                                      context=ssl.create_default_context())
        else:
            server = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
    except smtplib.SMTPConnectError as e:  # it answered, but not with 220 (e.g. "421 too busy")
        raise Unhealthy(f"{settings.host}:{settings.port} greeted us with {e.smtp_code} {_text(e.smtp_error)}") from e
    try:
        server.sock.settimeout(max(deadline - time.monotonic(), 0.01))  # the whole exchange, not each read
        code, reply = server.ehlo()
        if code != 250:
            raise Unhealthy(f"{settings.host}:{settings.port} answered EHLO with {code} {_text(reply)}")
        server.quit()
    finally:
        server.close()
    return f"{settings.host}:{settings.port} greeted us and answered EHLO"


# ── running them ─────────────────────────────────────────────────────────────


def checks_for(settings: Settings, engine: Engine) -> dict[str, Callable[[], str]]:
    return {"database": lambda: database(engine),
            "broker": lambda: broker(settings.broker_url),
            "smtp": lambda: smtp(settings.smtp)}


def run(checks: dict[str, Callable[[], str]], deadline: float = DEADLINE,
        secrets: tuple[str, ...] = ()) -> dict[str, Check]:
    """Every check at once, each in its own thread; one still running at the deadline counts as down."""
    results: dict[str, Check] = {}

    def one(name: str, check: Callable[[], str]) -> None:
        results[name] = timed(check, secrets)

    # Daemon threads: a check stuck past the deadline (a database host that drops packets) must
    # neither hold up the answer nor the process's exit; it ends on its own timeout later.
    threads = [threading.Thread(target=one, args=item, name=f"health-{item[0]}", daemon=True)
               for item in checks.items()]
    end = time.monotonic() + deadline
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(end - time.monotonic(), 0))
    done = dict(results)
    return {name: done.get(name) or Check(False, f"no answer within {deadline:g} s", deadline * 1000)
            for name in checks}


def timed(check: Callable[[], str], secrets: tuple[str, ...] = ()) -> Check:
    started = time.perf_counter()
    try:
        detail, ok = check(), True
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the check says so rather than crash the probe
        detail, ok = _problem(e), False
    return Check(ok, _scrubbed(detail, secrets), (time.perf_counter() - started) * 1000)


def report(settings: Settings, engine: Engine, deadline: float = DEADLINE) -> tuple[bool, dict]:
    """(all ok, the body for /healthz): every check with its status, detail and time; the failing ones named.
    With every service up, a lane that has work due and has done nothing for settings.leases.stuck makes the status
    "degraded" (still 200: the web app itself is fine), with the lane and why under "stuck"."""
    checks = run(checks_for(settings, engine), deadline, secrets_of(settings))
    healthy = all(c.ok for c in checks.values())
    body = {"status": "ok" if healthy else "error", "checks": {name: c.as_json() for name, c in checks.items()}}
    if not healthy:
        body["failing"] = [name for name, c in checks.items() if not c.ok]
        for name in body["failing"]:  # the operator reads what went wrong here; the public only "error"
            log.warning("health check %s failed: %s", name, checks[name].detail)
        return healthy, body
    try:
        with engine.connect() as connection:
            stuck = stuck_lanes(connection, datetime.now(UTC), settings.leases.stuck)
    except Exception as e:  # noqa: BLE001 - the probe answers whatever this query meets
        log.warning("could not look at the lanes: %s", _problem(e))
        return healthy, body
    body["lanes"] = {lane: "stuck" if lane in stuck else "ok" for lane in LANES}
    if stuck:
        body["status"], body["stuck"] = "degraded", [{"lane": lane, "reason": why} for lane, why in stuck.items()]
        for lane, why in stuck.items():
            log.warning("the %s lane is stuck: %s", lane, why)
    return healthy, body


def public(body: dict) -> dict:
    """The report as anyone may see it: ok or not per part, nothing about where our services are; a stuck
    lane is named, not why (the counts are the newsroom's business)."""
    shown = {**body, "checks": {name: check["status"] for name, check in body["checks"].items()}}
    if "stuck" in shown:
        shown["stuck"] = [{"lane": item["lane"]} for item in shown["stuck"]]
    return shown


# ── lanes: work due, and nothing done ────────────────────────────────────────

LANES = ("ingest", "mail", "social")


def stuck_lanes(connection: Database, now: datetime, after: timedelta) -> dict[str, str]:
    """The lanes that have had work due for `after` (Leases.stuck) and have not moved in that time, with why.

    Moving is any claim or outcome in the lane: a paced stream sending ten a second still claims a batch
    every 20 s, so it is never taken for stuck; a lane whose worker is gone, whose beat stopped, or that
    fails on one item at every try, is."""
    since = now - after
    found = {}
    due, moved = connection.execute(select(
        select(func.count()).select_from(Delivery).join(Edition, Edition.id == Delivery.edition_id).where(
            Edition.status == "sending",
            or_(and_(Delivery.status.in_(MAIL_UNCLAIMED), Delivery.next_attempt_at <= since),
                and_(Delivery.status == "sending", Delivery.claimed_at <= since))).scalar_subquery(),
        select(func.max(Delivery.claimed_at)).join(Edition, Edition.id == Delivery.edition_id)
        .where(Edition.status == "sending").scalar_subquery())).one()
    if due and (moved is None or _aware(moved) <= since):
        found["mail"] = (f"{due:,} deliveries due for over {_minutes(after)} and none taken by a worker "
                         f"since {_when(moved)}: is a worker consuming the mail queue, and is beat running?")
    # An edition the pre-send checks stopped at its time: its readers wait until an editor acts.
    blocked = connection.execute(select(Newsletter.slug, Edition.number).join(Newsletter).where(
        Edition.status == "blocked").order_by(Edition.scheduled_for).limit(5)).all()
    if blocked:
        named = ", ".join(f"{slug}/{number}" for slug, number in blocked)
        found["mail"] = "; ".join(filter(None, [found.get("mail"), (
            f"edition {named} blocked by the pre-send checks: `syndicate edition show` says why; fix it, or "
            "let the check pass with `edition schedule --override CHECK --reason WHY`")]))
    due, moved = connection.execute(select(
        select(func.count()).select_from(Post).join(SocialAccount, SocialAccount.id == Post.account_id).where(
            SocialAccount.status == "active",
            or_(SocialAccount.parked_until.is_(None), SocialAccount.parked_until <= since),
            # handed to a worker by the tick (planned_at), and never tried, for a story planned long ago
            Post.status.in_(("pending", "sending")), Post.planned_at.is_not(None), Post.attempts == 0,
            Post.created_at <= since).scalar_subquery(),
        select(func.max(Post.claimed_at)).scalar_subquery())).one()
    if due and (moved is None or _aware(moved) <= since):
        found["social"] = (f"{due:,} posts due for over {_minutes(after)} and none taken by a worker since "
                           f"{_when(moved)}: is a worker consuming the social queue, and is beat running?")
    due, moved = connection.execute(select(
        select(func.count()).select_from(Feed).where(Feed.status == "active", Feed.next_fetch_at <= since)
        .scalar_subquery(),
        select(func.max(Feed.last_fetched_at)).scalar_subquery())).one()
    if due and (moved is None or _aware(moved) <= since):
        found["ingest"] = (f"{due:,} feeds due for over {_minutes(after)} and none fetched since "
                           f"{_when(moved)}: is a worker consuming the ingest queue, and is beat running?")
    return found


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _when(at: datetime | None) -> str:
    return "ever" if at is None else f"{_aware(at):%Y-%m-%d %H:%M} UTC"


def _minutes(span: timedelta) -> str:
    return f"{span.total_seconds() / 60:g} minutes"


class Cached:
    """`report`, answered again for `max_age` seconds: /healthz is public, and without this every request
    would open a session on the mail server and the broker (three load balancers probing every second,
    or a stranger in a loop, add up). A lock keeps concurrent requests to one run of the checks."""

    def __init__(self, max_age: float = 5.0):
        self.max_age, self.lock = max_age, threading.Lock()
        self.key, self.at, self.value = None, 0.0, None

    def __call__(self, settings: Settings, engine: Engine) -> tuple[bool, dict]:
        with self.lock:
            key = (id(settings), id(engine))
            if self.value is None or self.key != key or time.monotonic() - self.at > self.max_age:
                self.value, self.key, self.at = report(settings, engine), key, time.monotonic()
            return self.value


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """The passwords in our settings: never repeated in a check's detail, whatever a library put there."""
    found = [urlsplit(url).password for url in (settings.database_url, settings.broker_url)]
    found += [unquote(s) for s in found if s]  # as written in the URL, and as a library would show it
    found.append(settings.smtp.password if settings.smtp else None)
    return tuple(s for s in found if s)


def _problem(e: Exception) -> str:
    # SQLAlchemy's errors add the statement and a link on further lines; the driver's first line says it.
    message = str(getattr(e, "orig", None) or e).strip().splitlines()
    return f"{type(e).__name__}: {message[0]}" if message else type(e).__name__


def _scrubbed(detail: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        detail = detail.replace(secret, "***")
    return detail


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _text(reply: bytes | str) -> str:
    return (reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply).strip()
