"""One handler for every mail sent back to us, however it came in (`syndicate inbound process`, the LMTP/SMTP
listener, the IMAP poll): read it (inbound.reports), apply it to the reader it is about, and remember it.

  bounce report ──▶ permanent: the address is suppressed (bounced), with the server's reply
                    temporary: a soft bounce, counted towards Settings.soft_bounce_limit
  complaint ──────▶ the address is suppressed (complained) from every newsletter
  unsubscribe ────▶ that subscription ends, as the one-click POST ends it
  anything else ──▶ nothing; kept for the operator

Every change goes on the reader's timeline "via inbound mail", linked to the delivery the report is about.
The same message handled twice (an MTA retrying, a poll interrupted before it moved the mail) changes
nothing the second time: its events carry the message's digest as their provider id.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from syndicate import tokens
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.errors import NotFound
from syndicate.inbound import reports
from syndicate.inbound.reports import BOUNCE, COMPLAINT, IGNORED, REFUSED, SOFT_BOUNCE, UNSUBSCRIBE, Report
from syndicate.models import Delivery, Edition, InboundMessage, Subscriber, utcnow
from syndicate.subscribers import bounces, consent

log = logging.getLogger(__name__)

SOURCE = "inbound mail"  # the timeline says "via inbound mail"
DUPLICATE = "duplicate"
KEEP_BYTES = 64 * 1024  # of a message nothing was done with, kept for the operator (a report is ~20 KB)
VIA = ("pipe", "lmtp", "smtp", "imap")


@dataclass
class Outcome:
    """What handling one message did: said to the MTA, logged, and kept."""

    outcome: str  # bounce | soft_bounce | complaint | unsubscribe | duplicate | ignored | refused
    why: str
    form: str = ""
    email: str | None = None  # the reader it was about
    inbound_id: int | None = None

    @property
    def line(self) -> str:
        about = f" {self.email}:" if self.email else ""
        form = f" [{self.form}]" if self.form else ""
        return f"{self.outcome}{form}{about} {self.why}"


def handle(session: Session, settings: Settings, raw: bytes, *, via: str, recipients: tuple[str, ...] = (),
           now: datetime | None = None) -> Outcome:
    """Read and apply one message; never raises for what the message says (a database error does raise, so
    the MTA or the poll tries again later)."""
    assert via in VIA, via
    now = now or utcnow()
    digest = hashlib.sha256(raw).hexdigest()
    report = reports.read(raw, settings.secret_key, recipients)
    outcome, subscriber, delivery_id = _apply(session, settings, report, digest, now)
    row = InboundMessage(
        received_at=now, via=via, outcome=outcome.outcome, form=report.form[:80], why=outcome.why,
        sender=report.sender, subject=report.subject, message_id=report.message_id, size=len(raw), digest=digest,
        subscriber_id=subscriber.id if subscriber else None, delivery_id=delivery_id,
        raw=raw[:KEEP_BYTES] if outcome.outcome in (IGNORED, REFUSED) else None,
    )
    session.add(row)
    session.flush()
    outcome.inbound_id = row.id
    _forget_old(session, settings.inbound_keep)
    (log.warning if outcome.outcome == REFUSED else log.info)("inbound mail #%s via %s, %s bytes: %s",
                                                             row.id, via, len(raw), outcome.line)
    return outcome


def _apply(session: Session, settings: Settings, report: Report, digest: str,
           now: datetime) -> tuple[Outcome, Subscriber | None, int | None]:
    done = Outcome(report.kind, report.why, report.form)
    if not report.acted_on:
        return done, None, None
    if report.kind == UNSUBSCRIBE:
        return _unsubscribe(session, settings, report, done, now)
    subscriber, delivery_id, newsletter_id = _about(session, settings, report)
    if subscriber is None:
        done.outcome = IGNORED
        done.why = (f"{report.why} — but it names none of our mails by a signed return path or unsubscribe "
                    "token (forged, or about mail sent elsewhere): nothing done")
        return done, None, None
    done.email = subscriber.email
    source_id = f"inbound:{digest}"
    detail = _detail(report, subscriber)
    if report.kind == SOFT_BOUNCE:
        recorded, _ = bounces.soft_bounce(session, settings, subscriber, SOURCE, detail, delivery_id=delivery_id,
                                          newsletter_id=newsletter_id, source_id=source_id, now=now)
    else:
        status = "bounced" if report.kind == BOUNCE else "complained"
        recorded = consent.suppress(session, subscriber, status, SOURCE, detail, delivery_id=delivery_id,
                                    source_id=source_id, now=now)
    if not recorded:
        done.outcome, done.why = DUPLICATE, "handled before (the same message twice): nothing changed"
    else:
        done.why = detail
    return done, subscriber, delivery_id


def _unsubscribe(session: Session, settings: Settings, report: Report, done: Outcome,
                 now: datetime) -> tuple[Outcome, Subscriber | None, int | None]:
    token = report.unsubscribe_tokens[0]
    try:
        subscription = consent.unsubscribe(session, settings, token, now, source=SOURCE)
    except NotFound as e:
        done.outcome, done.why = IGNORED, f"an unsubscribe mail: {e}"
        return done, None, None
    subscriber = session.get(Subscriber, subscription.subscriber_id)
    done.email = subscriber.email
    done.why = f"left {subscription.newsletter.name}"
    return done, subscriber, None


def _about(session: Session, settings: Settings, report: Report) -> tuple[Subscriber | None, int | None, int | None]:
    """The reader (and delivery, and newsletter) a report is about, found through what we signed only."""
    for kind, number in report.mails:
        if kind == "d":
            row = session.execute(select(Delivery, Edition.newsletter_id).join(Edition)
                                  .where(Delivery.id == number)).first()
            if row is not None and row[0].subscriber_id is not None:  # None: the reader's data was erased
                return session.get(Subscriber, row[0].subscriber_id), row[0].id, row[1]
        elif kind == "c" and (subscriber := session.get(Subscriber, number)) is not None:
            return subscriber, None, None
    for token in report.unsubscribe_tokens:
        subscriber_id, newsletter_id = tokens.read_unsubscribe_token(settings.secret_key, token)
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is not None:
            # The quoted Message-ID is only a pointer: believed once the token said who it went to.
            delivery_id, _ = bounces.delivery_of(session, settings, subscriber.id, report.message_ids)
            return subscriber, delivery_id, newsletter_id
    return None, None, None


def _detail(report: Report, subscriber: Subscriber) -> str:
    """The timeline's words: the server's reply, and the address it named when that isn't the reader's own
    (mail forwarded elsewhere, which bounced there)."""
    if report.kind == COMPLAINT:
        return report.why
    mine = [f for f in report.failures if f.address.lower() == subscriber.email.lower()]
    failure = (mine or [f for f in report.failures if f.permanent] or report.failures)[0]
    status = f" ({failure.status})" if failure.status and failure.status not in failure.reply else ""
    named = "" if mine or not failure.address else f" — reported for {failure.address}, where this address forwards"
    return f"{failure.reply}{status}{named} [{report.form}]"


def _forget_old(session: Session, keep: int) -> None:
    """Only the newest `keep` messages stay: a flood of junk can't fill the database."""
    oldest_kept = session.scalar(select(InboundMessage.id).order_by(InboundMessage.id.desc()).offset(keep - 1)
                                 .limit(1))
    if oldest_kept is not None:
        session.execute(delete(InboundMessage).where(InboundMessage.id < oldest_kept))


def receive(Session, settings: Settings, raw: bytes, *, via: str, recipients: tuple[str, ...] = ()) -> Outcome:
    """`handle` in a transaction of its own, committed before the caller answers the MTA (or moves the mail
    out of the mailbox): what was said to have been taken is on disk."""
    with transaction(Session) as session:
        return handle(session, settings, raw, via=via, recipients=recipients)
