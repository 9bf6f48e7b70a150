"""`syndicate inbound`: mail sent back to us — bounce reports, complaints, unsubscribe mails — three ways in
(a pipe from the MTA, an LMTP/SMTP listener, an IMAP mailbox), one handler (inbound.handling)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click

from syndicate.cli.common import emit, json_option, lazy, opened, services, show
from syndicate.errors import SyndicateError

handling = lazy("syndicate.inbound.handling")
reports = lazy("syndicate.inbound.reports")

EX_TEMPFAIL = 75  # sysexits.h: Postfix's pipe and local delivery keep the message and try again
CHUNK = 64 * 1024


@click.group()
def inbound() -> None:
    """Mail sent back to us: bounce reports, complaints, unsubscribe mails.

    Point the bounce domain (SYNDICATE_BOUNCE_DOMAIN, or each newsletter's From domain) at one of
    `process`, `serve` or `poll`, and set SYNDICATE_INBOUND_MAIL=1 (or SYNDICATE_INBOUND_IMAP_URL) so mail
    goes out with return paths that name it and a mailto unsubscribe.
    """


@inbound.command("process")
@click.argument("file", type=click.File("rb"), default="-")
@click.option("--recipient", "recipients", multiple=True, metavar="ADDRESS",
              help="The envelope recipient (Postfix pipe: ${original_recipient}); default: $ORIGINAL_RECIPIENT "
                   "and $RECIPIENT, which Postfix's local delivery sets.")
@click.pass_context
def process(ctx, file, recipients) -> None:
    """Handle one message (RFC 5322) from FILE or standard input: for an MTA's pipe or alias, procmail,
    or a script. Exits 0 once handled (also when nothing was to be done), 75 when it could not be recorded:
    the MTA keeps the message and tries again."""
    raw = _read_bounded(file)
    recipients = recipients or tuple(filter(None, (os.environ.get("ORIGINAL_RECIPIENT"),
                                                   os.environ.get("RECIPIENT"))))
    try:
        svc = services(ctx)
        outcome = handling.receive(svc.Session, svc.settings, raw, via="pipe", recipients=tuple(recipients))
    except Exception as e:  # the database or its settings: the MTA must keep the message
        click.echo(f"error: could not record the message ({type(e).__name__}: {e}); the MTA keeps it and "
                   "tries again", err=True)
        sys.exit(EX_TEMPFAIL)
    click.echo(outcome.line)


def _read_bounded(file) -> bytes:
    """At most MAX_BYTES + 1 bytes are kept (enough to refuse it by its size); the rest is read and dropped,
    so the writer (an MTA's pipe) is never left blocked."""
    limit = reports.MAX_BYTES + 1
    data = bytearray()
    while chunk := file.read(CHUNK):
        if len(data) < limit:
            data += chunk[: limit - len(data)]
    return bytes(data)


@inbound.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=2424, show_default=True, help="Port to listen on.")
@click.option("--smtp", "plain_smtp", is_flag=True, help="Speak SMTP instead of LMTP (for an MTA that relays "
                                                          "the bounce domain by SMTP, or an MX record).")
@click.option("--hostname", default=None, help="The name the listener greets with (default: this host's).")
@click.pass_context
def serve(ctx, host, port, plain_smtp, hostname) -> None:
    """Listen for the bounce domain's mail, handed over by an MTA over LMTP (or SMTP)."""
    import socket

    # Imported here, not through `lazy`: the listener's threads would race to load a lazy module, and the
    # second would find it half made (AttributeError on the first report of a burst).
    from syndicate.inbound import handling, listener

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's every command; ours is a line a message
    svc = services(ctx)
    _warn_unless_inbound(svc.settings)

    def handle(raw: bytes, recipients: tuple[str, ...]) -> str:
        via = "smtp" if plain_smtp else "lmtp"
        return handling.receive(svc.Session, svc.settings, raw, via=via, recipients=recipients).outcome

    try:
        asyncio.run(listener.serve(handle, host, port, lmtp=not plain_smtp, hostname=hostname or socket.getfqdn()))
    except OSError as e:
        raise SyndicateError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port, or stop "
                             "what uses it") from e


@inbound.command("poll")
@click.pass_context
def poll(ctx) -> None:
    """Read the IMAP mailbox (SYNDICATE_INBOUND_IMAP_URL) once: handle each message, then move it to the
    done folder (or delete it). Beat does this every SYNDICATE_INBOUND_POLL_INTERVAL seconds."""
    from syndicate.inbound import imap

    svc = services(ctx)
    if svc.settings.inbound_imap is None:
        raise SyndicateError("SYNDICATE_INBOUND_IMAP_URL is not set; set it to the mailbox bounce reports go to, "
                             "e.g. imaps://bounces%40example.com:PASSWORD@imap.example.com/INBOX?done=Processed")
    result = imap.poll(svc.settings.inbound_imap, lambda raw: handling.receive(
        svc.Session, svc.settings, raw, via="imap").outcome)
    click.echo(result.summary)


@inbound.command("list")
@click.option("--outcome", type=click.Choice(["bounce", "soft_bounce", "complaint", "unsubscribe", "duplicate",
                                              "ignored", "refused"]), help="Only these.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
@click.pass_context
def inbound_list(ctx, outcome, limit, as_json) -> None:
    """The newest messages sent back to us, and what was done with each."""
    from sqlalchemy import select

    from syndicate.models import InboundMessage, Subscriber

    with opened(ctx) as (_, session):
        query = (select(InboundMessage, Subscriber.email).outerjoin(Subscriber)
                 .order_by(InboundMessage.id.desc()).limit(limit))
        if outcome:
            query = query.where(InboundMessage.outcome == outcome)
        rows = [dict(id=m.id, received=m.received_at, via=m.via, outcome=m.outcome, form=m.form, reader=email,
                     sender=m.sender, subject=m.subject, why=m.why, kept=m.raw is not None)
                for m, email in session.execute(query)]
    emit(rows, as_json, ["id", "received", "via", "outcome", "form", "reader", "why"])


@inbound.command("show")
@click.argument("message_id", type=int)
@click.option("--raw", is_flag=True, help="Print the message's bytes as kept (e.g. to hand to `process` again).")
@json_option
@click.pass_context
def inbound_show(ctx, message_id, raw, as_json) -> None:
    """One message sent back to us: what it was and what was done; --raw for the bytes, when kept."""
    from syndicate.models import InboundMessage, Subscriber

    with opened(ctx) as (_, session):
        message = session.get(InboundMessage, message_id)
        if message is None:
            raise SyndicateError(f"no inbound message #{message_id}; `syndicate inbound list` shows them")
        if raw:
            if message.raw is None:
                raise SyndicateError(f"inbound message #{message_id} was acted on ({message.outcome}); only the "
                                     "bytes of messages nothing was done with are kept")
            sys.stdout.buffer.write(message.raw)
            return
        reader = session.get(Subscriber, message.subscriber_id) if message.subscriber_id else None
        show(dict(id=message.id, received=message.received_at, via=message.via, outcome=message.outcome,
                  form=message.form, why=message.why, reader=reader.email if reader else None,
                  delivery=message.delivery_id, sender=message.sender, subject=message.subject,
                  message_id=message.message_id, size=message.size,
                  kept=f"{len(message.raw):,} bytes" if message.raw is not None else "no (acted on)"), as_json)


def _warn_unless_inbound(settings) -> None:
    if not settings.inbound:
        click.echo("note: SYNDICATE_INBOUND_MAIL is not set, so mail goes out with the From address as its return "
                   "path and no mailto unsubscribe; reports are matched only by the unsubscribe link they quote. "
                   "Set SYNDICATE_INBOUND_MAIL=1 for every syndicate process once this listener receives the "
                   "bounce domain's mail.", err=True)
