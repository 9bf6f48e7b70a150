"""`syndicate inbound serve`: an LMTP (or plain SMTP) listener, for an MTA to hand the bounce domain's mail to.

aiosmtpd speaks the protocol; each message is handled (inbound.handling) in a worker thread, in a
transaction of its own, and answered only once it is recorded: 250 when handled (acted on, ignored or
refused for what it says: an MTA must not send it again), 451 when it could not be recorded (the database
is down: the MTA keeps it and tries again). Nothing is kept in memory beyond the message at hand, and
no message larger than reports.MAX_BYTES is taken: aiosmtpd stops storing it and answers 552.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from syndicate.inbound.reports import MAX_BYTES

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 50  # a report goes to one return path; a few more is an MTA batching, many more is abuse
IDLE_TIMEOUT = 120  # seconds a connection may say nothing


class Handler:
    """aiosmtpd's handler: takes any recipient (the MTA chose what to send here; nothing is relayed) and
    hands each message to `handle(raw, recipients) -> one line`, which raises only if nothing was recorded."""

    def __init__(self, handle: Callable[[bytes, tuple[str, ...]], str], lmtp: bool):
        self.handle, self.lmtp = handle, lmtp

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, rcpt_options) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return f"452 4.5.3 At most {MAX_RECIPIENTS} recipients per message here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        recipients = tuple(envelope.rcpt_tos)
        try:
            line = await asyncio.get_running_loop().run_in_executor(None, self.handle, raw, recipients)
        except Exception:
            log.exception("inbound mail from %s to %s could not be recorded; the MTA will send it again",
                          session.peer, ", ".join(recipients))
            reply = "451 4.3.0 Could not be recorded now; try again later"
        else:
            reply = f"250 2.0.0 {line}"[:400]
        # LMTP answers DATA once per recipient (RFC 2033 §4.2); the message was handled once for all.
        return "\r\n".join([reply] * len(recipients)) if self.lmtp else reply


class _Logged:
    """What aiosmtpd refuses by itself, without calling the handler, said in our log too."""

    async def push(self, status: str) -> None:
        if status.startswith(("552", "500 Line too long")):
            log.warning("inbound mail from %s refused: %s (at most %s bytes)", self.session.peer if self.session
                        else "?", status, f"{MAX_BYTES:,}")
            if isinstance(self, LMTP) and status.startswith(("552 Error: Too much", "500")) and self.envelope:
                status = "\r\n".join([status] * max(1, len(self.envelope.rcpt_tos)))
        await super().push(status)


class _LMTP(_Logged, LMTP):
    pass


class _SMTP(_Logged, SMTP):
    pass


def protocol(handle: Callable[[bytes, tuple[str, ...]], str], lmtp: bool, hostname: str) -> Callable[[], SMTP]:
    kind = _LMTP if lmtp else _SMTP
    handler = Handler(handle, lmtp)
    return lambda: kind(handler, data_size_limit=MAX_BYTES, hostname=hostname, ident="syndicate inbound",
                        timeout=IDLE_TIMEOUT)


async def serve(handle: Callable[[bytes, tuple[str, ...]], str], host: str, port: int, *, lmtp: bool = True,
                hostname: str = "syndicate", ready: Callable[[list[tuple]], None] | None = None) -> None:
    """Listen until SIGTERM or SIGINT (or the task is cancelled); `ready` gets the bound addresses."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol(handle, lmtp, hostname), host, port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
            pass
    addresses = [s.getsockname() for s in server.sockets]
    log.info("inbound %s listener on %s", "LMTP" if lmtp else "SMTP", ", ".join(f"{a[0]}:{a[1]}" for a in addresses))
    if ready:
        ready(addresses)
    async with server:
        await stop.wait()
