"""Mail transports (SMTP, outbox folder) and the one way messages are turned into bytes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from email.charset import SHORTEST, Charset
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP as _SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from syndicate import private_files
from syndicate.config import SmtpSettings
from syndicate.errors import ConnectionLost, TransportError
from syndicate.templating import one_line

if TYPE_CHECKING:
    from syndicate.mail.dkim import DkimSettings

# RFC 5322's hard limit. At 78 the stdlib folds a long List-Unsubscribe URL into
# RFC 2047 encoded words, which no mail client reads back as a URL.
SMTP = _SMTP.clone(max_line_length=998)


def message_id(domain: str, secret_key: str, *parts) -> str:
    """Unique per message and per installation, and the same on every retry of one delivery."""
    instance = hashlib.sha256(secret_key.encode()).hexdigest()[:10]
    return f"<{'.'.join(map(str, parts))}.{instance}@{domain}>"


class Mailbox(NamedTuple):
    """Who a header names: a display name (any text, from anywhere) and an address checked on the way in.
    Not `email.headerregistry.Address`, which raises on a line break in the name: one bad from-name would
    stop every batch of an edition."""

    name: str
    address: str


@dataclass(frozen=True)
class Outgoing:
    """A message ready for the wire: envelope plus the exact bytes."""

    sender: str
    recipient: str
    data: bytes
    message_id: str
    # CRLF line ends only and no line starting with ".": DATA carries it as it is (RFC 5321 §4.5.2,
    # "transparency"), with no 64 KB scan per message to find out. Template's messages say so.
    transparent: bool = False


class Connection(Protocol):
    def send(self, message: Outgoing, before_end: Callable[[], Outgoing | None] | None = None) -> str:
        """Hand one message over; return the server's reply, raise TransportError if refused.

        `before_end` runs once the server has taken the recipient and is ready for the message, and
        before the message is ended: the last moment to hold it back. If it raises, the message is
        abandoned, never delivered, and the exception goes up (the connection is not used again).
        It may return the message that will be sent next: a connection that pipelines announces it
        with this one's end, and then the next `send` on it must be that message."""


class Transport(Protocol):
    def connect(self) -> Iterator[Connection]: ...


def build_message(
    *,
    sender: Mailbox,
    to: Mailbox,
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    date: datetime,
    reply_to: str | None = None,
    headers: dict[str, str] | None = None,
    dkim: DkimSettings | None = None,
) -> bytes:
    """multipart/alternative, text first and HTML last, CRLF line ends, as sent over SMTP;
    DKIM-signed when `dkim` is given. The header block is ours (`header_block`); the stdlib only
    makes the MIME body."""
    fields = [
        ("From", mailbox(*sender)),
        ("To", mailbox(*to)),
        ("Subject", header_text(subject)),
        ("Date", format_datetime(date)),
        ("Message-ID", message_id),
    ]
    if reply_to:
        fields.append(("Reply-To", mailbox("", reply_to)))
    fields += list((headers or {}).items())
    body = EmailMessage(policy=SMTP)
    # quoted-printable keeps the bytes 7-bit clean for servers without 8BITMIME.
    body.set_content(text, cte="quoted-printable")
    if html is not None:
        body.add_alternative(html, subtype="html", cte="quoted-printable")
    data = header_block(fields) + body.as_bytes()
    return dkim.signer(sender.address).sign(data) if dkim else data


# ── headers ──────────────────────────────────────────────────────────────────
#
# Every header value is made here, from text that may come from anywhere (a feed's title, a reader's name
# typed into the public form, a newsletter's name), and written by us: never handed to the stdlib's header
# folding, which decodes RFC 2047 encoded words it is given and, on interpreters without the fix for
# CVE-2024-6923 (3.11 before 3.11.10, 3.12 before 3.12.5), writes a decoded CR LF raw, so a title
# "=?UTF-8?Q?=0D=0AReply-To:...?=" became a header. Here such text stays the characters the site wrote.

_UTF8 = Charset("utf-8")
_UTF8.header_encoding = SHORTEST  # Q for mostly-ASCII text, B where that is shorter
_PHRASE_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")  # RFC 5322 atext and spaces: no quoting needed


def _encoded_words(text: str, name: str) -> str:
    return Header(text, _UTF8, header_name=name).encode(linesep="\r\n")


def header_text(value: str, name: str = "Subject") -> str:
    """An unstructured header's value (RFC 5322 §3.2.5) from outside text: control characters and line
    breaks gone, whitespace collapsed, and encoded by us whenever it isn't plain ASCII or holds something
    a mail program would decode ("=?"): a reader sees exactly the characters that were written."""
    value = one_line(value)
    if value.isascii() and "=?" not in value and len(name) + len(value) < 900:
        return value  # as it is: no line of it can reach RFC 5322's 998
    return _encoded_words(value, name)


def phrase(name: str) -> str:
    """A display name (RFC 5322 §3.2.5 phrase) from outside text, ready to stand before `<address>`."""
    name = one_line(name)
    if name.isascii() and "=?" not in name and len(name) < 200:
        if _PHRASE_ATOM.fullmatch(name):
            return name
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _encoded_words(name, "From")


def mailbox(name: str, address: str) -> str:
    """`Name <address>` (or the address alone) for From, To and Reply-To. The address must be one checked
    on the way in (a subscriber's, a newsletter's); a line break or bracket in it is a bug, refused here."""
    if not _HEADER_ADDRESS.fullmatch(address):
        raise ValueError(f"{address!r} is not an address this header can carry")
    shown = phrase(name)
    return f"{shown} <{address}>" if shown else address


def header_block(fields: list[tuple[str, str]]) -> bytes:
    """The header lines, from values made by the functions above where they hold outside text, or by us
    (dates, ids, our own URLs). A value that isn't 7-bit header text is a bug, refused here rather than sent."""
    lines = []
    for field, value in fields:
        if not _HEADER_VALUE.fullmatch(value):
            raise ValueError(f"the {field} header's value {value!r} was not made by header_text, phrase or mailbox")
        lines.append(f"{field}: {value}\r\n")
    return "".join(lines).encode("ascii")


_HEADER_VALUE = re.compile(r"[\x20-\x7e]*(?:\r\n[ \t][\x20-\x7e]*)*")  # printable ASCII, folded lines only
_HEADER_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"\x00-\x1f\x7f]+@[^\s<>()\[\]\\,;:\"@\x00-\x1f\x7f]+")


class Template:
    """A message rendered once for many recipients: per recipient the bytes are assembled,
    not built and serialised again (about 20× cheaper than `build_message`).

    What differs per recipient: To, Message-ID, Date, the `per_recipient` headers and
    the placeholders replaced in both bodies. The result parses to what `build_message`
    would give for the same values (tests/test_mail.py checks it over many recipients).
    No line of it starts with a dot, so DATA carries it as it is (`Outgoing.transparent`).
    With `dkim`, each message is signed as it is assembled (tests/test_dkim.py).
    """

    def __init__(self, *, sender: Mailbox, subject: str, text: str, html: str,
                 reply_to: str | None = None, headers: dict[str, str] | None = None,
                 dkim: DkimSettings | None = None):
        self.signer = dkim.signer(sender.address) if dkim else None
        fields = [("From", mailbox(*sender)), ("Subject", header_text(subject))]
        if reply_to:
            fields.append(("Reply-To", mailbox("", reply_to)))
        fields += list((headers or {}).items())
        self.boundary = f"=_syndicate_{secrets.token_hex(12)}"
        fields += [("MIME-Version", "1.0"), ("Content-Type", f'multipart/alternative; boundary="{self.boundary}"')]
        self.head = header_block(fields)
        self.text, self.html = _lines(text), _lines(html)
        self.sender = sender.address
        self._prepared: dict[tuple, list[bytes | str]] = {}
        part = (f"--{self.boundary}\r\nContent-Type: text/%s; charset=\"utf-8\"\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n")
        self.parts = ((part % "plain").encode(), (part % "html").encode(), f"--{self.boundary}--\r\n".encode())
        self._dated: tuple[datetime | None, str] = (None, "")  # the Date header of the second last asked for

    def render(self, *, to: str, name: str = "", message_id: str, date: datetime, per_recipient: dict[str, str],
               replace: dict[str, str]) -> bytes:
        """The message's bytes for the mailbox `to` (an address already checked, as a subscriber's
        is when they sign up) and its display `name`."""
        text, html = (self._encoded(body, replace) for body in (self.text, self.html))
        fields = [("To", mailbox(name, to)), ("Message-ID", message_id), ("Date", self._date(date))]
        fields += list(per_recipient.items())
        data = b"".join([
            self.head,
            header_block(fields),
            b"\r\n",
            self.parts[0], text, b"\r\n",
            self.parts[1], html, b"\r\n",
            self.parts[2],
        ])
        return self.signer.sign(data) if self.signer else data

    def message(self, *, to: str, name: str = "", message_id: str, date: datetime, per_recipient: dict[str, str],
                replace: dict[str, str]) -> Outgoing:
        data = self.render(to=to, name=name, message_id=message_id, date=date, per_recipient=per_recipient,
                           replace=replace)
        return Outgoing(self.sender, to, data, message_id, transparent=True)

    def _date(self, date: datetime) -> str:
        second = date.replace(microsecond=0)
        if self._dated[0] != second:
            self._dated = (second, format_datetime(second))
        return self._dated[1]

    def _encoded(self, body: str, replace: dict[str, str]) -> bytes:
        """The body quoted-printable encoded, placeholders filled in. Quoted-printable works line by
        line, so only the few lines holding a placeholder are encoded per recipient; the rest once
        (60 KB of encoding per message was a third of a worker's time)."""
        key = (id(body), tuple(replace))
        parts = self._prepared.get(key)
        if parts is None:
            parts = self._prepared[key] = []
            for line in body.splitlines(keepends=True):
                if any(placeholder in line for placeholder in replace):
                    parts.append(line)  # a str: filled and encoded per recipient
                elif parts and isinstance(parts[-1], bytes):
                    parts[-1] += _qp(line)
                else:
                    parts.append(_qp(line))
        out = []
        for part in parts:
            if isinstance(part, str):
                for placeholder, value in replace.items():
                    part = part.replace(placeholder, value)
                part = _qp(part)
            out.append(part)
        return b"".join(out)


def _lines(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


QP_LINE = 76  # RFC 2045 §6.7 (5): encoded lines at most 76 characters, a soft break's "=" included


def _qp(text: str) -> bytes:
    """Quoted-printable, CRLF line ends, and no line that starts with a dot: it is written "=2E".
    A leading dot is what SMTP's DATA must double (RFC 5321 §4.5.2) and what relays and clients
    have been known to mangle; a message without one goes over the wire as it is, with no 64 KB
    scan and copy per message (0.2 ms, a sixth of a worker's CPU per message)."""
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    if encoded.startswith(b".") or b"\n." in encoded:
        encoded = b"\n".join(map(_no_leading_dot, encoded.split(b"\n")))
    return encoded.replace(b"\n", b"\r\n")


def _no_leading_dot(line: bytes) -> bytes:
    if not line.startswith(b"."):
        return line
    line = b"=2E" + line[1:]
    if len(line) <= QP_LINE:
        return line
    # Two characters longer than b2a_qp made it: break it with a soft line break, not inside an "=XX".
    cut = QP_LINE - 1
    while b"=" in line[cut - 2:cut]:
        cut -= 1
    return line[:cut] + b"=\n" + _no_leading_dot(line[cut:])


# ── SMTP ─────────────────────────────────────────────────────────────────────


class SmtpConnection:
    """One SMTP session; `send` runs one mail transaction (RFC 5321 §3.3) for one recipient.

    Written out rather than `smtplib.sendmail` for what each message costs at wire speed. With
    PIPELINING (RFC 2920, offered by Postfix, Exim and the big providers) a message is one write and
    one round trip: its body and final dot together with the next message's MAIL, RCPT and DATA
    (content is allowed first in a group, DATA last), whose replies come back with the dot's. smtplib
    takes four writes and four round trips. The body, already CRLF and 7-bit from `Template`, is
    dot-stuffed with one `bytes.replace` instead of two regular expressions, or not at all when
    the message says it is transparent. The reply returned is the server's own ("250 2.0.0 Ok:
    queued as 4ZxY…"), kept on the delivery.

    A next message announced (its DATA sent with the dot before it) must be the next one sent here:
    after the server's 354 nothing but its body may follow. A connection left with one announced
    is closed, never pooled: the server drops a message whose connection ends before its dot.
    """

    def __init__(self, smtp: smtplib.SMTP):
        self.smtp = smtp
        self.healthy = True  # False once the stream failed: the pool drops it
        self.announced: Outgoing | None = None  # sent ahead with the last message's end, replies unread

    @property
    def reusable(self) -> bool:
        return self.healthy and self.announced is None

    def send(self, message: Outgoing, before_end: Callable[[], Outgoing | None] | None = None) -> str:
        try:
            return self._transaction(message, before_end)
        except ConnectionLost:
            self.healthy = False
            raise
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            self.healthy = False
            raise ConnectionLost(f"connection to the mail server lost: {e}") from e

    def _transaction(self, message: Outgoing, before_end: Callable[[], Outgoing | None] | None) -> str:
        smtp = self.smtp
        smtp.ehlo_or_helo_if_needed()
        pipelined = smtp.has_extn("pipelining")
        announced, self.announced = self.announced, None
        if announced is not None and announced is not message:
            self._abandon()  # the server waits for the announced message's body: nothing else may follow
            raise ConnectionLost(f"{message.recipient} was sent on a connection that waits for another message")
        commands = self._envelope(message)
        if pipelined and announced is None:
            smtp.send("".join(commands))
        for step, (command, expected) in enumerate(zip(commands, _EXPECTED, strict=True)):
            if not pipelined:
                smtp.send(command)
            code, reply = smtp.getreply()
            if code not in expected:
                self._refused(_refusal(code, reply, recipient=step == 1),
                              unread=len(commands) - step - 1 if pipelined else 0)
        data = message.data if message.transparent else wire(message.data)
        following = None
        if before_end is not None:
            try:
                following = before_end()
            except BaseException:
                self._abandon()  # the server, told DATA and given no final ".", drops the message
                raise
        if following is not None and pipelined:
            smtp.send(data + END + "".join(self._envelope(following)).encode())
            self.announced = following
        else:
            smtp.send(data + END)
        code, reply = smtp.getreply()
        if code != 250:
            # The transaction is over whatever the reply (RFC 5321 §4.1.1.4): no RSET, which would
            # reach an announced message as its first line.
            error = _refusal(code, reply, about_recipient=True)
            if isinstance(error, ConnectionLost):
                self.announced = None
            raise error
        return f"{code} {reply.decode('utf-8', 'replace')}"

    def _envelope(self, message: Outgoing) -> list[str]:
        size = f" SIZE={len(message.data)}" if self.smtp.has_extn("size") else ""
        return [f"MAIL FROM:{_path(message.sender)}{size}\r\n", f"RCPT TO:{_path(message.recipient)}\r\n",
                "DATA\r\n"]

    def _abandon(self) -> None:
        self.healthy, self.announced = False, None
        self.smtp.close()

    def _refused(self, error: TransportError, unread: int = 0):
        """Raise `error`, leaving the session ready for the next transaction if it is still up: the
        replies to the pipelined commands after the refused one (503s, as a rule) are read first.
        A 421 is raised at once: the server hangs up after it, so nothing more will come."""
        if not isinstance(error, ConnectionLost):
            try:
                for _ in range(unread):
                    code, _reply = self.smtp.getreply()
                if unread and code == 354:
                    self.smtp.send(b".\r\n")  # a server that took DATA without a recipient: end it, empty
                    self.smtp.getreply()
                self.smtp.rset()
            except (smtplib.SMTPException, OSError):
                self.healthy = False  # the refusal stands; this connection is not used again
        raise error


def _path(address: str) -> str:
    """An address as MAIL and RCPT carry it. Ours are checked on the way in, so the angle brackets are
    all smtplib.quoteaddr would add, after parsing each address again (8 µs, twice per message)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
_EXPECTED = ((250,), (250, 251), (354,))  # the replies that let MAIL, RCPT and DATA go on


END = b".\r\n"  # after the message's last CRLF: its end (RFC 5321 §4.1.1.4)


def wire(data: bytes) -> bytes:
    """A message as DATA carries it, but for END: CRLF line ends and a dot at the start of a line
    doubled (RFC 5321 §4.5.2). Messages made here are CRLF already, which three counts check."""
    if not data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"):
        data = re.sub(rb"\r\n|\n|\r", b"\r\n", data)
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\n.", b"\n..")
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _refusal(code: int | None, reply: bytes | str, recipient: bool = False,
             about_recipient: bool = False) -> TransportError:
    """The error for a refusal. `recipient`: the reply to RCPT; `about_recipient`: the reply at the end
    of DATA, which in our one-recipient transactions also concerns that recipient alone. Either with a
    4.7.x status (RFC 3463's security or policy class: "450 4.7.28 rate limited", "421 4.7.0 try again
    later") is the recipient's domain asking us to slow down: `throttled`, for pacing.Domain. At the
    greeting or at MAIL it is the server's, and paces the whole stream (pacing.slow_down)."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    throttled = (recipient or about_recipient) and code is not None and 400 <= code < 500 and code != 454 \
        and _SLOW_DOWN.match(text) is not None
    text = f"{code} {text}".strip()
    if code == 530:  # authentication or STARTTLS required (RFC 4954, RFC 3207): our session, not this message
        return ConnectionLost(f"{text}; the mail server wants a login or TLS first: check SYNDICATE_SMTP_URL",
                              code=code)
    if code in (421, 454) or code is None or code < 400:
        # The server is closing or throttling the stream, not refusing this recipient; a 421 4.7.x at
        # RCPT throttles the recipient's domain, but the server closes this stream all the same.
        return ConnectionLost(text, code=code, throttled=throttled)
    return TransportError(text, permanent=code >= 500, code=code, recipient=recipient, throttled=throttled)


_SLOW_DOWN = re.compile(r"4\.7\.\d{1,3}\b")


class SmtpTransport:
    """SMTP with a small pool: a worker's next batch reuses the connection of its last one (after a NOOP
    shows it's alive), instead of paying the greeting, EHLO, STARTTLS and AUTH round trips again."""

    IDLE = 30.0  # seconds a pooled connection may wait; servers drop idle clients after a minute or more

    def __init__(self, settings: SmtpSettings, pool_size: int = 4):
        self.settings, self.pool_size = settings, pool_size
        self._idle: list[tuple[float, smtplib.SMTP]] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _open(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "tls":
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            try:
                no_delay(smtp.sock)  # before STARTTLS too: the TLS socket that replaces it shares this one's fd
                self._start(smtp)
            except BaseException:
                smtp.close()
                raise
        except smtplib.SMTPAuthenticationError as e:
            raise ConnectionLost(f"the mail server refused our login ({e.smtp_code}); check SYNDICATE_SMTP_URL") from e
        except ssl.SSLCertVerificationError as e:
            raise ConnectionLost(f"the certificate of the mail server {s.host}:{s.port} is not trusted "
                                 f"({e.verify_message}); if a CA of your own signed it, point SSL_CERT_FILE at that "
                                 "CA's PEM file") from e
        except smtplib.SMTPConnectError as e:  # e.g. "421 too many connections" at the greeting
            reply = e.smtp_error.decode("utf-8", "replace") if isinstance(e.smtp_error, bytes) else e.smtp_error
            raise ConnectionLost(f"{e.smtp_code} {reply}", code=e.smtp_code) from e
        except (smtplib.SMTPException, OSError) as e:
            raise ConnectionLost(f"cannot reach the mail server {s.host}:{s.port}: {e}") from e
        return smtp

    def _start(self, smtp: smtplib.SMTP) -> None:
        """STARTTLS and AUTH as the settings ask; nothing, least of all the password, in the clear when
        STARTTLS was asked for."""
        s = self.settings
        if s.security == "starttls":
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise ConnectionLost(f"the mail server {s.host}:{s.port} does not offer STARTTLS; use smtps:// "
                                     "if it speaks TLS from the start, or fix SYNDICATE_SMTP_URL")
            smtp.starttls(context=ssl.create_default_context())
        if s.username:
            _login(smtp, s.username, s.password or "")

    def _pooled(self) -> smtplib.SMTP | None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's sockets are not ours to use
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                since, smtp = self._idle.pop()
                if time.monotonic() - since < self.IDLE:
                    try:
                        if smtp.noop()[0] == 250:
                            return smtp
                    except (smtplib.SMTPException, OSError):
                        pass
                _close(smtp)
        return None

    @contextmanager
    def connect(self) -> Iterator[SmtpConnection]:
        smtp = self._pooled() or self._open()
        connection = SmtpConnection(smtp)
        try:
            yield connection
        except BaseException:
            _close(connection)  # a connection that saw an error is not trusted again
            raise
        with self._lock:
            if connection.reusable and len(self._idle) < self.pool_size:
                self._idle.append((time.monotonic(), smtp))
                return
        _close(connection)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, smtp in idle:
            _close(smtp)


def no_delay(sock: socket.socket) -> None:
    """Send each write at once (TCP_NODELAY). A message goes as one write (its body and final dot, with the
    next message's commands), followed by a wait for the replies.
    With Nagle's algorithm on, the last partial segment of a write waits for the ACK of the ones before it,
    and servers delay that ACK (~40 ms on Linux): a 15 KB digest went out at 20 messages a second instead of
    thousands. Large messages hid it: their segments fill."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _login(smtp: smtplib.SMTP, username: str, password: str) -> None:
    """smtplib's login; but smtplib sends credentials as ASCII only, so a user name or password with
    other characters goes as UTF-8 in AUTH PLAIN, as RFC 4616 defines it."""
    if username.isascii() and password.isascii():
        smtp.login(username, password)
        return
    smtp.ehlo_or_helo_if_needed()
    if "PLAIN" not in smtp.esmtp_features.get("auth", "").upper().split():
        raise ConnectionLost("the SMTP password or user name has non-ASCII characters, which can only be sent with "
                             "AUTH PLAIN, and the mail server does not offer it; change the password")
    credentials = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode()).decode("ascii")
    code, reply = smtp.docmd("AUTH", f"PLAIN {credentials}")
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, reply)


def _close(connection: SmtpConnection | smtplib.SMTP) -> None:
    """QUIT and close; only close when a message was announced: after its 354, QUIT would be its text."""
    smtp = connection.smtp if isinstance(connection, SmtpConnection) else connection
    if isinstance(connection, SmtpConnection) and connection.announced is not None:
        smtp.close()
        return
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


# ── outbox folder ────────────────────────────────────────────────────────────


class OutboxConnection:
    def __init__(self, folder: Path):
        self.folder = folder

    def send(self, message: Outgoing, before_end: Callable[[], Outgoing | None] | None = None) -> str:
        name = re.sub(r"[^A-Za-z0-9._@-]+", "_", message.message_id.strip("<>"))
        path = self.folder / f"{name}.eml"
        tmp = path.with_suffix(".tmp")
        private_files.write(tmp, message.data)  # readers' addresses and their unsubscribe links
        if before_end is not None:
            try:
                before_end()
            except BaseException:
                tmp.unlink()
                raise
        tmp.replace(path)  # a reader never sees half a message
        return f"250 written to {path}"


class OutboxTransport:
    """Writes each message, byte for byte as SMTP would carry it, to a .eml file."""

    def __init__(self, folder: Path):
        self.folder = folder

    @contextmanager
    def connect(self) -> Iterator[OutboxConnection]:
        private_files.make_dir(self.folder)
        yield OutboxConnection(self.folder)
