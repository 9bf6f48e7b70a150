"""Each reader's copy of an edition: the message prepared once (mail.message.PreparedMessage), with only the
reader's own links and Message-ID added; the preview an editor sees and the tests an editor sends are the same copy."""

from __future__ import annotations

import secrets
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage

from syndicate import tokens
from syndicate.config import Settings
from syndicate.errors import ConnectionLost, InvalidInput, TransportError
from syndicate.mail.message import Mailbox, PreparedMessage, envelope_sender, phrase, unsubscribe_mailto
from syndicate.mail.message import message_id as make_message_id
from syndicate.mail.transport import Outgoing, Transport
from syndicate.models import (
    Edition,
    EditionVariant,
    Newsletter,
    utcnow,
)
from syndicate.newsletters.rendering import PREFERENCES_URL, UNSUBSCRIBE_URL, mail_html
from syndicate.subscribers.consent import normalise_email


def list_id(newsletter: Newsletter) -> str:
    """RFC 2919: the newsletter's name (as a phrase: it is an editor's text) and an id under the sender's domain."""
    return f"{phrase(newsletter.name)} <{newsletter.slug}.{newsletter.from_address.rpartition('@')[2]}>"


class MessageFactory:
    """The edition's message is rendered once (PreparedMessage); per recipient only their tokens."""

    def __init__(self, settings: Settings, newsletter: Newsletter, edition: Edition,
                 variant: EditionVariant | None = None):
        """`variant`: some readers' own story set of the edition (delivery.choices), rendered once for them."""
        self.settings, self.newsletter, self.edition = settings, newsletter, edition
        self.domain = newsletter.from_address.rpartition("@")[2]
        self.mailto = unsubscribe_mailto(settings, newsletter.from_address)
        body = variant or edition
        self.prepared = PreparedMessage(
            sender=Mailbox(newsletter.from_name, newsletter.from_address),
            subject=body.subject, text=body.text, html=mail_html(body.html), reply_to=newsletter.reply_to,
            headers={
                "List-Id": list_id(newsletter),
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "Auto-Submitted": "auto-generated",
            },
            dkim=settings.dkim,
        )

    def __call__(self, delivery_id: int, subscriber_id: int, email: str, name: str | None) -> Outgoing:
        token = tokens.unsubscribe_token(self.settings.secret_key, subscriber_id, self.newsletter.id)
        unsubscribe = f"{self.settings.base_url}/u/{token}"
        preferences = f"{self.settings.base_url}/p/{tokens.preferences_token(self.settings.secret_key, subscriber_id)}"
        message_id = make_message_id(self.domain, self.settings.secret_key, delivery_id, self.edition.id)
        offered = f"<{unsubscribe}>, <{self.mailto}%20{token}>" if self.mailto else f"<{unsubscribe}>"
        return self.prepared.message(
            to=email, name=name or "",
            message_id=message_id,
            date=utcnow(),
            per_recipient={"List-Unsubscribe": offered},
            replace={UNSUBSCRIBE_URL: unsubscribe, PREFERENCES_URL: preferences},
            # A preview (delivery 0) has no row for a report to find.
            return_path=envelope_sender(self.settings, "d", delivery_id, self.newsletter.from_address)
            if delivery_id else None,
        )


def proofs(settings: Settings, newsletter: Newsletter, edition: Edition, addresses: list[str]) -> list[Outgoing]:
    """The edition as a recipient gets it, for an editor's check: marked as a test in the subject and a
    header, with links that unsubscribe no one, and no delivery row (a test is not counted)."""
    domain = newsletter.from_address.rpartition("@")[2]
    archive = f"{settings.base_url}/n/{newsletter.slug}"
    prepared = PreparedMessage(
        sender=Mailbox(newsletter.from_name, newsletter.from_address),
        subject=f"[Test] {edition.subject}", text=edition.text, html=mail_html(edition.html),
        reply_to=newsletter.reply_to,
        headers={"List-Id": list_id(newsletter),
                 "Auto-Submitted": "auto-generated",
                 "X-Syndicate-Test": f"edition {edition.number} of {newsletter.slug}; not counted"},
        dkim=settings.dkim,
    )
    messages = []
    for address in addresses:
        message_id = make_message_id(domain, settings.secret_key, "test", edition.id, secrets.token_hex(6))
        links = {UNSUBSCRIBE_URL: archive, PREFERENCES_URL: archive}
        messages.append(prepared.message(to=address, message_id=message_id, date=utcnow(),
                                         per_recipient={}, replace=links))
    return messages


MAX_TEST_ADDRESSES = 20  # a test goes to a few colleagues, not to a list


def preview(settings: Settings, newsletter: Newsletter, edition: Edition) -> EmailMessage:
    """The message exactly as a recipient gets it, assembled by the MessageFactory the send uses, for a
    recipient who doesn't exist (subscriber 0: their own links unsubscribe no one), parsed back."""
    outgoing = MessageFactory(settings, newsletter, edition)(0, 0, "preview@example.invalid", "Preview")
    return message_from_bytes(outgoing.data, policy=email_policy.default)


def send_tests(settings: Settings, transport: Transport, newsletter: Newsletter, edition: Edition,
               addresses: list[str]) -> list[dict]:
    """Send the edition's test messages (proofs) over one connection: per address, whether the
    server took it and its reply. A server that can't be reached raises TransportError."""
    checked = list(dict.fromkeys(normalise_email(a) for a in addresses))
    if not checked:
        raise InvalidInput("give at least one address to send the test to")
    if len(checked) > MAX_TEST_ADDRESSES:
        raise InvalidInput(f"a test goes to at most {MAX_TEST_ADDRESSES} addresses; this was {len(checked)}")
    if not edition.html:
        raise InvalidInput(f"edition #{edition.number} has no content ({edition.status}: {edition.note})")
    results = []
    with transport.connect() as connection:
        for message in proofs(settings, newsletter, edition, checked):
            try:
                results.append(dict(address=message.recipient, accepted=True, reply=connection.send(message)))
            except ConnectionLost:
                raise
            except TransportError as e:
                results.append(dict(address=message.recipient, accepted=False, reply=str(e)))
    return results
