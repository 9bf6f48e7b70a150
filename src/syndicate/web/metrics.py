"""/metrics in Prometheus's text format: queue depths, deliveries, posts, editions, feeds, the kill switch,
and the sending pace (all mail's and each slowed receiving domain's, from the shared pacing store).

Counts are read from the ledger when scraped (one GROUP BY per table), so every process reports the same
truth and nothing has to be kept in memory between scrapes. prometheus_client writes the format: each
part is a custom collector, registered for the one scrape in a registry of its own (never the library's
global one, so nothing is shared between apps or tests) and rendered by `generate_latest`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate import ledger
from syndicate.config import Settings
from syndicate.mail.pacing import Pacer, PacingUnavailable
from syndicate.models import Delivery, Edition, Feed, InboundMessage, Post, SocialAccount, utcnow
from syndicate.social import accounts
from syndicate.web import health

log = logging.getLogger(__name__)
QUEUES = ("ingest", "mail", "social")
# The text format generate_latest writes, labelled as prometheus_client itself labels it for a scraper that
# asks for nothing newer (its CONTENT_TYPE_PLAIN_0_0_4, from 0.23 on). Not its CONTENT_TYPE_LATEST: that
# says version=0.0.4 up to 0.22 and version=1.0.0 from 0.23, which the library itself sends only when
# negotiated and with an escaping parameter.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(session: Session, settings: Settings) -> str:
    return _exposition(LedgerCollector(session, settings))


def render_pace(pacer: Pacer) -> str:
    """The sending pace, from the shared pacing store: all mail's and each slowed receiving domain's.
    Apart from `render` and after it: on SQLite the store takes the write lock of a transaction of its own."""
    return _exposition(PaceCollector(pacer))


class LedgerCollector(Collector):
    """The broker's queues and the ledger's counts, read in the scrape's transaction."""

    def __init__(self, session: Session, settings: Settings):
        self.session, self.settings = session, settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        session = self.session
        depths = queue_depths()
        yield GaugeMetricFamily("syndicate_broker_up", "1 if the broker answered the scrape.",
                                value=1.0 if depths else 0.0)
        yield _gauge("syndicate_queue_depth", "Tasks waiting in each queue.", ["queue"],
                     [([q], n) for q, n in (depths or {}).items()])
        yield _gauge("syndicate_deliveries", "Delivery rows by status (all editions).", ["status"],
                     _by_status(session, Delivery))
        yield _gauge("syndicate_editions", "Editions by status.", ["status"], _by_status(session, Edition))
        rows = session.execute(select(SocialAccount.name, Post.status, func.count()).join(Post.account)
                               .group_by(SocialAccount.name, Post.status)).all()
        yield _gauge("syndicate_posts", "Posts by account and status.", ["account", "status"],
                     [([a, s], n) for a, s, n in rows])
        yield GaugeMetricFamily("syndicate_social_accounts_paused",
                                "Social accounts paused (by an editor or the network).",
                                value=session.scalar(select(func.count()).where(SocialAccount.status == "paused"))
                                or 0)
        yield GaugeMetricFamily("syndicate_social_kill_switch", "1 while all social posting is paused.",
                                value=1.0 if accounts.social_paused(session) else 0.0)
        yield _gauge("syndicate_feeds", "Feeds by status.", ["status"], _by_status(session, Feed))
        # By the failure count, not last_error: a feed read fine whose item had a bad link keeps a note there.
        yield GaugeMetricFamily("syndicate_feeds_failing", "Feeds whose last fetch failed.",
                                value=session.scalar(select(func.count()).where(Feed.error_count > 0)) or 0)
        # Of the messages kept (the newest SYNDICATE_INBOUND_KEEP), received in the last day.
        since = utcnow() - timedelta(days=1)
        rows = session.execute(select(InboundMessage.outcome, func.count()).where(InboundMessage.received_at >= since)
                               .group_by(InboundMessage.outcome)).all()
        yield _gauge("syndicate_inbound_messages_24h",
                     "Mail sent back to us in the last 24 hours (bounce reports, complaints, unsubscribe mails, "
                     "and what was ignored or refused), by what was done with it.", ["outcome"],
                     [([outcome], n) for outcome, n in rows])
        after = self.settings.leases.stuck
        stuck = health.stuck_lanes(session.connection(), utcnow(), after)
        yield _gauge("syndicate_lane_stuck",
                     f"1 for a lane with work due for {after.total_seconds() / 60:g} minutes and nothing done "
                     "in that time (/healthz says why).", ["lane"],
                     [([lane], 1.0 if lane in stuck else 0.0) for lane in health.LANES])


class PaceCollector(Collector):
    """The pace now, from the pacing store; nothing (and a warning in the log) if the store is unreachable."""

    def __init__(self, pacer: Pacer):
        self.pacer = pacer

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stream, *domains = self.pacer.paces()
        except PacingUnavailable as e:
            log.warning("metrics: %s", e)
            return
        yield _gauge("syndicate_send_pace_per_second",
                     "Messages a second all mail may go at (the configured rate, or less after a 421 for the "
                     "session); absent: as fast as the server takes.", [],
                     [([], stream["per_second"])] if stream["per_second"] is not None else [])
        yield _gauge("syndicate_domain_pace_per_second",
                     "Messages a second a receiving domain is sent at, slowed by its own 4.7.x deferrals; "
                     "a domain not listed goes at the pace of all mail.", ["domain"],
                     [([d["to"]], d["per_second"]) for d in domains])
        yield GaugeMetricFamily("syndicate_domains_slowed", "Receiving domains sent at a pace of their own.",
                                value=len(domains))


def _exposition(collector: Collector) -> str:
    registry = CollectorRegistry()  # this scrape's own
    registry.register(collector)
    return generate_latest(registry).decode()


def _gauge(name: str, help_: str, labels: list[str], samples: list[tuple[list, float]]) -> GaugeMetricFamily:
    """A gauge family with these samples, each its label values (in the order of `labels`) and its value;
    none: only its HELP and TYPE lines."""
    family = GaugeMetricFamily(name, help_, labels=labels)
    for values, value in samples:
        family.add_metric([str(v) for v in values], value)
    return family


def _by_status(session: Session, table) -> list[tuple[list, float]]:
    return [([status], n) for status, n in ledger.tally(session, table).items()]


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

