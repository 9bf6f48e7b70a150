"""Bounces and complaints: what a mail server or the mail provider says about an address, and what follows.

SMTP refusal at send ──record_delivery_failure──┐
Amazon SES via SNS, or a generic webhook ──handle──┴──▶ subscriber event ──▶ suppression

A hard bounce or a complaint stops all mail to the address at once. Soft bounces (mailbox full,
greylisting that never cleared) only count: `soft_bounce_limit` of them within `soft_bounce_window`
seconds and the address is treated as bounced. A provider's event is recorded under its id, so the
same notification delivered twice is recorded once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr

import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate import throttle
from syndicate.config import Settings
from syndicate.errors import InvalidInput, SyndicateError
from syndicate.mail.message import message_id as make_message_id
from syndicate.models import Delivery, Edition, Subscriber, SubscriberEvent, utcnow
from syndicate.subscribers import amazon_sns, consent

MAX_BYTES = 256 * 1024  # an SNS message is at most 256 KB
MAX_EVENTS = 100  # addresses one call may report; SES names at most 50 recipients per message
RATE_WINDOW = 3600  # seconds: Settings.bounce_events_per_hour counts addresses per token in this window
CONFIRM_TIMEOUT = 10.0  # seconds for the SubscribeURL fetch
SOURCE_ID_MAX = 300  # SubscriberEvent.source_id

SNS_TYPES = ("SubscriptionConfirmation", "UnsubscribeConfirmation", "Notification")
SNS_HOST = amazon_sns.HOST  # Amazon SNS's own endpoints: the only host a SubscribeURL or SigningCertURL may name
GENERIC_TYPES = ("bounce", "soft_bounce", "complaint")
# `<{delivery_id}.{edition_id}.{instance}@{domain}>`, as delivery.copies.MessageFactory makes it.
OUR_MESSAGE_ID = re.compile(r"<?([1-9]\d*)\.([1-9]\d*)\.([0-9a-f]+)@([A-Za-z0-9.-]+)>?")

SHAPES = (
    "send one of: an Amazon SNS message (Type SubscriptionConfirmation, UnsubscribeConfirmation or "
    "Notification carrying an SES notification); an SES notification itself (notificationType or "
    'eventType "Bounce" / "Complaint"); or JSON events {"type": "bounce" | "soft_bounce" | "complaint", '
    '"email": "...", "reason": "...", "id": "...", "message_id": "..."}, one object or {"events": [...]}'
)


# The generic shape as a JSON Schema, for the API's spec: a script (or the fuzzer) knows what to send.
# SNS and SES messages are Amazon's own documented shapes and are not repeated here.
_EVENT = {
    "type": "object", "required": ["type", "email"],
    "properties": {
        "type": {"enum": list(GENERIC_TYPES)},
        "email": {"type": "string", "description": "The address the event is about."},
        "reason": {"type": "string", "description": "What the provider said, kept on the reader's timeline."},
        "id": {"type": ["string", "integer"], "description": "The provider's id: the same id twice counts once."},
        "message_id": {"type": "string", "description": "The Message-ID of our mail it is about."},
    },
}
GENERIC_SCHEMA = {"oneOf": [_EVENT, {
    "type": "object", "required": ["events"],
    "properties": {"events": {"type": "array", "items": _EVENT, "maxItems": MAX_EVENTS}},
}]}


# ── what the mail server said at send time ───────────────────────────────────


def record_delivery_failure(session: Session, settings: Settings, *, subscriber_id: int, delivery_id: int,
                            newsletter_id: int | None, reply: str, hard: bool, now: datetime) -> str | None:
    """A delivery ended `failed`: a hard bounce (5xx refusing the address) suppresses it at once, a soft one
    (4xx until we gave up) counts towards the limit. The subscriber's new status if mail to it stops now."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    if hard:
        suppressed = consent.suppress(session, subscriber, "bounced", "smtp", reply, delivery_id=delivery_id,
                                      now=now)
    else:
        _, suppressed = soft_bounce(session, settings, subscriber, "smtp", reply, delivery_id=delivery_id,
                                    newsletter_id=newsletter_id, now=now)
    return subscriber.status if suppressed else None


def soft_bounce(session: Session, settings: Settings, subscriber: Subscriber, source: str, detail: str, *,
                delivery_id: int | None = None, newsletter_id: int | None = None, source_id: str | None = None,
                now: datetime | None = None) -> tuple[bool, bool]:
    """Record one soft bounce; at `soft_bounce_limit` within the window the address counts as bounced.
    (recorded, suppressed): recorded is False for a notification seen before."""
    now = now or utcnow()
    if not consent.record_event(session, subscriber.id, "soft_bounce", source, detail=detail,
                                newsletter_id=newsletter_id, delivery_id=delivery_id, source_id=source_id,
                                now=now):
        return False, False
    if subscriber.status in consent.SUPPRESSED:
        return True, False  # no mail goes there already; a late notification changes nothing
    since = now - timedelta(seconds=settings.soft_bounce_window)
    # An address an editor restored after it bounced starts counting afresh.
    last_bounce = session.scalar(select(func.max(SubscriberEvent.at)).where(
        SubscriberEvent.subscriber_id == subscriber.id, SubscriberEvent.kind == "bounce"))
    counted = [SubscriberEvent.subscriber_id == subscriber.id, SubscriberEvent.kind == "soft_bounce",
               SubscriberEvent.at >= since]
    if last_bounce is not None:
        counted.append(SubscriberEvent.at > last_bounce)
    count = session.scalar(select(func.count()).select_from(SubscriberEvent).where(*counted))
    if count < settings.soft_bounce_limit:
        return True, False
    why = f"{count} soft bounces in {_span(settings.soft_bounce_window)}; last: {detail}"
    return True, consent.suppress(session, subscriber, "bounced", source, why, delivery_id=delivery_id, now=now)


def _span(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


# ── what the provider tells us later: the webhook ────────────────────────────


@dataclass
class Result:
    """What one webhook call did; the JSON answer."""

    processed: int = 0  # events recorded for a subscriber of ours
    ignored: int = 0  # nothing to do: an address we don't know, a delivery report, a message that isn't SES's
    duplicates: int = 0  # seen before (same provider id): nothing changed
    suppressed: int = 0  # addresses no mail goes to from now on
    rejected: list[dict] = field(default_factory=list)  # generic events we couldn't read, and why
    subscription: str | None = None  # SNS: "confirmed" or "unsubscribe acknowledged"
    addresses: int = field(default=0, repr=False)  # addresses the call reported on: what the rate limit counts
    topic: str | None = None  # SNS: the topic ARN
    error: str | None = None  # the SNS subscription could not be confirmed: said to the caller as 502

    def as_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "addresses"}


def webhook_token(authorization: str) -> str | None:
    """The API token from an `Authorization` header: `Bearer <token>`, or HTTP Basic with the token as
    the password — all Amazon SNS can send (https://sns:TOKEN@host/api/events/bounces)."""
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            credentials = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return credentials.partition(":")[2] or None
    return None


class TooManyEvents(InvalidInput):
    """One call reported on more addresses than MAX_EVENTS: nothing of it was recorded (answered 413)."""


class RateLimited(SyndicateError):
    """A token reported more addresses this hour than Settings.bounce_events_per_hour: the call that went
    over was not recorded (answered 429)."""


def handle(session: Session, settings: Settings, body: bytes, headers: Mapping[str, str],
           now: datetime | None = None, sender: str | None = None) -> Result:
    """Read one webhook call (SNS envelope, bare SES notification, or generic events) and apply it.

    An SNS message is acted on only if Amazon SNS signed it (amazon_sns.verify: BadSignature, or
    CertificateUnavailable when the certificate can't be fetched now). The addresses a call reports are
    counted against `sender` (the API token), at most Settings.bounce_events_per_hour an hour: a call that
    goes over raises RateLimited, and the caller's rollback takes back what it did.

    The SNS signing certificate and a subscription's SubscribeURL are fetched without touching `session`,
    so no database connection (nor SQLite's write lock) is held during a fetch.
    """
    now = now or utcnow()
    headers = {k.lower(): v for k, v in headers.items()}
    data = _json(body, "the body")
    if not isinstance(data, dict):
        raise InvalidInput(f"the body is JSON but not an object; {SHAPES}")
    result = Result()
    if _is_ses(data):  # posted directly, or by SNS with raw message delivery on
        _ses(session, settings, data, result, headers.get("x-amz-sns-message-id"), now)
    elif (kind := data.get("Type") or headers.get("x-amz-sns-message-type")) in SNS_TYPES:
        amazon_sns.verify(data)
        _sns(session, settings, kind, data, result, now)
    elif "events" in data or "type" in data:
        _generic(session, settings, data, result, now)
    else:
        raise InvalidInput(f"this JSON is not a shape we understand; {SHAPES}")
    if sender is not None and result.addresses and not throttle.hit(
            session, f"bounces:{sender}", settings.bounce_events_per_hour, RATE_WINDOW, now, cost=result.addresses):
        raise RateLimited(f"this token may report {settings.bounce_events_per_hour} addresses an hour, and this "
                          f"call's {result.addresses} would go over: nothing of it was recorded. Send it again "
                          "later, or raise SYNDICATE_BOUNCE_EVENTS_PER_HOUR if your lists really bounce this much")
    return result


def _at_most(items: list, what: str) -> list:
    if len(items) > MAX_EVENTS:
        raise TooManyEvents(f"this call reports {len(items)} {what}; at most {MAX_EVENTS} are taken at once, and "
                            "nothing was recorded: send them in smaller calls")
    return items


def _json(raw: bytes | str, what: str):
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # ValueError covers bad UTF-8 too
        raise InvalidInput(f"{what} is not valid JSON ({e}); {SHAPES}") from None


def _is_ses(data: dict) -> bool:
    return isinstance(data.get("notificationType") or data.get("eventType"), str) and "mail" in data


# ── Amazon SNS ───────────────────────────────────────────────────────────────


def _sns(session: Session, settings: Settings, kind: str, data: dict, result: Result, now: datetime) -> None:
    result.topic = data.get("TopicArn") if isinstance(data.get("TopicArn"), str) else None
    if kind == "SubscriptionConfirmation":
        _confirm(data.get("SubscribeURL"), result)
    elif kind == "UnsubscribeConfirmation":
        result.subscription = "unsubscribe acknowledged"  # nothing to do; resubscribing is the operator's call
    else:
        try:
            ses = json.loads(data["Message"])  # a string: the signature covers it
        except (ValueError, RecursionError):
            ses = None
        if isinstance(ses, dict) and _is_ses(ses):
            message_id = data.get("MessageId") if isinstance(data.get("MessageId"), str) else None
            _ses(session, settings, ses, result, message_id, now)
        else:
            # e.g. "Successfully validated SNS topic for Amazon SES event publishing."
            result.ignored += 1


def check_subscribe_url(url) -> str:
    """The SubscribeURL if it points at Amazon SNS itself; InvalidInput for anything else."""
    if not isinstance(url, str) or not url.isascii() or not url.isprintable() or any(c in url for c in " \\"):
        raise InvalidInput("the SubscriptionConfirmation has no usable SubscribeURL; nothing was fetched")
    scheme, _, rest = url.partition("://")
    # Everything up to the first "/" is the host, whole: no user, no port, no "?" or "#" before the path.
    if scheme != "https" or not SNS_HOST.fullmatch(rest.partition("/")[0]):
        raise InvalidInput(f"refusing the SubscribeURL {url[:200]!r}: only https://sns.<region>.amazonaws.com/ "
                           "is fetched, and nothing was fetched; if this really is your topic, confirm the "
                           "subscription in the AWS console")
    return url


def _confirm(url, result: Result) -> None:
    url = check_subscribe_url(url)
    try:
        # No redirects: the checked URL is the only one ever fetched.
        response = requests.get(url, timeout=CONFIRM_TIMEOUT, allow_redirects=False,
                                headers={"User-Agent": "syndicate (SNS subscription confirmation)"})
    except requests.RequestException as e:
        result.error = (f"could not confirm the SNS subscription ({type(e).__name__}); SNS will send the "
                        "confirmation again, or confirm it in the AWS console")
        return
    if response.status_code != 200:
        result.error = (f"Amazon SNS answered {response.status_code} to the subscription confirmation; "
                        "confirm it in the AWS console")
        return
    result.subscription = "confirmed"


# ── SES notifications ────────────────────────────────────────────────────────


# Transient SES subtypes that say the message was refused (too large, content), not that the mailbox is bad.
ABOUT_THE_MESSAGE = {"MessageTooLarge", "ContentRejected", "AttachmentRejected"}


def _ses(session: Session, settings: Settings, data: dict, result: Result, message_id: str | None,
         now: datetime) -> None:
    """A classic notification (notificationType) or an event-publishing record (eventType): same objects."""
    kind = data.get("notificationType") or data.get("eventType")
    mail = _object(data, "mail")
    message_ids = [_object(mail, "commonHeaders").get("messageId")] + [
        h.get("value") for h in _objects(mail, "headers") if str(h.get("name", "")).lower() == "message-id"]
    if kind == "Bounce":
        bounce = _object(data, "bounce")
        bounce_type, subtype = bounce.get("bounceType"), bounce.get("bounceSubType")
        hard = bounce_type == "Permanent"
        if not hard and subtype in ABOUT_THE_MESSAGE:
            result.ignored += 1  # our message was refused, not the address: nothing to count against the reader
            return
        for recipient in _at_most(_objects(bounce, "bouncedRecipients"), "bounced recipients"):
            diagnostic = recipient.get("diagnosticCode")
            detail = (f"SES {bounce_type or 'Undetermined'} bounce ({subtype or 'no subtype'})"
                      + (f": {diagnostic}" if diagnostic else ""))
            _apply(session, settings, result, "bounce" if hard else "soft_bounce", recipient.get("emailAddress"),
                   detail, source="ses", source_id=_ses_id(bounce, message_id, recipient.get("emailAddress")),
                   message_ids=message_ids, now=now)
    elif kind == "Complaint":
        complaint = _object(data, "complaint")
        feedback = complaint.get("complaintFeedbackType")
        detail = f"SES complaint ({feedback})" if feedback else "SES complaint (marked as spam)"
        for recipient in _at_most(_objects(complaint, "complainedRecipients"), "complained recipients"):
            _apply(session, settings, result, "complaint", recipient.get("emailAddress"), detail, source="ses",
                   source_id=_ses_id(complaint, message_id, recipient.get("emailAddress")),
                   message_ids=message_ids, now=now)
    else:
        result.ignored += 1  # Delivery, Send, Open, DeliveryDelay...: nothing to do for a subscriber


def _object(data: dict, key: str) -> dict:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _objects(data: dict, key: str) -> list[dict]:
    value = data.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _ses_id(feedback: dict, message_id: str | None, email) -> str | None:
    if isinstance(feedback.get("feedbackId"), str):
        return _source_id("ses", feedback["feedbackId"], str(email).strip().lower())
    if message_id:
        return _source_id("sns", message_id, str(email).strip().lower())
    return None


def _source_id(*parts: str) -> str:
    """Parts joined by ':', hashed when they would not fit the column (an address can be 320 characters)."""
    key = ":".join(parts)
    return key if len(key) <= SOURCE_ID_MAX else f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


# ── generic JSON events ──────────────────────────────────────────────────────


def _generic(session: Session, settings: Settings, data: dict, result: Result, now: datetime) -> None:
    if "events" in data:
        events = data["events"]
        if not isinstance(events, list):
            raise InvalidInput(f'"events" must be a list of events; {SHAPES}')
    else:
        events = [data]
    for index, event in enumerate(_at_most(events, "events")):
        reason = _generic_problem(event)
        if reason:
            result.addresses += 1  # an unreadable event costs as much as a good one: no free flooding
            result.rejected.append({"index": index, "reason": reason})
            continue
        provider_id = event.get("id")
        source_id = None if provider_id in (None, "") else _source_id("webhook", str(provider_id))
        detail = event.get("reason") or f"{event['type'].replace('_', ' ')} reported by webhook"
        _apply(session, settings, result, event["type"], event["email"], detail, source="webhook",
               source_id=source_id, message_ids=[event.get("message_id")], now=now)


def _generic_problem(event) -> str | None:
    if not isinstance(event, dict):
        return "an event is a JSON object"
    kind = event.get("type")
    if kind not in GENERIC_TYPES:
        return f"type {kind!r} is not one of {', '.join(GENERIC_TYPES)}"
    email = event.get("email")
    if not isinstance(email, str) or "@" not in email:
        return "email: an email address is required"
    for name in ("reason", "message_id"):
        if event.get(name) is not None and not isinstance(event[name], str):
            return f"{name}: must be a string"
    if event.get("id") is not None and (isinstance(event["id"], bool) or not isinstance(event["id"], str | int)):
        return "id: must be a string or a number"
    return None


# ── one event for one address ────────────────────────────────────────────────

SUPPRESSING = {"bounce": "bounced", "complaint": "complained"}


def _apply(session: Session, settings: Settings, result: Result, kind: str, email, detail: str, *, source: str,
           source_id: str | None, message_ids: list, now: datetime) -> None:
    result.addresses += 1
    subscriber = _subscriber(session, email)
    if subscriber is None:
        result.ignored += 1  # not ours (any more): a provider reports on every address it sent to
        return
    delivery_id, newsletter_id = delivery_of(session, settings, subscriber.id, message_ids)
    if kind == "soft_bounce":
        recorded, suppressed = soft_bounce(session, settings, subscriber, source, detail, delivery_id=delivery_id,
                                           newsletter_id=newsletter_id, source_id=source_id, now=now)
    else:
        recorded = suppressed = consent.suppress(session, subscriber, SUPPRESSING[kind], source, detail,
                                                 delivery_id=delivery_id, source_id=source_id, now=now)
    if not recorded:
        result.duplicates += 1
        return
    result.processed += 1
    result.suppressed += int(suppressed)


def _subscriber(session: Session, email) -> Subscriber | None:
    if not isinstance(email, str):
        return None
    address = parseaddr(email)[1] or email
    try:
        address = consent.normalise_email(address)
    except InvalidInput:
        return None  # not an address we could have sent to
    return session.scalar(select(Subscriber).where(Subscriber.email == address))


def delivery_of(session: Session, settings: Settings, subscriber_id: int,
                message_ids: list) -> tuple[int | None, int | None]:
    """The delivery (and its newsletter) a Message-ID names, if it is one of ours and went to this subscriber."""
    for value in message_ids:
        match = OUR_MESSAGE_ID.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            continue
        delivery_id, edition_id, _, domain = match.groups()
        # Rebuilt with our secret: a Message-ID from another installation names none of our rows.
        if make_message_id(domain, settings.secret_key, delivery_id, edition_id) != f"<{match[0].strip('<>')}>":
            continue
        row = session.execute(select(Delivery.id, Edition.newsletter_id).join(Edition).where(
            Delivery.id == int(delivery_id), Delivery.edition_id == int(edition_id),
            Delivery.subscriber_id == subscriber_id)).first()
        if row is not None:
            return row.id, row.newsletter_id
    return None, None
