"""SMTP: one pipelined mail transaction per message, a small pool of connections, and what each server
reply means for the message (refused, deferred, or the connection lost)."""

from __future__ import annotations

import base64
import os
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from syndicate.config import SmtpSettings
from syndicate.errors import ConnectionLost, TransportError
from syndicate.mail.transport import Outgoing
from syndicate.text import CONTROL_BUT_BREAKS


class SmtpConnection:
    """One SMTP session; `send` runs one mail transaction (RFC 5321 §3.3) for one recipient.

    Written out rather than `smtplib.sendmail` for what each message costs at wire speed. With
    PIPELINING (RFC 2920, offered by Postfix, Exim and the big providers) a message is one write and
    one round trip: its body and final dot together with the next message's MAIL, RCPT and DATA
    (content is allowed first in a group, DATA last), whose replies come back with the dot's. smtplib
    takes four writes and four round trips. The body, already CRLF and 7-bit from `PreparedMessage`, is
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

    def send(self, message: Outgoing, before_end: Callable[[], Outgoing | None] | None = None,
             while_waiting: Callable[[], None] | None = None) -> str:
        try:
            return self._transaction(message, before_end, while_waiting)
        except ConnectionLost:
            self.healthy = False
            raise
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            self.healthy = False
            raise ConnectionLost(f"connection to the mail server lost: {e}") from e

    def _transaction(self, message: Outgoing, before_end: Callable[[], Outgoing | None] | None,
                     while_waiting: Callable[[], None] | None) -> str:
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
        if while_waiting is not None:
            try:
                while_waiting()  # the server reads and queues the message meanwhile; its reply waits in the socket
            except BaseException:
                self._abandon()  # the reply is never read: what the server made of the message is unknown
                raise
        code, reply = smtp.getreply()
        if code != 250:
            # The transaction is over whatever the reply (RFC 5321 §4.1.1.4): no RSET, which would
            # reach an announced message as its first line.
            error = _refusal(code, reply, about_recipient=True)
            if isinstance(error, ConnectionLost):
                self.announced = None
            raise error
        return f"{code} {reply_text(reply)}"

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


def reply_text(reply: bytes | str) -> str:
    """A server's reply as our text: the server is a stranger, and what it says is kept (the delivery's
    last_reply), logged and shown. Bytes that aren't UTF-8, and control characters but the line breaks and
    tabs of a multi-line reply, become U+FFFD: PostgreSQL's text can't hold a NUL (the outcome could not
    be written, and the batch would stop on it), and an escape sequence has no place in a terminal."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return CONTROL_BUT_BREAKS.sub("\ufffd", text)


def _refusal(code: int | None, reply: bytes | str, recipient: bool = False,
             about_recipient: bool = False) -> TransportError:
    """The error for a refusal. `recipient`: the reply to RCPT; `about_recipient`: the reply at the end
    of DATA, which in our one-recipient transactions also concerns that recipient alone. Either with a
    4.7.x status (RFC 3463's security or policy class: "450 4.7.28 rate limited", "421 4.7.0 try again
    later") is the recipient's domain asking us to slow down: `throttled`, for pacing.Domain. At the
    greeting or at MAIL it is the server's, and paces the whole stream (pacing.slow_down)."""
    text = reply_text(reply)
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
            raise ConnectionLost(f"{e.smtp_code} {reply_text(e.smtp_error)}", code=e.smtp_code) from e
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

