"""`syndicate inbound poll`'s engine: read the mail sent back to us from an IMAP mailbox, hand each message
to a handler (inbound.handling, in its own transaction), and only then move it to the done folder or delete it.

  LOGIN ─▶ SELECT folder ─▶ per message, oldest first, at most `limit`:
      size ─▶ its bytes (only the head of one too big to be a report) ─▶ handle(raw) ─▶ MOVE to done | delete

A message whose handling fails (the database is down) stays where it is, and the poll stops there: the next
poll reads it again. One handled but not moved (the line dropped in between) is read again too, which
changes nothing: handling knows a message it has seen. Everything is addressed by UID, never by sequence
number, so our own expunges and other clients' don't shift what we act on.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import logging
import re
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from syndicate.config import ImapSettings
from syndicate.errors import SyndicateError, TransportError
from syndicate.inbound.reports import MAX_BYTES
from syndicate.text import one_line, shorten

log = logging.getLogger(__name__)

PAGE = 200  # messages whose UID, size and flags one FETCH asks for: the answer stays small in any mailbox
URL = "SYNDICATE_INBOUND_IMAP_URL"

_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_NOT_PRINTABLE = re.compile(r"[^ -~]+")


@dataclass
class PollResult:
    """What one poll did: each handled message has left the folder (moved to done, or deleted)."""

    folder: str
    handled: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # handled, by what the handler said it was
    too_big: int = 0  # of the handled, those more than reports.MAX_BYTES: only their head was read
    left: int = 0  # still in the folder: over the limit, or after a stop

    @property
    def summary(self) -> str:
        parts = [f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items())]
        if self.too_big:
            parts.append(f"{self.too_big} too big to read")
        detail = f" ({', '.join(parts)})" if parts else ""
        return f"{self.handled} handled from {self.folder}{detail}, {self.left} left"


class PollStopped(SyndicateError):
    """Handling a message failed (not for what it says: the handler doesn't raise for that, so the database,
    most likely). The message stays in the mailbox for the next poll; `result` is what was done before."""

    def __init__(self, message: str, result: PollResult):
        super().__init__(message)
        self.result = result


def poll(imap: ImapSettings, handle: Callable[[bytes], str | None], *, limit: int = 200,
         ssl_context: ssl.SSLContext | None = None) -> PollResult:
    """Hand at most `limit` messages of the mailbox to `handle`, oldest first, and take each out of the folder
    once `handle` has returned (it commits its own work). `handle` returns what the message was (an outcome)
    or None. Raises TransportError when the server can't be reached or refuses (saying what to check), and
    PollStopped when `handle` raised."""
    assert limit > 0, limit
    context = ssl_context or ssl.create_default_context()
    result = PollResult(imap.folder)
    client = _connect(imap, context)
    doing = "logging in"
    try:
        _login(client, imap)
        doing = f"opening the folder {imap.folder!r}"
        result.left = exists = _select(client, imap)
        if exists:
            capabilities = _capabilities(client)
            if imap.done:
                doing = f"looking for the folder {imap.done!r}"
                _ensure_folder(client, imap)
            doing = "listing the messages"
            for uid, size in _waiting(client, exists, limit):
                doing = f"reading the message with UID {uid}"
                raw = _fetch(client, uid, size)
                if raw is not None:  # None: expunged by another client meanwhile
                    outcome = _handle(handle, raw, uid, imap, result)
                    doing = f"taking the handled message with UID {uid} out of {imap.folder!r}"
                    _dispose(client, imap, uid, capabilities)
                    result.handled += 1
                    result.too_big += int(size > MAX_BYTES)
                    result.outcomes.update([outcome] if outcome else [])
                result.left -= 1
    except (imaplib.IMAP4.error, OSError) as e:
        if result.handled:
            log.warning("IMAP poll of %s stopped: %s", imap.folder, result.summary)
        raise _failed(imap, e, doing) from e
    finally:
        _logout(client)
    log.info("IMAP poll: %s", result.summary)
    return result


def _connect(imap: ImapSettings, context: ssl.SSLContext) -> imaplib.IMAP4:
    """Connected, and encrypted unless the settings say "none" (to this machine only): the password is
    never sent in the clear to a server that should have offered STARTTLS."""
    doing = "connecting"
    try:
        if imap.security == "tls":
            return imaplib.IMAP4_SSL(imap.host, imap.port, ssl_context=context, timeout=imap.timeout)
        client = imaplib.IMAP4(imap.host, imap.port, timeout=imap.timeout)
    except (imaplib.IMAP4.error, OSError) as e:
        raise _failed(imap, e, doing) from e
    if imap.security != "starttls":
        return client
    try:
        if "STARTTLS" not in client.capabilities:
            raise TransportError(f"the IMAP server {imap.host}:{imap.port} does not offer STARTTLS, so we won't "
                                 f"send it the password; use imaps:// if it speaks TLS from the start, or fix {URL}",
                                 permanent=True)
        doing = "starting TLS"
        client.starttls(context)
    except (imaplib.IMAP4.error, OSError) as e:
        _logout(client)
        raise _failed(imap, e, doing) from e
    except BaseException:
        _logout(client)
        raise
    return client


def _login(client: imaplib.IMAP4, imap: ImapSettings) -> None:
    """LOGIN; but imaplib sends it as ASCII only, so a user name or password with other characters goes as
    UTF-8 in AUTHENTICATE PLAIN (RFC 4616), as the SMTP login does."""
    try:
        if imap.username.isascii() and imap.password.isascii() and "LOGINDISABLED" not in client.capabilities:
            client.login(_quoted(imap.username), imap.password)
            return
        if "AUTH=PLAIN" not in client.capabilities:
            raise TransportError(f"the IMAP server {imap.host}:{imap.port} offers no login we can use (the user "
                                 "name or password has non-ASCII characters, which only AUTHENTICATE PLAIN carries); "
                                 "change the password", permanent=True)
        credentials = b"\0" + imap.username.encode() + b"\0" + imap.password.encode()
        client.authenticate("PLAIN", lambda _challenge: credentials)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as e:
        raise TransportError(f"the IMAP server {imap.host}:{imap.port} refused the login of {imap.username!r} "
                             f"({_words(e, imap)}); check the user and password in {URL} (with @ : / in them "
                             "percent-encoded)", permanent=True) from e


def _select(client: imaplib.IMAP4, imap: ImapSettings) -> int:
    """SELECT the folder, read-write; the number of messages in it."""
    try:
        kind, data = client.select(_mailbox(imap.folder))
    except imaplib.IMAP4.readonly as e:
        raise TransportError(f"the folder {imap.folder!r} is read-only for {imap.username!r}, so handled mail "
                             "couldn't leave it; give that user write access to it", permanent=True) from e
    if kind != "OK":
        raise TransportError(f"the IMAP server {imap.host}:{imap.port} can't open the folder {imap.folder!r} of "
                             f"{imap.username!r} ({_text(data, imap)}); check the folder in {URL} "
                             "(imaps://USER:PASSWORD@HOST/FOLDER; INBOX if none is given)", permanent=True)
    return int(data[0] or 0)


def _capabilities(client: imaplib.IMAP4) -> set[str]:
    """Asked again after the login: many servers name MOVE and UIDPLUS only to a logged-in user."""
    kind, data = client.capability()
    if kind != "OK" or not data or not data[-1]:
        return set(client.capabilities)
    return set(data[-1].decode("ascii", "replace").upper().split())


def _ensure_folder(client: imaplib.IMAP4, imap: ImapSettings) -> None:
    """The done folder, created when missing: before any message is handled, so a folder we can't make
    stops the poll before it has read anything."""
    kind, data = client.list('""', _mailbox(imap.done))
    if kind == "OK" and any(data):
        return
    kind, data = client.create(_mailbox(imap.done))
    if kind != "OK":
        raise TransportError(f"the IMAP server {imap.host}:{imap.port} won't create the folder {imap.done!r} for "
                             f"handled mail ({_text(data, imap)}); create it yourself, or name another with "
                             f"done=FOLDER in {URL}", permanent=True)


def _waiting(client: imaplib.IMAP4, exists: int, limit: int) -> list[tuple[int, int]]:
    """(UID, size) of the oldest `limit` messages not marked deleted. Asked for by sequence number in pages
    rather than with one UID SEARCH, whose answer in a flooded mailbox outgrows imaplib's line limit."""
    waiting: list[tuple[int, int]] = []
    first = 1
    while first <= exists and len(waiting) < limit:
        last = min(first + PAGE - 1, exists)
        kind, data = client.fetch(f"{first}:{last}", "(UID RFC822.SIZE FLAGS)")
        if kind != "OK":
            raise imaplib.IMAP4.error(_text(data))
        for line in data:
            line = line[0] if isinstance(line, tuple) else line
            uid, size, flags = _UID.search(line or b""), _SIZE.search(line or b""), _FLAGS.search(line or b"")
            if uid and size and not (flags and rb"\Deleted" in flags[1]):
                waiting.append((int(uid[1]), int(size[1])))
        first = last + 1
    return sorted(set(waiting))[:limit]


def _fetch(client: imaplib.IMAP4, uid: int, size: int) -> bytes | None:
    """The message's bytes, leaving it unread (PEEK). Of one too big to be a report only the first
    MAX_BYTES + 1 bytes: enough for the handler to refuse it by size and keep its head for the operator."""
    if size > MAX_BYTES:
        log.warning("inbound mail UID %s is %s bytes, more than a report needs: only its first %s are read",
                    uid, f"{size:,}", f"{MAX_BYTES + 1:,}")
        what = f"(BODY.PEEK[]<0.{MAX_BYTES + 1}>)"
    else:
        what = "(BODY.PEEK[])"
    kind, data = client.uid("FETCH", str(uid), what)
    if kind != "OK":
        raise imaplib.IMAP4.error(_text(data))
    for item in data:
        if isinstance(item, tuple) and b"BODY[]" in item[0].upper():
            return item[1]
    return None


def _handle(handle: Callable[[bytes], str | None], raw: bytes, uid: int, imap: ImapSettings,
            result: PollResult) -> str | None:
    try:
        return handle(raw)
    except Exception as e:
        raise PollStopped(f"handling the message with UID {uid} in {imap.folder!r} failed ({type(e).__name__}: "
                          f"{shorten(one_line(str(e)), 300)}); it stays there, and the next poll reads it again. "
                          "Is the database up? The log has the rest", result) from e


def _dispose(client: imaplib.IMAP4, imap: ImapSettings, uid: int, capabilities: set[str]) -> None:
    """Out of the folder: MOVE (RFC 6851) to done where the server has it, else COPY and delete; deleted
    alone when there is no done folder. UID EXPUNGE (UIDPLUS, RFC 4315) removes only this message; a plain
    EXPUNGE also removes what other clients marked deleted, as they asked."""
    if imap.done and "MOVE" in capabilities:
        _ok(client.uid("MOVE", str(uid), _mailbox(imap.done)))
        return
    if imap.done:
        _ok(client.uid("COPY", str(uid), _mailbox(imap.done)))
    _ok(client.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)"))
    _ok(client.uid("EXPUNGE", str(uid)) if "UIDPLUS" in capabilities else client.expunge())


def _ok(answer: tuple[str, list]) -> None:
    kind, data = answer
    if kind != "OK":
        raise imaplib.IMAP4.error(_text(data))


def _logout(client: imaplib.IMAP4) -> None:
    """LOGOUT, and the socket closed even when the server is gone."""
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        with contextlib.suppress(OSError):
            client.shutdown()


def _failed(imap: ImapSettings, e: BaseException, doing: str) -> TransportError:
    """The error in words that say what to check; never imaplib's internals, never the password."""
    where = f"the IMAP server {imap.host}:{imap.port}"
    if isinstance(e, ssl.SSLCertVerificationError):
        return TransportError(f"the certificate of {where} is not trusted ({e.verify_message}); if a CA of your own "
                              "signed it, point SSL_CERT_FILE at that CA's PEM file", permanent=True)
    if isinstance(e, ssl.SSLError):
        return TransportError(f"TLS with {where} failed ({e.reason or e}); check the port in {URL}: imaps:// speaks "
                              "TLS from the start (usually 993), imap+starttls:// starts in the clear (usually 143)",
                              permanent=True)
    if isinstance(e, TimeoutError):
        return TransportError(f"{where} did not answer within {imap.timeout:g} s while {doing}; the next poll "
                              f"tries again (timeout=SECONDS in {URL} gives it longer)", permanent=False)
    if isinstance(e, OSError) and doing == "connecting":
        return TransportError(f"cannot reach {where} ({e.strerror or e}); check the host and port in {URL} and "
                              "that the server is up", permanent=False)
    if isinstance(e, OSError | imaplib.IMAP4.abort):
        return TransportError(f"lost {where} while {doing} ({_words(e, imap)}); the next poll tries again",
                              permanent=False)
    return TransportError(f"{where} refused {doing} ({_words(e, imap)}); the mail stays in {imap.folder!r} for "
                          "the next poll", permanent=True)


def _words(e: BaseException, imap: ImapSettings | None = None) -> str:
    return _text(list(e.args) or [type(e).__name__], imap)


def _text(data: list, imap: ImapSettings | None = None) -> str:
    """A server's answer as one short line, without the password should a server echo it."""
    words = " ".join(d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data if d)
    words = shorten(one_line(words), 300) or "no reason given"
    if imap and imap.password:
        words = words.replace(imap.password, "…")
    return words


def _quoted(text: str) -> str:
    """An IMAP quoted string: names with spaces or quotes survive imaplib, which sends arguments as they are."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox(name: str) -> str:
    """A folder name as IMAP writes it (RFC 3501 5.1.3): "&" as "&-", what isn't printable ASCII in modified
    UTF-7, quoted."""
    def encoded(run: re.Match) -> str:
        return "&" + base64.b64encode(run[0].encode("utf-16-be")).decode("ascii").rstrip("=").replace("/", ",") + "-"

    return _quoted(_NOT_PRINTABLE.sub(encoded, name.replace("&", "&-")))
