"""/metrics in Prometheus's text format: queue depths, deliveries, posts, editions, feeds, the kill switch,
and the sending pace (all mail's and each slowed receiving domain's, from the shared pacing store).

Counts are read from the ledger when scraped (one GROUP BY per table), so every process reports the same
truth and nothing has to be kept in memory between scrapes.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate.config import Settings
from syndicate.mail.pacing import Pacer, PacingUnavailable
from syndicate.models import Delivery, Edition, Feed, Post, SocialAccount, utcnow
from syndicate.social import accounts
from syndicate.web import health

log = logging.getLogger(__name__)
QUEUES = ("ingest", "mail", "social")


def render(session: Session, settings: Settings) -> str:
    lines: list[str] = []
    family = _writer(lines)

    depths = queue_depths()
    family("syndicate_broker_up", "gauge", "1 if the broker answered the scrape.", [({}, 1.0 if depths else 0.0)])
    family("syndicate_queue_depth", "gauge", "Tasks waiting in each queue.",
           [({"queue": q}, float(n)) for q, n in (depths or {}).items()])
    family("syndicate_deliveries", "gauge", "Delivery rows by status (all editions).",
           _grouped(session, Delivery.status))
    family("syndicate_editions", "gauge", "Editions by status.", _grouped(session, Edition.status))
    rows = session.execute(select(SocialAccount.name, Post.status, func.count()).join(Post.account)
                           .group_by(SocialAccount.name, Post.status)).all()
    family("syndicate_posts", "gauge", "Posts by account and status.",
           [({"account": a, "status": s}, float(n)) for a, s, n in rows])
    family("syndicate_social_accounts_paused", "gauge", "Social accounts paused (by an editor or the network).",
           [({}, float(session.scalar(select(func.count()).where(SocialAccount.status == "paused")) or 0))])
    family("syndicate_social_kill_switch", "gauge", "1 while all social posting is paused.",
           [({}, 1.0 if accounts.social_paused(session) else 0.0)])
    family("syndicate_feeds", "gauge", "Feeds by status.", _grouped(session, Feed.status))
    # By the failure count, not last_error: a feed read fine whose item had a bad link keeps a note there.
    family("syndicate_feeds_failing", "gauge", "Feeds whose last fetch failed.",
           [({}, float(session.scalar(select(func.count()).where(Feed.error_count > 0)) or 0))])
    after = settings.leases.stuck
    stuck = health.stuck_lanes(session.connection(), utcnow(), after)
    family("syndicate_lane_stuck", "gauge",
           f"1 for a lane with work due for {after.total_seconds() / 60:g} minutes and nothing done "
           "in that time (/healthz says why).",
           [({"lane": lane}, 1.0 if lane in stuck else 0.0) for lane in health.LANES])
    return "\n".join(lines) + "\n"


def render_pace(pacer: Pacer) -> str:
    """The sending pace, from the shared pacing store: all mail's and each slowed receiving domain's.
    Apart from `render` and after it: on SQLite the store takes the write lock of a transaction of its own."""
    lines: list[str] = []
    family = _writer(lines)
    try:
        stream, *domains = pacer.paces()
    except PacingUnavailable as e:
        log.warning("metrics: %s", e)
        return ""
    family("syndicate_send_pace_per_second", "gauge",
           "Messages a second all mail may go at (the configured rate, or less after a 421 for the session); "
           "absent: as fast as the server takes.",
           [({}, stream["per_second"])] if stream["per_second"] is not None else [])
    family("syndicate_domain_pace_per_second", "gauge",
           "Messages a second a receiving domain is sent at, slowed by its own 4.7.x deferrals; "
           "a domain not listed goes at the pace of all mail.",
           [({"domain": d["to"]}, d["per_second"]) for d in domains])
    family("syndicate_domains_slowed", "gauge", "Receiving domains sent at a pace of their own.",
           [({}, float(len(domains)))])
    return "\n".join(lines) + "\n"


def _writer(lines: list[str]):
    def family(name: str, kind: str, help_: str, samples: list[tuple[dict, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            shown = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            lines.append(f"{name}{{{shown}}} {value:g}" if shown else f"{name} {value:g}")
    return family


def _grouped(session: Session, column) -> list[tuple[dict, float]]:
    return [({"status": status}, float(n)) for status, n in
            session.execute(select(column, func.count()).group_by(column)).all()]


def queue_depths() -> dict[str, int] | None:
    """Messages waiting per queue, asked of the broker itself; None if it doesn't answer."""
    from syndicate.tasks import app

    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
            channel = connection.default_channel
            return {q: channel.queue_declare(queue=q, passive=True).message_count for q in QUEUES}
    except Exception as e:  # noqa: BLE001 — any broker failure is reported as broker_up 0
        log.warning("metrics: the broker did not answer: %s", e)
        return None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
