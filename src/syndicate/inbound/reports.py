"""What a mail sent back to us says: a bounce report (RFC 3464, or a mail server's own format), a
complaint (ARF, RFC 5965), an unsubscribe sent to the List-Unsubscribe mailto, an auto-reply (RFC 3834),
or nothing we act on. Reading only; `inbound.handling` applies it.

Anyone can send us mail, so nothing here believes an address a message names. Who a message is about
is found only through what we signed and sent out: the return path of our mail (`tokens.return_path`,
to which the report was sent or which it quotes) and the unsubscribe token in its subject or in the
quoted List-Unsubscribe. A report that carries neither names no one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email import policy as email_policy
from email.errors import HeaderParseError, MessageError
from email.header import Header, decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

from syndicate import tokens
from syndicate.errors import InvalidInput
from syndicate.text import one_line, shorten

MAX_BYTES = 2 * 1024 * 1024  # a report quotes one of our mails (≤ 102 KB to be read whole in Gmail), not more
MAX_PARTS = 64  # a DSN has 2–3 parts, an ARF report 3; a message of hundreds is built to hurt a parser
MAX_DEPTH = 6  # report → quoted message → its alternative: 3 levels; more is a bomb
# Lines that start with "--" (boundaries, mostly), counted before parsing: the email package takes seconds
# over 2 MB of empty parts or a few hundred nested levels before MAX_PARTS or MAX_DEPTH can say no.
MAX_DASH_LINES = 500
HEADER_CHARS = 4000  # of one header read: decode_header takes time quadratic in its encoded words
DETAIL = 500  # characters of a server's reply kept

BOUNCE, SOFT_BOUNCE, COMPLAINT, UNSUBSCRIBE = "bounce", "soft_bounce", "complaint", "unsubscribe"
ACTIONS = (BOUNCE, SOFT_BOUNCE, COMPLAINT, UNSUBSCRIBE)
IGNORED, REFUSED = "ignored", "refused"

# Where a report names the address it was sent to (ours: a return path). Postfix's local delivery and
# pipe add Delivered-To and X-Original-To, Exim Envelope-To, hosted mailboxes Delivered-To.
_DELIVERED_TO = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "original-recipient", "to")
_TOKEN = re.compile(r"[A-Za-z0-9_.-]{8,200}")
_UNSUBSCRIBE_PATH = re.compile(r"/u/([A-Za-z0-9_.-]{8,200})")
_MAILTO_TOKEN = re.compile(r"subject=unsubscribe(?:%20|\+| )([A-Za-z0-9_.-]{8,200})", re.I)
# A server's reply in a bounce's prose: "550 5.1.1 …", "550-5.1.1 …" (one line of several), Yahoo's "554: …";
# or a line that carries only an enhanced status code, as qmail's "Sorry, no mailbox here by that name. (#5.1.1)".
_SMTP_REPLY = re.compile(r"\b[245]\d\d(?:[ -]|: )(?:[245]\.\d{1,3}\.\d{1,3}\b)?.*")
_STATUS_LINE = re.compile(r".*\b[245]\.\d{1,3}\.\d{1,3}\b.*")
# Where a bounce's own words end and its copy of our mail begins (Exim, qmail and Yahoo, Mailman's list).
_COPY_FOLLOWS = re.compile(r"-{2,} ?(?:This is a copy|Below this line|Original message)", re.I)
_AUTO_SUBJECT = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|out of (?:the )?office|abwesenheit|absence|"
    r"away from|on vacation|vacation reply|r[ée]ponse automatique|respuesta autom[aá]tica)", re.I)


@dataclass(frozen=True)
class Failure:
    """One recipient a bounce report gives up on."""

    address: str  # as the report names it (Final-Recipient, Original-Recipient, or the server's prose)
    permanent: bool
    status: str | None  # the enhanced status code (RFC 3463), e.g. 5.1.1
    reply: str  # what the receiving server said, or the report's own words


@dataclass
class Report:
    """What one inbound message is, and whom it is about (only through what we signed)."""

    kind: str  # bounce | soft_bounce | complaint | unsubscribe | ignored | refused
    why: str  # one line for the log and the operator: what it is, or why nothing was done
    form: str = ""  # how it was read: "RFC 3464", "ARF", "Exim", "mailto", "auto-reply", …
    failures: list[Failure] = field(default_factory=list)
    mails: list[tuple[str, int]] = field(default_factory=list)  # our mails it is about: (kind, number), verified
    unsubscribe_tokens: list[str] = field(default_factory=list)  # signed unsubscribe tokens it carries
    message_ids: list[str] = field(default_factory=list)  # Message-IDs of our mail it quotes
    message_id: str = ""  # the inbound message's own
    sender: str = ""  # its From, as one line
    subject: str = ""

    @property
    def acted_on(self) -> bool:
        return self.kind in ACTIONS


class Refused(InvalidInput):
    """A message no one should parse further: too big, or built to make a parser work for nothing."""


# flufl.bounce logs each detector's exception with its traceback before raising it again; `_other_bounce`
# takes that as "not a bounce", and a message without a From (which trips its Yale detector) is no error.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


def read(raw: bytes, secret_key: str, recipients: tuple[str, ...] | list[str] = ()) -> Report:
    """Read one RFC 5322 message. `recipients`: the envelope's (from LMTP or the MTA's pipe), if known."""
    if len(raw) > MAX_BYTES:
        # The callers read no more than MAX_BYTES + 1 (an MTA's pipe, the IMAP poll): "more than", not a size.
        return Report(REFUSED, f"more than {MAX_BYTES:,} bytes: more than a report needs, not read")
    if raw.startswith(b"--") + raw.count(b"\n--") > MAX_DASH_LINES:
        return Report(REFUSED, f"more than {MAX_DASH_LINES} MIME boundary lines (a report has a few): not read")
    try:
        message = message_from_bytes(raw, policy=email_policy.compat32)
        _check_shape(message)
        _plain_headers(message)
        report = _read(message, secret_key, recipients)
    except Refused as e:
        return Report(REFUSED, str(e))
    except RecursionError:
        return Report(REFUSED, "MIME parts nested too deep to read: not read")
    except (UnicodeError, MessageError) as e:
        # The email package's own reading can fail on what a message declares: get_payload() decodes 8-bit
        # text in the part's charset and only expects an unknown one, not one (idna) that can't replace.
        error = shorten(one_line(str(e)), 200)
        return Report(REFUSED, f"the email package could not read it ({type(e).__name__}: {error}): not read")
    report.message_id = _text(message.get("message-id", ""))[:300]
    report.sender = _text(message.get("from", ""))[:300]
    report.subject = _text(message.get("subject", ""))[:300]
    return report


def _check_shape(message: Message) -> None:
    parts, stack = 0, [(message, 0)]
    while stack:
        part, depth = stack.pop()
        parts += 1
        if parts > MAX_PARTS:
            raise Refused(f"more than {MAX_PARTS} MIME parts (a report has a few): not read")
        if depth > MAX_DEPTH:
            raise Refused(f"MIME parts nested more than {MAX_DEPTH} deep (a report needs 3): not read")
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in payload if isinstance(child, Message))


def _plain_headers(message: Message) -> None:
    """Raw 8-bit bytes in a header make the email package hand out a `Header` object instead of text, on
    which flufl.bounce's detectors fail (`.lower()`): the message's own headers are made text, bytes replaced."""
    fields = message.items()
    if all(isinstance(value, str) for _, value in fields):
        return
    for name in set(message.keys()):
        del message[name]
    for name, value in fields:
        message[name] = value if isinstance(value, str) else _text(value)


def _read(message: Message, secret_key: str, recipients) -> Report:
    content_type = message.get_content_type()
    report_type = str(message.get_param("report-type", "") or "").lower()
    if content_type == "multipart/report" and report_type == "feedback-report":
        return _complaint(message, secret_key, recipients)
    if content_type == "multipart/report" and report_type == "delivery-status":
        return _dsn(message, secret_key, recipients)
    if content_type == "multipart/report" and report_type == "disposition-notification":
        return Report(IGNORED, "a read receipt (RFC 8098): nothing to do", form="MDN")
    subject = _text(message.get("subject", ""))
    if subject.lower().startswith("unsubscribe"):
        return _unsubscribe(message, secret_key, subject)
    if (bounce := _other_bounce(message, secret_key, recipients)) is not None:
        return bounce
    if _auto_reply(message, subject):
        return Report(IGNORED, "an automatic reply (RFC 3834), e.g. out of office: nothing to do", form="auto-reply")
    return Report(IGNORED, "not a bounce report, complaint or unsubscribe: kept for the operator",
                  form="unrecognised")


# ── RFC 3464: multipart/report; report-type=delivery-status ──────────────────


def _dsn(message: Message, secret_key: str, recipients) -> Report:
    failures, delayed, delivered = [], 0, 0
    for block in _status_blocks(message):
        # Only a recipient's block has an Action: the message's own (Reporting-MTA, …) comes first, but
        # some servers leave it out, so the blocks are told apart by their fields, not by their place.
        action = _text(block.get("action", "")).lower().split(" ")[0]
        if not action:
            continue
        status = _status(block.get("status", ""))
        if action in ("failed", "error"):  # opensmtpd writes "error"
            address = _recipient(block)
            diagnostic = _diagnostic(block.get("diagnostic-code", ""))
            status = _finer_status(status, diagnostic)
            failures.append(Failure(address, _permanent(status), status, diagnostic or _status_words(status)))
        elif action == "delayed":
            delayed += 1
        else:  # delivered, relayed, expanded: a success report someone asked for
            delivered += 1
    report = _about(Report(IGNORED, "", form="RFC 3464"), message, secret_key, recipients)
    if failures:
        return _bounce(report, failures)
    if delayed:
        report.why = "a delay warning: the server is still trying, and will report again if it gives up"
    elif delivered:
        report.why = "a delivery report without a failure: nothing to do"
    else:
        report.why = "a delivery report that names no recipient's fate (no Action field): kept for the operator"
    return report


def _status_blocks(message: Message) -> list[Message]:
    """The field blocks of the report's status part. The email package splits message/delivery-status into
    blocks itself; message/global-delivery-status (RFC 6533, Postfix's for SMTPUTF8 mail) it parses as one
    message, whose headers are the first block and whose body the rest, so that is split here."""
    blocks: list[Message] = []
    for part in message.walk():
        kind = part.get_content_type()
        payload = part.get_payload()
        if kind == "message/delivery-status" and isinstance(payload, list):
            blocks += [block for block in payload if isinstance(block, Message)]
        elif kind == "message/global-delivery-status" and isinstance(payload, list) and payload:
            first = payload[0]
            rest = first.get_payload(decode=True) if isinstance(first, Message) else b""  # bytes: it is UTF-8
            blocks.append(first)
            for text in re.split(rb"\r?\n[ \t]*\r?\n", rest if isinstance(rest, bytes) else b""):
                if text.strip():
                    blocks.append(message_from_bytes(text.strip(), policy=email_policy.compat32))
    return blocks


def _finer_status(status: str | None, diagnostic: str) -> str | None:
    """Exim writes Status: 5.0.0 for every failure; the server's own code in the diagnostic says more
    (a full mailbox, 5.2.2, is a soft bounce, which 5.0.0 would hide)."""
    if status is None or not status.endswith(".0.0"):
        return status
    finer = _status(diagnostic)
    return finer if finer and finer[0] == status[0] else status


def _recipient(block: Message) -> str:
    for name in ("original-recipient", "final-recipient", "x-actual-recipient"):
        value = _text(block.get(name, ""))
        kind, _, address = value.partition(";")
        if address.strip() and kind.strip().lower() in ("rfc822", "utf-8"):
            return address.strip().strip("<>")
    return ""


def _status(value) -> str | None:
    match = re.search(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b", _text(value))
    return match.group(0) if match else None


def _permanent(status: str | None) -> bool:
    """5.x.x is permanent — except a full mailbox (x.2.2, which RFC 3463 calls persistent transient and
    providers report either way): it may empty, so it counts as a soft bounce."""
    if status is None:
        return True  # "failed" without a status: the server gave up on the address
    return status.startswith("5") and status[1:] != ".2.2"


def _diagnostic(value) -> str:
    text = _text(value)
    kind, sep, rest = text.partition(";")
    if sep and kind.strip().lower() in ("smtp", "x-postfix", "x-unix", "x-local", "x-exim"):
        text = rest
    return shorten(one_line(text), DETAIL)


def _status_words(status: str | None) -> str:
    return f"status {status}" if status else "failed"


# ── ARF (RFC 5965): multipart/report; report-type=feedback-report ────────────


def _complaint(message: Message, secret_key: str, recipients) -> Report:
    fields = next(iter(_parts(message, "message/feedback-report")), None)
    feedback = ""
    if fields is not None:
        block = _feedback_fields(fields)
        feedback = _text(block.get("feedback-type", "")).lower()
        recipients = [*recipients, _text(block.get("original-mail-from", ""))]
    report = _about(Report(COMPLAINT, "", form="ARF"), message, secret_key, recipients)
    reporter = _text(message.get("from", "")) or "a mailbox provider"
    if feedback in ("", "abuse", "fraud"):
        report.why = f"the reader marked our mail as spam (feedback report from {parseaddr(reporter)[1] or reporter})"
        return report
    report.kind = IGNORED
    report.why = (f"a feedback report of type {feedback!r}, not a complaint about a reader's mail: "
                  "kept for the operator")
    return report


def _feedback_fields(part: Message) -> Message:
    """The report's fields: parsed as headers by the email package, or a text payload (some senders)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        return payload[0]
    return message_from_bytes(_bytes(payload), policy=email_policy.compat32)


# ── unsubscribe by mail (the List-Unsubscribe mailto) ────────────────────────


def _unsubscribe(message: Message, secret_key: str, subject: str) -> Report:
    found = []
    candidates = subject.split()[1:] + _body_words(message)
    for word in candidates:
        if _TOKEN.fullmatch(word) and word not in found and _unsubscribe_token(secret_key, word):
            found.append(word)
    if not found:
        return Report(IGNORED, "an unsubscribe mail without a valid token (the mailto link of a mail carries one): "
                               "kept for the operator; the reader can use the link at the foot of any mail",
                      form="mailto")
    return Report(UNSUBSCRIBE, "an unsubscribe mail to the List-Unsubscribe address", form="mailto",
                  unsubscribe_tokens=found[:1])


def _body_words(message: Message) -> list[str]:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return _decoded(part)[:2000].split()[:40]
    return []


def _unsubscribe_token(secret_key: str, token: str) -> bool:
    try:
        tokens.read_unsubscribe_token(secret_key, token)
    except InvalidInput:
        return False
    return True


# ── the rest: a mail server's own bounce format, an auto-reply ──────────────


def _other_bounce(message: Message, secret_key: str, recipients) -> Report | None:
    """A bounce in a format of its own (Exim's, qmail's, old Exchange's, …), found by Mailman's detectors."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # noqa: BLE001 — a detector's heuristics meeting a message they didn't expect
        return None
    if not temporary and not permanent:
        return None
    reply = _prose_reply(message)
    failures = [Failure(a.decode("ascii", "replace"), True, _status(reply), reply or "failed") for a in permanent]
    failures += [Failure(a.decode("ascii", "replace"), False, _status(reply), reply or "delayed")
                 for a in temporary if a not in permanent]
    report = _about(Report(IGNORED, "", form=_server_kind(message)), message, secret_key, recipients)
    return _bounce(report, failures)


def _server_kind(message: Message) -> str:
    if message.get("x-failed-recipients"):
        return "Exim"
    sender = _text(message.get("from", "")).lower()
    return f"bounce from {parseaddr(sender)[1] or 'a mail server'}"


def _prose_reply(message: Message) -> str:
    """The server's reply as a bounce's text gives it (550 5.1.1 …, with the lines of a multi-line reply),
    or else the first line with a status code; never read from the copy of our mail that follows."""
    for part in message.walk():
        if part.get_content_maintype() != "text":
            continue
        reply, status_line = [], ""
        for line in _decoded(part)[:20000].splitlines():
            if _COPY_FOLLOWS.match(line.strip()):
                break
            match = _SMTP_REPLY.search(line)
            if match:
                reply.append(match.group(0))
                if not re.match(r"[245]\d\d-", match.group(0)):  # "550 …" ends a reply, "550-…" goes on
                    break
            elif reply:
                break
            elif not status_line and _STATUS_LINE.fullmatch(line):
                status_line = line
        return shorten(one_line(" ".join(reply) or status_line), DETAIL)
    return ""


def _auto_reply(message: Message, subject: str) -> bool:
    auto = _text(message.get("auto-submitted", "")).lower()
    if auto and auto != "no":
        return True
    if any(message.get(name) for name in ("x-autoreply", "x-autorespond", "x-autoresponder", "x-vacation")):
        return True
    if _text(message.get("precedence", "")).lower() in ("auto_reply", "junk", "bulk"):
        return True
    return bool(_AUTO_SUBJECT.match(subject))


# ── whom a report is about: only what we signed ──────────────────────────────


def _about(report: Report, message: Message, secret_key: str, recipients) -> Report:
    """Our mails a report names: return paths it was sent to or quotes, and the quoted mail's own
    List-Unsubscribe token and Message-ID (the last only a pointer, once a signed reference said who)."""
    addresses = list(recipients)
    for name in _DELIVERED_TO:
        addresses += [address for _, address in getaddresses([_text(v) for v in message.get_all(name, [])])]
    quoted = _quoted(message)
    if quoted is not None:
        addresses += [_text(quoted.get("return-path", "")).strip("<> ")]
        report.message_ids = [_text(quoted.get("message-id", "")).strip()][:1]
        unsubscribe = _text(quoted.get("list-unsubscribe", ""))
        for token in _UNSUBSCRIBE_PATH.findall(unsubscribe) + _MAILTO_TOKEN.findall(unsubscribe):
            if token not in report.unsubscribe_tokens and _unsubscribe_token(secret_key, token):
                report.unsubscribe_tokens.append(token)
    for address in addresses:
        mail = tokens.read_return_path(secret_key, address) if address else None
        if mail is not None and mail not in report.mails:
            report.mails.append(mail)
    return report


def _quoted(message: Message) -> Message | None:
    """The mail a report is about, as it quotes it: message/rfc822 (whole) or text/rfc822-headers."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind == "text/rfc822-headers":
            return message_from_bytes(_bytes(part.get_payload(decode=True) or b""), policy=email_policy.compat32)
    return None


def _bounce(report: Report, failures: list[Failure]) -> Report:
    report.failures = failures
    permanent = [f for f in failures if f.permanent]
    report.kind = BOUNCE if permanent else SOFT_BOUNCE
    worst = (permanent or failures)[0]
    report.why = f"{'permanent' if permanent else 'temporary'} failure for {worst.address or 'a recipient'}: " \
                 f"{worst.reply}"
    return report


# ── reading text out of a hostile message ────────────────────────────────────


def _parts(message: Message, content_type: str) -> list[Message]:
    return [part for part in message.walk() if part.get_content_type() == content_type]


def _text(value) -> str:
    """A header's text, one line: encoded words decoded, undecodable bytes replaced, never an exception."""
    if value is None:
        return ""
    if isinstance(value, Header):  # raw 8-bit bytes, which the email package wraps: read as UTF-8 (RFC 6532)
        raw = b"".join(chunk for chunk, _ in decode_header(value)).decode("utf-8", "replace")[:HEADER_CHARS]
    else:
        raw = str(value)[:HEADER_CHARS]
    try:
        if "=?" in raw:
            raw = str(make_header(decode_header(raw)))
    except (ValueError, LookupError, UnicodeError, HeaderParseError):  # e.g. an encoded word that isn't base64
        pass
    raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return one_line(raw)


def _decoded(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except (LookupError, UnicodeError):  # no such codec, or one (idna) that can't replace what it can't read
        return data.decode("utf-8", "replace")


def _bytes(payload) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""
