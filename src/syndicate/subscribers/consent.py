"""Subscribers: double opt-in (limited per address and per client), one-click unsubscribe, suppression, and
finding readers; a reader's own preferences page is `preferences`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from syndicate import db, ledger, throttle, tokens
from syndicate.config import Settings
from syndicate.errors import InvalidInput, NotFound, TransportError
from syndicate.ledger import MAIL_UNCLAIMED, SUBSCRIBER_SUPPRESSED, MailStatus
from syndicate.mail.message import Mailbox, build_message, envelope_sender
from syndicate.mail.message import message_id as make_message_id
from syndicate.mail.transport import Outgoing
from syndicate.models import (
    ConfirmationMail,
    Delivery,
    Edition,
    Newsletter,
    Subscriber,
    SubscriberEvent,
    Subscription,
    utcnow,
)
from syndicate.subscribers import choices
from syndicate.templating import exists, render

LOCAL_PART_MAX = 64  # RFC 5321 4.5.3.1.1


def normalise_email(email: str) -> str:
    """Lower-case, with an internationalised domain in its ASCII (punycode) form.

    Addresses whose local part isn't ASCII need SMTPUTF8 all the way; we refuse
    them rather than accept a subscriber we can't deliver to.
    """
    try:
        valid = validate_email(email.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as e:
        raise InvalidInput(f"{email!r} is not an email address we can send to: {e}") from e
    # email-validator lets a longer one through unless strict; mail servers may refuse it (RFC 5321 4.5.3.1.1).
    if len(valid.local_part) > LOCAL_PART_MAX:
        raise InvalidInput(f"{email!r} is not an email address we can send to: the part before the @ is "
                           f"{len(valid.local_part)} characters long, and mail servers take at most "
                           f"{LOCAL_PART_MAX}; check the address")
    return (valid.ascii_email or valid.normalized).lower()


CONFIRMATION_WINDOW = 3600  # seconds: the confirmation limits are per hour


@dataclass
class Signup:
    subscriber: Subscriber
    send_confirmation: bool  # a confirmation mail should go out now
    awaiting_confirmation: bool  # some of the chosen newsletters wait for the reader's confirmation
    held_back: str | None = None  # "address" or "client": whose hourly limit kept the confirmation mail back


def subscribe(session: Session, email: str, newsletter_ids: list[int], *, name: str | None = None,
              confirmed: bool = False, source: str | None = None, client: str | None = None,
              settings: Settings | None = None, now: datetime | None = None, timezone: str | None = None) -> Signup:
    """Record a signup. Without `confirmed` (the editor vouching for consent), every newsletter
    not already active waits for the reader to confirm by mail — whoever typed the address.

    Confirmation mails are limited per hour per address and per `client` (the visitor's IP address;
    the CLI has none), to `settings`' limits (the defaults without), so the form can't flood an inbox.
    A signup over a limit is still recorded: only its mail is held back.

    `source` (web, cli) puts the signup on the subscriber's timeline; without it the caller records
    its own event (an import says "imported").

    `timezone` (checked by the caller: subscribers.zones) is kept for a new reader only: whoever types an
    address can't change an existing reader's zone."""
    now = now or utcnow()
    email = normalise_email(email)
    if not newsletter_ids:
        raise InvalidInput("choose at least one newsletter")
    chosen = session.scalars(select(Newsletter).where(Newsletter.id.in_(newsletter_ids))
                             .order_by(Newsletter.name)).all()
    if missing := set(newsletter_ids) - {n.id for n in chosen}:
        raise InvalidInput(f"no newsletter with id {sorted(missing)}")
    if not (source == "web" and not confirmed):
        _refuse_erased(session, email)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == email))
    _refuse_archived(session, subscriber, chosen)
    if subscriber is None:
        subscriber = Subscriber(email=email, name=(name or "").strip()[:200] or None, created_at=now,
                                timezone=timezone)
        session.add(subscriber)
        session.flush()
    if confirmed and subscriber.status == "pending":
        subscriber.status, subscriber.confirmed_at = "confirmed", now
    wanted = "active" if confirmed else "pending"
    for newsletter in chosen:
        subscription = session.scalar(select(Subscription).where(
            Subscription.subscriber_id == subscriber.id, Subscription.newsletter_id == newsletter.id))
        if subscription is None:
            session.add(Subscription(subscriber_id=subscriber.id, newsletter_id=newsletter.id,
                                     status=wanted, created_at=now))
        elif subscription.status != "active":
            if subscription.status == "unsubscribed":
                choices.start_afresh(session, subscription)
            subscription.status, subscription.unsubscribed_at = wanted, None
    session.flush()
    awaiting = bool(session.scalar(select(func.count()).select_from(Subscription).where(
        Subscription.subscriber_id == subscriber.id, Subscription.status == "pending")))
    held_back = _may_send_confirmation(session, email, client, settings, now) if awaiting else None
    send = awaiting and held_back is None
    if send:
        subscriber.confirmations_sent += 1
        subscriber.confirmation_sent_at = now
        # One mail waits at a time: its link is the same, so an older one still waiting goes as this one.
        session.execute(update(ConfirmationMail).where(
            ConfirmationMail.subscriber_id == subscriber.id, ConfirmationMail.kind == "confirm",
            ConfirmationMail.status.in_((MailStatus.PENDING, MailStatus.DEFERRED)))
            .values(status=MailStatus.SKIPPED, claimed_by=None, last_reply="a newer confirmation mail was asked for")
            .execution_options(synchronize_session=False))
        session.add(ConfirmationMail(subscriber_id=subscriber.id, status=MailStatus.PENDING, created_at=now,
                                     next_attempt_at=now))
    detail = ", ".join(n.name for n in chosen) + (" (consent vouched for by the editor)" if confirmed else "")
    if held_back:
        whose = "this address" if held_back == "address" else "sign-ups from one IP address"  # no IP kept
        detail += f"; no confirmation mail: the hourly limit for {whose} was reached"
    if source is not None:
        record_event(session, subscriber.id, "subscribed", source, detail=detail, now=now)
    return Signup(subscriber, send, awaiting, held_back)


def _refuse_erased(session: Session, email: str) -> None:
    """An address erased at its owner's request comes back only through their own sign-up, confirmed by mail."""
    from syndicate.subscribers import rights

    if rights.is_erased(session, email):
        raise InvalidInput(f"{email} was {rights.ERASED_REASON}: only they can sign up again, through the "
                           "sign-up form, and confirm by mail")


def _refuse_archived(session: Session, subscriber: Subscriber | None, chosen: list[Newsletter]) -> None:
    """An archived newsletter takes no new readers; one who has it already may sign up again harmlessly."""
    archived = [n for n in chosen if n.status == "archived"]
    if archived and subscriber is not None:
        has = set(session.scalars(select(Subscription.newsletter_id).where(
            Subscription.subscriber_id == subscriber.id, Subscription.status.in_(("active", "pending")))))
        archived = [n for n in archived if n.id not in has]
    if archived:
        raise InvalidInput(f"{', '.join(n.name for n in archived)} is archived: it takes no new readers")


def _may_send_confirmation(session: Session, email: str, client: str | None, settings: Settings | None,
                           now: datetime) -> str | None:
    """None when a confirmation mail may go out now (and it is counted); else whose limit stops it."""
    per_address = settings.confirmations_per_address if settings else Settings.confirmations_per_address
    per_client = settings.confirmations_per_client if settings else Settings.confirmations_per_client
    # Both counts or neither: a mail held back by one limit uses up nothing of the other.
    both = session.begin_nested()
    if not throttle.hit(session, f"confirm:address:{email}", per_address, CONFIRMATION_WINDOW, now):
        both.rollback()
        return "address"
    if client is not None and not throttle.hit(session, f"confirm:client:{client}", per_client,
                                               CONFIRMATION_WINDOW, now):
        both.rollback()
        return "client"
    both.commit()
    return None


def confirm(session: Session, settings: Settings, token: str, now: datetime | None = None) -> Subscriber:
    """The reader clicked the link: the address is theirs, and the newsletters they chose start.

    A reader who had left every newsletter and signed up again is back; an address that bounced or
    complained stays suspended (the caller says so) until an editor restores it. A reader whose data was
    erased and who signed up again gives fresh consent here: the erased address's block goes. Each newsletter
    that sends a welcome gets a welcome mail row (the caller hands them to send_confirmation after commit)."""
    from syndicate.subscribers import rights

    now = now or utcnow()
    subscriber = session.get(Subscriber, tokens.read_confirm_token(settings.secret_key, token))
    if subscriber is None:
        raise NotFound("this confirmation link belongs to an address that no longer exists")
    chosen = session.scalars(select(Subscription).where(
        Subscription.subscriber_id == subscriber.id, Subscription.status == "pending")).all()
    was = subscriber.status
    if was == "pending" or (was == "unsubscribed" and chosen):
        subscriber.status, subscriber.confirmed_at = "confirmed", now
    for subscription in chosen:
        subscription.status = "active"
        if subscription.newsletter.welcome:
            session.add(ConfirmationMail(subscriber_id=subscriber.id, kind="welcome",
                                         newsletter_id=subscription.newsletter_id, status=MailStatus.PENDING,
                                         created_at=now, next_attempt_at=now))
    if chosen:
        rights.forget_erasure(session, subscriber.email)
    session.execute(update(ConfirmationMail).where(  # the reader was quicker than the mail: it needn't go
        ConfirmationMail.subscriber_id == subscriber.id, ConfirmationMail.kind == "confirm",
        ConfirmationMail.status.in_((MailStatus.PENDING, MailStatus.DEFERRED)))
        .values(status=MailStatus.SKIPPED, last_reply="confirmed before it went out")
        .execution_options(synchronize_session=False))
    if chosen or subscriber.status != was:  # pressing the button twice adds nothing to the timeline
        record_event(session, subscriber.id, "resubscribed" if was == "unsubscribed" else "confirmed", "web",
                     detail=", ".join(sorted(s.newsletter.name for s in chosen)), now=now)
    return subscriber


def by_unsubscribe_token(session: Session, settings: Settings, token: str) -> Subscription:
    """The subscription an unsubscribe link names; NotFound once it is gone."""
    subscriber_id, newsletter_id = tokens.read_unsubscribe_token(settings.secret_key, token)
    subscription = session.scalar(select(Subscription).where(
        Subscription.subscriber_id == subscriber_id, Subscription.newsletter_id == newsletter_id))
    if subscription is None:
        raise NotFound("this unsubscribe link belongs to a subscription that no longer exists")
    return subscription


def unsubscribe(session: Session, settings: Settings, token: str, now: datetime | None = None, *,
                source: str = "one-click") -> Subscription:
    """Leave one newsletter at once; a delivery of it still waiting to go out is skipped."""
    now = now or utcnow()
    subscription = by_unsubscribe_token(session, settings, token)
    subscriber_id, newsletter_id = subscription.subscriber_id, subscription.newsletter_id
    if subscription.status != "unsubscribed":  # a provider may POST twice: the second changes nothing
        subscription.status, subscription.unsubscribed_at = "unsubscribed", now
        record_event(session, subscriber_id, "unsubscribed", source, newsletter_id=newsletter_id, now=now)
    skip_open_deliveries(session, subscriber_id, "unsubscribed before sending", newsletter_id)
    return subscription


UNDO_DAYS = 30  # an unsubscribe can be taken back from its own page this long; then a new sign-up


def undo_unsubscribe(session: Session, settings: Settings, token: str, now: datetime | None = None) -> Subscription:
    """The reader pressed Undo on the unsubscribe page (their own link, within UNDO_DAYS): the newsletter
    comes back. InvalidInput, saying how to sign up again, later; a suspended address stays suspended."""
    now = now or utcnow()
    subscription = by_unsubscribe_token(session, settings, token)
    subscriber_id, newsletter_id = subscription.subscriber_id, subscription.newsletter_id
    if subscription.status != "unsubscribed":  # pressed twice: nothing to undo
        return subscription
    subscriber = subscription.subscriber
    if subscriber.status in ("bounced", "complained"):
        raise InvalidInput(f"mail to {subscriber.email} is suspended, so {subscription.newsletter.name} can't "
                           "start again from here; reply to any of our emails and we'll restore it")
    if subscription.unsubscribed_at is None or subscription.unsubscribed_at < now - timedelta(days=UNDO_DAYS):
        raise InvalidInput(f"you left {subscription.newsletter.name} more than {UNDO_DAYS} days ago, so this "
                           "link can't undo it any more; sign up again on the sign-up page")
    if subscription.newsletter.status == "archived":
        raise InvalidInput(f"{subscription.newsletter.name} is archived: it takes no readers any more")
    subscription.status, subscription.unsubscribed_at = "active", None
    if subscriber.status in ("pending", "unsubscribed"):  # their own link: the address is theirs
        subscriber.status, subscriber.confirmed_at = "confirmed", subscriber.confirmed_at or now
    record_event(session, subscriber_id, "resubscribed", "web", newsletter_id=newsletter_id,
                 detail="undid unsubscribing", now=now)
    return subscription


def confirmation_to_mail(session: Session, settings: Settings, subscriber_id: int, token: str,
                         now: datetime) -> tuple[int, Outgoing] | None:
    """Claim the subscriber's confirmation mail for the task `token` (ledger.claim): the mail row and the
    message to send now; None if there is none to send (another task has it, it went out, or nothing waits
    for confirmation any more: then it is skipped, and the tick stops handing it out)."""
    mine = and_(ConfirmationMail.subscriber_id == subscriber_id, ConfirmationMail.kind == "confirm")
    if not ledger.claim(session, ConfirmationMail, mine, token, now):
        return None
    claimed = session.scalars(select(ConfirmationMail.id).where(mine, ConfirmationMail.claimed_by == token)
                              .order_by(ConfirmationMail.id)).all()
    *older, mail_id = claimed
    for old in older:  # the same link: the newest goes for all of them
        ledger.settle(session, ConfirmationMail, old, token, status=MailStatus.SKIPPED,
                      last_reply="a newer confirmation mail was asked for")
    subscriber = session.get(Subscriber, subscriber_id)
    message = confirmation_message(session, settings, subscriber, mail_id)
    if message is None:
        ledger.settle(session, ConfirmationMail, mail_id, token, status=MailStatus.SKIPPED,
                      last_reply="nothing waits for confirmation any more")
        return None
    return mail_id, message


def confirmation_sent(session: Session, settings: Settings, mail_id: int, token: str, now: datetime, *,
                      reply: str, error: TransportError | None = None) -> str:
    """Record what the server said to a confirmation mail, while `token` holds it: sent; refused for good
    (failed); or put off: due again after a backoff, and failed once older than the give-up period."""
    mail = session.get(ConfirmationMail, mail_id)
    if error is None:
        outcome = dict(status=MailStatus.SENT, sent_at=now, last_reply=reply)
    elif error.permanent:
        outcome = dict(status=MailStatus.FAILED, last_reply=reply)
    elif mail.created_at <= now - timedelta(seconds=settings.give_up_after):
        outcome = dict(status=MailStatus.FAILED, last_reply=f"given up, the server kept putting it off: {reply}")
    else:
        outcome = dict(status=MailStatus.DEFERRED, last_reply=reply, attempts=mail.attempts + 1,
                       next_attempt_at=now + ledger.backoff(mail.attempts + 1, settings.retry_base,
                                                            settings.retry_max))
    if not ledger.settle(session, ConfirmationMail, mail_id, token, **outcome):
        return "taken over by another task"
    return f"{outcome['status']}: {reply}"


def lost_confirmations(session: Session, settings: Settings, now: datetime) -> list[int]:
    """The subscribers whose confirmation mail needs a task now, marked handed out (for the caller to queue
    after commit): claims whose worker died, mails put off and due again, and mails whose task was lost
    (handed out settings.leases.requeue ago and never claimed)."""
    leases = settings.leases
    revived = ledger.revive(session, ConfirmationMail, now, leases, next_attempt_at=now)
    session.execute(update(ConfirmationMail).where(  # a link that old is no invitation any more
        ConfirmationMail.status.in_((MailStatus.PENDING, MailStatus.DEFERRED)),
        ConfirmationMail.created_at <= now - timedelta(seconds=settings.give_up_after))
        .values(status=MailStatus.FAILED, last_reply="given up: not sent within the give-up period")
        .execution_options(synchronize_session=False))
    due = or_(and_(ConfirmationMail.status == MailStatus.DEFERRED, ConfirmationMail.next_attempt_at <= now),
              and_(ConfirmationMail.status == MailStatus.PENDING,
                   ConfirmationMail.next_attempt_at <= now - leases.requeue))
    rows = session.execute(select(ConfirmationMail.id, ConfirmationMail.subscriber_id).where(due)).all()
    if rows:
        session.execute(update(ConfirmationMail).where(ConfirmationMail.id.in_([r.id for r in rows]), due)
                        .values(status=MailStatus.PENDING, next_attempt_at=now)
                        .execution_options(synchronize_session=False))
    revived_for = session.scalars(select(ConfirmationMail.subscriber_id).where(ConfirmationMail.id.in_(revived)))
    return sorted({r.subscriber_id for r in rows} | set(revived_for))


def confirmation_message(session: Session, settings: Settings, subscriber: Subscriber,
                         mail_id: int) -> Outgoing | None:
    """Confirmation mail `mail_id`, with the link; None when nothing waits for confirmation any more."""
    newsletters = session.scalars(
        select(Newsletter).join(Subscription)
        .where(Subscription.subscriber_id == subscriber.id, Subscription.status == "pending")
        .order_by(Newsletter.name)
    ).all()
    if not newsletters:
        return None
    sender = newsletters[0]
    url = f"{settings.base_url}/confirm/{tokens.confirm_token(settings.secret_key, subscriber.id)}"
    # One mail for every newsletter waiting: in the language of the one it comes from (its From), with its address.
    context = dict(subscriber=subscriber, newsletters=newsletters, confirm_url=url, language=sender.language,
                   postal_address=sender.postal_address or settings.postal_address)
    context["subject"] = render("email/confirm/subject.txt", **context).strip()
    domain = sender.from_address.rpartition("@")[2]
    message_id = make_message_id(domain, settings.secret_key, "confirm", subscriber.id, mail_id)
    data = build_message(
        sender=Mailbox(sender.from_name, sender.from_address),
        to=Mailbox(subscriber.name or "", subscriber.email),
        subject=context["subject"],
        text=render("email/confirm/body.txt", **context),
        html=render("email/confirm/body.html", **context),
        message_id=message_id,
        date=utcnow(),
        headers={"Auto-Submitted": "auto-generated"},
        dkim=settings.dkim,
    )
    return_path = envelope_sender(settings, "c", subscriber.id, sender.from_address)
    return Outgoing(return_path, subscriber.email, data, message_id)


def confirmation_language(session: Session, subscriber_id: int) -> str | None:
    """The language of the subscriber's confirmation mail (its sender's, as confirmation_message chooses);
    None when nothing waits for confirmation."""
    return session.scalar(select(Newsletter.language).join(Subscription).where(
        Subscription.subscriber_id == subscriber_id, Subscription.status == "pending")
        .order_by(Newsletter.name).limit(1))
# ── the other mails of the ledger: a welcome, the erasure link ───────────────
#
# One ledger for every mail to a reader about their own subscription (ConfirmationMail.kind): the same
# task sends them (send_confirmation), the same tick revives them, so none goes twice or is lost.


def reader_mails_to_send(session: Session, settings: Settings, subscriber_id: int, token: str,
                         now: datetime) -> list[tuple[int, Outgoing]]:
    """Claim the subscriber's welcome and erasure mails for the task `token`: each row and its message. One no
    longer wanted (the reader left that newsletter, or the address is suppressed) is skipped, with why."""
    mine = and_(ConfirmationMail.subscriber_id == subscriber_id, ConfirmationMail.kind != "confirm")
    if not ledger.claim(session, ConfirmationMail, mine, token, now):
        return []
    due = []
    for mail in session.scalars(select(ConfirmationMail).where(mine, ConfirmationMail.claimed_by == token)
                                .order_by(ConfirmationMail.id)).all():
        message, why = _reader_message(session, settings, mail)
        if message is None:
            ledger.settle(session, ConfirmationMail, mail.id, token, status=MailStatus.SKIPPED, last_reply=why)
        else:
            due.append((mail.id, message))
    return due


def _reader_message(session: Session, settings: Settings, mail: ConfirmationMail) -> tuple[Outgoing | None, str]:
    subscriber = session.get(Subscriber, mail.subscriber_id)
    if mail.kind == "erase":
        # From the newsletter they get (or last got): the name they know us by.
        sender = session.scalar(select(Newsletter).join(Subscription)
                                .where(Subscription.subscriber_id == subscriber.id)
                                .order_by(Subscription.status != "active", Newsletter.name)) \
            or session.scalar(select(Newsletter).order_by(Newsletter.id))
        if sender is None:
            return None, "no newsletter to send it from"
        url = f"{settings.base_url}/erase/{tokens.erase_token(settings.secret_key, subscriber.id)}"
        context = dict(subscriber=subscriber, newsletter=sender, erase_url=url, hours=tokens.ERASE_LINK_HOURS)
        return _reader_mail(settings, subscriber, sender, "email/erase", context, mail), ""
    newsletter = session.get(Newsletter, mail.newsletter_id)
    status = session.scalar(select(Subscription.status).where(
        Subscription.subscriber_id == subscriber.id, Subscription.newsletter_id == newsletter.id))
    if status != "active" or subscriber.status in SUPPRESSED:
        return None, "no longer wanted: the reader doesn't get this newsletter now"
    folder = f"email/welcome-{newsletter.slug}"  # an override's own welcome for this newsletter
    if not exists(f"{folder}/body.html"):
        folder = "email/welcome"
    preferences_token = tokens.preferences_token(settings.secret_key, subscriber.id)
    context = dict(subscriber=subscriber, newsletter=newsletter, preferences_url=f"{settings.base_url}/p/"
                   f"{preferences_token}", archive_url=f"{settings.base_url}/n/{newsletter.slug}")
    return _reader_mail(settings, subscriber, newsletter, folder, context, mail), ""


def _reader_mail(settings: Settings, subscriber: Subscriber, sender: Newsletter, folder: str, context: dict,
                 mail: ConfirmationMail) -> Outgoing:
    context["subject"] = " ".join(render(f"{folder}/subject.txt", language=sender.language, **context).split())
    domain = sender.from_address.rpartition("@")[2]
    message_id = make_message_id(domain, settings.secret_key, mail.kind, subscriber.id, mail.id)
    data = build_message(
        sender=Mailbox(sender.from_name, sender.from_address),
        to=Mailbox(subscriber.name or "", subscriber.email),
        subject=context["subject"],
        text=render(f"{folder}/body.txt", language=sender.language, **context),
        html=render(f"{folder}/body.html", language=sender.language, **context),
        message_id=message_id,
        date=utcnow(),
        headers={"Auto-Submitted": "auto-generated"},
        dkim=settings.dkim,
    )
    return Outgoing(envelope_sender(settings, "c", subscriber.id, sender.from_address), subscriber.email, data,
                    message_id)


def mails_waiting(session: Session, subscriber_id: int) -> int:
    """The subscriber's welcome and erasure mails not sent yet: the caller hands them over after commit."""
    return session.scalar(select(func.count()).select_from(ConfirmationMail).where(
        ConfirmationMail.subscriber_id == subscriber_id, ConfirmationMail.kind != "confirm",
        ConfirmationMail.status == MailStatus.PENDING))


def ask_erasure(session: Session, subscriber: Subscriber, now: datetime | None = None) -> bool:
    """The reader pressed "Delete my data": a mail with the link that confirms it, so only the address's owner
    can erase it. False (and no new mail) while one asked for in the last hour waits or went out."""
    now = now or utcnow()
    recent = session.scalar(select(ConfirmationMail.id).where(
        ConfirmationMail.subscriber_id == subscriber.id, ConfirmationMail.kind == "erase",
        ConfirmationMail.created_at > now - timedelta(seconds=CONFIRMATION_WINDOW),
        ConfirmationMail.status.in_((MailStatus.PENDING, MailStatus.DEFERRED, MailStatus.SENDING, MailStatus.SENT))))
    if recent is not None:
        return False
    session.add(ConfirmationMail(subscriber_id=subscriber.id, kind="erase", status=MailStatus.PENDING,
                                 created_at=now, next_attempt_at=now))
    record_event(session, subscriber.id, "erasure asked", "web", detail="a link to confirm it was mailed", now=now)
    return True


# ── events and suppression ───────────────────────────────────────────────────

SUPPRESSED = SUBSCRIBER_SUPPRESSED  # statuses no mail goes to


def record_event(session: Session, subscriber_id: int, kind: str, source: str, *, detail: str | None = None,
                 newsletter_id: int | None = None, delivery_id: int | None = None, source_id: str | None = None,
                 now: datetime | None = None) -> bool:
    """Add a line to the subscriber's timeline. False (and nothing added) if `source_id` was seen before:
    a provider sending the same notification twice changes nothing."""
    seen = select(SubscriberEvent.id).where(SubscriberEvent.source_id == source_id)
    if source_id is not None and session.scalar(seen):
        return False
    session.add(SubscriberEvent(subscriber_id=subscriber_id, kind=kind, source=source,
                                detail=(detail or None) and detail[:2000], newsletter_id=newsletter_id,
                                delivery_id=delivery_id, source_id=source_id, at=now or utcnow()))
    session.flush()
    return True


def skip_open_deliveries(session: Session, subscriber_id: int, reason: str, newsletter_id: int | None = None) -> int:
    """Deliveries not yet handed to the server are skipped, with why: leaving takes effect at once."""
    query = (update(Delivery)
             .where(Delivery.subscriber_id == subscriber_id, Delivery.status.in_(MAIL_UNCLAIMED))
             .values(status="skipped", last_reply=reason)
             .execution_options(synchronize_session=False))
    if newsletter_id is not None:
        query = query.where(Delivery.edition_id.in_(select(Edition.id).where(Edition.newsletter_id == newsletter_id)))
    return session.execute(query).rowcount


def suppress(session: Session, subscriber: Subscriber, status: str, source: str, detail: str, *,
             delivery_id: int | None = None, source_id: str | None = None, now: datetime | None = None) -> bool:
    """Stop all mail to an address: bounced (it doesn't exist), complained (spam report) or unsubscribed
    (left everything). Kept as a row, so an import can't add the address back by accident.
    False if this event (by `source_id`) was already recorded."""
    assert status in SUPPRESSED, status
    now = now or utcnow()
    kind = {"bounced": "bounce", "complained": "complaint", "unsubscribed": "unsubscribed"}[status]
    if not record_event(session, subscriber.id, kind, source, detail=detail, delivery_id=delivery_id,
                        source_id=source_id, now=now):
        return False
    if subscriber.status not in ("complained",):  # a complaint is the strongest word; nothing overrides it
        subscriber.status = status
    if status != "bounced":  # a bounced address keeps its choices, in case the editor restores it
        session.execute(
            update(Subscription)
            .where(Subscription.subscriber_id == subscriber.id, Subscription.status != "unsubscribed")
            .values(status="unsubscribed", unsubscribed_at=now)
            .execution_options(synchronize_session=False)
        )
    skip_open_deliveries(session, subscriber.id, f"{status} before sending: {detail}"[:2000])
    session.flush()
    return True


def restore(session: Session, subscriber: Subscriber, reason: str, now: datetime | None = None, *,
            source: str = "cli") -> None:
    """An editor's decision that mail may go to a suppressed address again (the reader asked, the mailbox
    works again). Their newsletters come back as they were; one they left stays left."""
    if subscriber.status not in SUPPRESSED:
        raise InvalidInput(f"{subscriber.email} is {subscriber.status}: there is nothing to restore")
    if not reason.strip():
        raise InvalidInput("say why mail may go to this address again; it goes on the timeline")
    record_event(session, subscriber.id, "restored", source, detail=f"was {subscriber.status}: {reason.strip()}",
                 now=now)
    subscriber.status = "confirmed"
    subscriber.confirmed_at = subscriber.confirmed_at or now or utcnow()
    session.flush()


# ── finding subscribers ──────────────────────────────────────────────────────

STATUSES = ("pending", "confirmed", *SUPPRESSED)
PER_PAGE = 50


@dataclass
class Found:
    subscribers: list[Subscriber]  # this page's, by address
    newsletters: dict[int, list[str]]  # subscriber id → slugs of the newsletters they get (or wait to confirm)
    by_status: dict[str, int]  # everyone matching the text and newsletter, per status (the status filter aside)
    total: int  # everyone matching, over every page
    page: int
    pages: int


def by_id(session: Session, subscriber_id: int, missing: str | None = None) -> Subscriber:
    """The subscriber; NotFound, saying `missing` (to a reader) or their id (to an editor), otherwise."""
    return db.row(session, Subscriber, subscriber_id, missing or f"no subscriber {subscriber_id}")


def by_email(session: Session, email: str, missing: str | None = None) -> Subscriber:
    """The subscriber with this address, as normalise_email reads it (any case; InvalidInput if it is no
    address); NotFound, saying `missing` or the address, otherwise."""
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == normalise_email(email)))
    if subscriber is None:
        raise NotFound(missing or f"no subscriber {email!r}")
    return subscriber


def search(session: Session, text: str = "", newsletter_id: int | None = None, status: str | None = None,
           page: int = 1, per_page: int = PER_PAGE) -> Found:
    """Subscribers whose address or name holds `text` (any case), getting `newsletter_id` (or waiting to
    confirm it), with `status`; one page of them, by address.

    Typed with an @ after its first character, `text` is the start of an address: found by a range on the
    email index, at once at any size. Anything else (part of a name, "@example.org") is a scan of the
    table, about 30 ms for 100,000 subscribers on PostgreSQL."""
    if status and status not in STATUSES:
        raise InvalidInput(f"no subscriber status {status!r}: {', '.join(STATUSES)}")
    text = " ".join(text.split()).lower()  # addresses are stored lower-case
    matching = []
    if "@" in text[1:]:
        # LIKE 'x%' only uses a btree index under the C collation; a range uses it under any. Addresses are
        # lower-case ASCII, whose byte order (C, C.UTF-8, SQLite) keeps every one starting with `text` in it.
        after = text[:-1] + chr(ord(text[-1]) + 1)
        matching += [Subscriber.email >= text, Subscriber.email < after, Subscriber.email.startswith(text,
                                                                                                     autoescape=True)]
    elif text:
        matching.append(Subscriber.email.contains(text, autoescape=True)
                        | func.lower(Subscriber.name).contains(text, autoescape=True))
    if newsletter_id is not None:
        matching.append(Subscriber.id.in_(select(Subscription.subscriber_id).where(
            Subscription.newsletter_id == newsletter_id, Subscription.status.in_(("active", "pending")))))
    by_status = dict(session.execute(select(Subscriber.status, func.count()).where(*matching)
                                     .group_by(Subscriber.status)).all())
    total = by_status.get(status, 0) if status else sum(by_status.values())
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    if status:
        matching.append(Subscriber.status == status)
    found = session.scalars(select(Subscriber).where(*matching).order_by(Subscriber.email)
                            .limit(per_page).offset((page - 1) * per_page)).all()
    newsletters: dict[int, list[str]] = {s.id: [] for s in found}
    for subscriber_id, slug in session.execute(
            select(Subscription.subscriber_id, Newsletter.slug).join(Newsletter)
            .where(Subscription.subscriber_id.in_(list(newsletters)), Subscription.status.in_(("active", "pending")))
            .order_by(Newsletter.slug)):
        newsletters[subscriber_id].append(slug)
    return Found(list(found), newsletters, by_status, total, page, pages)
