"""A message's bytes: what SMTP carries, exactly — every header made by us from
outside text, the MIME body, and a message prepared once for many recipients."""

from __future__ import annotations

import binascii
import email.base64mime
import email.quoprimime
import hashlib
import re
import secrets
from datetime import datetime
from email.charset import SHORTEST, Charset
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP as _SMTP
from email.utils import format_datetime
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

from syndicate import tokens
from syndicate.mail.transport import Outgoing
from syndicate.text import one_line

if TYPE_CHECKING:
    from syndicate.config import Settings
    from syndicate.mail.dkim import DkimSettings


# RFC 5322's hard limit. At 78 the stdlib folds a long List-Unsubscribe URL into
# RFC 2047 encoded words, which no mail client reads back as a URL.
SMTP = _SMTP.clone(max_line_length=998)


def message_id(domain: str, secret_key: str, *parts) -> str:
    """Unique per message and per installation, and the same on every retry of one delivery."""
    return f"<{'.'.join(map(str, parts))}.{_instance(secret_key)}@{domain}>"


@cache
def _instance(secret_key: str) -> str:
    return hashlib.sha256(secret_key.encode()).hexdigest()[:10]


def inbound_domain(settings: Settings, from_address: str) -> str:
    """Where mail sent back to us goes: SYNDICATE_BOUNCE_DOMAIN, or the sender's own domain."""
    return settings.bounce_domain or from_address.rpartition("@")[2]


def envelope_sender(settings: Settings, kind: str, number: int, from_address: str) -> str:
    """A message's return path. When inbound mail is read (Settings.inbound), one that names the message
    (tokens.return_path), so its bounce report finds it; otherwise the From address, whose mailbox a person
    reads: a return path no one reads would lose the reports."""
    if not settings.inbound:
        return from_address
    return tokens.return_path(settings.secret_key, kind, number, inbound_domain(settings, from_address))


def unsubscribe_mailto(settings: Settings, from_address: str) -> str | None:
    """The mailto of List-Unsubscribe, without its token; None when no inbound path would read the mail:
    only the https one-click is offered then (RFC 8058 asks for no more)."""
    if not settings.inbound:
        return None
    return f"mailto:unsubscribe@{inbound_domain(settings, from_address)}?subject=unsubscribe"


class Mailbox(NamedTuple):
    """Who a header names: a display name (any text, from anywhere) and an address checked on the way in.
    Not `email.headerregistry.Address`, which raises on a line break in the name: one bad from-name would
    stop every batch of an edition."""

    name: str
    address: str




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
    """`text` as RFC 2047 encoded words (Q or B, whichever is shorter), folded for the header `name`. A text
    whose one word fits the header's first line (a reader's name, as a rule) is made here as Header makes it,
    without its folding machinery: a non-ASCII name in To cost 56 µs of a message's ~90."""
    raw = text.encode("utf-8")
    if len(raw) <= _ONE_WORD_BYTES:
        word = (email.base64mime.header_encode(raw, "utf-8")
                if email.base64mime.header_length(raw) < email.quoprimime.header_length(raw)
                else email.quoprimime.header_encode(raw, "utf-8"))
        if len(word) + len(name) <= _ONE_WORD_LINE:
            return word
    return Header(text, _UTF8, header_name=name).encode(linesep="\r\n")


_ONE_WORD_LINE = 76  # Header keeps one word unfolded while it and "From" (len 4) are at most 76 characters
_ONE_WORD_BYTES = 60  # longer than a word on that line can hold however encoded: Header folds it


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


class PreparedMessage:
    """A message rendered once for many recipients: per recipient the bytes are assembled,
    not built and serialised again (about 20× cheaper than `build_message`).

    What differs per recipient: To, Message-ID, Date, the `per_recipient` headers and
    the placeholders replaced in both bodies. The result parses to what `build_message`
    would give for the same values (tests/mail/test_mail.py checks it over many recipients).
    No line of it starts with a dot, so DATA carries it as it is (`Outgoing.transparent`).
    With `dkim`, each message is signed as it is assembled (tests/mail/test_dkim.py).
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
        self._dated: tuple[int | None, str] = (None, "")  # the Date header of the second last asked for

    def render(self, *, to: str, name: str = "", message_id: str, date: datetime, per_recipient: dict[str, str],
               replace: dict[str, str]) -> bytes:
        """The message's bytes for the mailbox `to` (an address already checked, as a subscriber's
        is when they sign up) and its display `name`."""
        values = _values(replace)
        text, html = self._encoded(self.text, replace, values), self._encoded(self.html, replace, values)
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
                replace: dict[str, str], return_path: str | None = None) -> Outgoing:
        """The message for `to`, sent from `return_path` (the envelope sender; the From address if None)."""
        data = self.render(to=to, name=name, message_id=message_id, date=date, per_recipient=per_recipient,
                           replace=replace)
        return Outgoing(return_path or self.sender, to, data, message_id, transparent=True)

    def _date(self, date: datetime) -> str:
        second = int(date.timestamp())  # datetime.replace, with its keywords parsed, cost more than the rest
        if self._dated[0] != second:
            self._dated = (second, format_datetime(date.replace(microsecond=0)))
        return self._dated[1]

    def _encoded(self, body: str, replace: dict[str, str], values: dict[str, bytes] | None = None) -> bytes:
        """The body quoted-printable encoded, placeholders filled in. Encoded once: per recipient only the
        values are, each between soft line breaks ("=" CRLF, gone when decoded), so that the rest of its
        line is the same bytes for every recipient (encoding the whole line again, 450 characters of a
        footer, was a tenth of a worker's CPU per message). `values`: the encoded values, if at hand."""
        key = (id(body), tuple(replace))
        parts = self._prepared.get(key)
        if parts is None:
            parts = self._prepared[key] = _pieces(body, tuple(replace))
        if values is None:
            values = _values(replace)
        return b"".join([values[part] if type(part) is str else part for part in parts])


def _lines(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


QP_LINE = 76  # RFC 2045 §6.7 (5): encoded lines at most 76 characters, a soft break's "=" included
SOFT_BREAK = b"=\r\n"  # RFC 2045 §6.7 (5): a line break of the encoding, not of the text


def _pieces(body: str, placeholders: tuple[str, ...]) -> list[bytes | str]:
    """The body encoded, but for its placeholders, left as they are (str): each stands alone on its encoded
    line, after a soft line break, and is followed by one, so that what it is replaced with changes nothing
    around it."""
    if not placeholders:
        return [_qp(body)]
    found = re.compile("(" + "|".join(map(re.escape, sorted(placeholders, key=len, reverse=True))) + ")")
    parts: list[bytes | str] = []

    def add(piece: bytes | str) -> None:
        if parts and type(piece) is bytes and type(parts[-1]) is bytes:
            parts[-1] += piece
        else:
            parts.append(piece)

    # Lines as SMTP and quoted-printable know them: str.splitlines would also break at U+2028, a form feed and
    # others, and two pieces encoded apart and joined made a line longer than QP_LINE.
    for line in re.findall(r"[^\n]*\n|[^\n]+$", body):
        if not found.search(line):
            add(_qp(line))
            continue
        *between, last = found.split(line)  # text, placeholder, text, placeholder, …, text (with the line end)
        for i, piece in enumerate(between):
            if i % 2:
                add(piece)
            elif piece:
                add(_soft_broken(_qp(piece)))
        add(_qp(last))
    return parts


def _values(replace: dict[str, str]) -> dict[str, bytes]:
    """Each placeholder's value as it stands between soft line breaks (_pieces)."""
    return {placeholder: _soft_broken(_qp(value)) for placeholder, value in replace.items()}


def _soft_broken(encoded: bytes) -> bytes:
    """Quoted-printable text followed by a soft line break, its last line cut first if the "=" would make it
    longer than QP_LINE (never inside an "=XX")."""
    start = encoded.rfind(b"\n") + 1
    if len(encoded) - start >= QP_LINE:
        cut = start + QP_LINE - 1
        while b"=" in encoded[cut - 2:cut]:
            cut -= 1
        encoded = encoded[:cut] + SOFT_BREAK + _no_leading_dot(encoded[cut:])
    return encoded + SOFT_BREAK


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


