"""The per-recipient assembly from a template parses to exactly what the slow, one-message-at-a-time build gives."""

from __future__ import annotations

import binascii
import email
import email.policy
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syndicate.errors import InvalidInput
from syndicate.mail.message import Mailbox, PreparedMessage, build_message
from syndicate.subscribers import consent

PLACEHOLDER = "https://syndicate.invalid/unsubscribe-url"
TEXT = "The Morning Briefing — Zoë's picks\n\n1. Crème brûlée in 東京\n" + "A line of text. " * 40 + \
    f"\n\nUnsubscribe: {PLACEHOLDER}\n"
HTML = ("<!DOCTYPE html><html><body><p style=\"color:#b3261e\">Crème brûlée — 東京 😀</p>"
        + "<p>" + "Story text with = signs and trailing spaces   \n" * 30 + "</p>"
        + f'<a href="{PLACEHOLDER}">Unsubscribe</a></body></html>')
NAMES = ["", "Ada Lovelace", "Zoë Ødegård", "陈静", "O'Brien, Pat", 'Quote "the" Reader', "Ünïcödé " * 12,
         "👩‍👩‍👧‍👦 Family", "plain-ascii-but-a-very-long-display-name-that-goes-on-and-on-and-on-and-on"]
ADDRESSES = ["reader@example.org", "first.last+tag@example.co.uk", "x@xn--bcher-kva.example"]


def slow(to: Mailbox, unsubscribe: str, message_id: str, date: datetime) -> bytes:
    return build_message(
        sender=Mailbox("TruthUSA News Hub", "briefing@news.example"), to=to,
        subject="Armenia — and 3 more stories", text=TEXT.replace(PLACEHOLDER, unsubscribe),
        html=HTML.replace(PLACEHOLDER, unsubscribe), message_id=message_id, date=date, reply_to="desk@news.example",
        headers={"List-Id": "The Morning Briefing <morning.news.example>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "Auto-Submitted": "auto-generated",
                 "List-Unsubscribe": f"<{unsubscribe}>, <mailto:unsubscribe@news.example?subject=x>"},
    )


@pytest.fixture(scope="module")
def template():
    return PreparedMessage(
        sender=Mailbox("TruthUSA News Hub", "briefing@news.example"),
        subject="Armenia — and 3 more stories", text=TEXT, html=HTML, reply_to="desk@news.example",
        headers={"List-Id": "The Morning Briefing <morning.news.example>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "Auto-Submitted": "auto-generated"},
    )


def parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("address", ADDRESSES)
def test_an_assembled_message_parses_to_what_the_slow_build_gives(template, name, address):
    to = Mailbox(name, address)
    unsubscribe = f"https://news.example/u/{abs(hash((name, address)))}.sig_-x"
    message_id = f"<{abs(hash(address))}.7.abc@news.example>"
    date = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)

    fast_bytes = template.render(
        to=address, name=name, message_id=message_id, date=date, replace={PLACEHOLDER: unsubscribe},
        per_recipient={"List-Unsubscribe": f"<{unsubscribe}>, <mailto:unsubscribe@news.example?subject=x>"})
    fast, reference = parsed(fast_bytes), parsed(slow(to, unsubscribe, message_id, date))

    for header in ("From", "To", "Subject", "Date", "Message-ID", "Reply-To", "List-Id", "List-Unsubscribe",
                   "List-Unsubscribe-Post", "Auto-Submitted", "MIME-Version"):
        assert str(fast[header]) == str(reference[header]), header
    assert fast.get_content_type() == reference.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in fast.iter_parts()] == ["text/plain", "text/html"]
    for kind in ("plain", "html"):
        assert fast.get_body((kind,)).get_content() == reference.get_body((kind,)).get_content()
    assert unsubscribe in fast.get_body(("plain",)).get_content()
    # As SMTP carries it: CRLF line ends, 7-bit, no line over RFC 5322's 998.
    assert b"\n" not in fast_bytes.replace(b"\r\n", b"")
    assert all(byte < 128 for byte in fast_bytes)
    assert max(len(line) for line in fast_bytes.split(b"\r\n")) <= 998
    assert fast.defects == [] and all(part.defects == [] for part in fast.iter_parts())


def test_a_non_ascii_mailbox_name_is_refused_but_an_international_domain_is_kept_in_ascii():
    with pytest.raises(InvalidInput, match="not an email address we can send to"):
        consent.normalise_email("zoë@example.org")
    assert consent.normalise_email("Reader@Bücher.example") == "reader@xn--bcher-kva.example"


MARKER = "https://syndicate.invalid/unsubscribe-url"
OTHER = "https://syndicate.invalid/preferences-url"
LINES = ["Ünïcode line with trailing space ", "x" * 300 + f" {MARKER} tail", "=== equals and tabs\t",
         f"<a href=\"{MARKER}\">go</a>" + "é" * 90, "", "end", ".starts with a dot", "y" * 75 + ".after a soft break",
         f"{MARKER}", f"{MARKER}{OTHER}", f" {MARKER} ", "z" * 74 + MARKER + "." + "w" * 80, f"{OTHER}: {MARKER}\t",
         ("a" * 70 + "\u2028") * 4 + MARKER + "\x0c" + "b" * 70]  # separators str.splitlines breaks at, SMTP not
VALUES = st.sampled_from(["https://news.example/u/abc", "https://news.example/u/" + "Ü" * 80, ".x" * 60,
                          "a" * 75, "a" * 76, "b" * 151, "é", " ", "=3D=", "https://n.example/u/WzEyLDdd.x-_Q"])


@given(st.lists(st.sampled_from(LINES) | st.text(st.characters(codec="utf-8", exclude_characters="\r\n"),
                                                   max_size=120), min_size=1, max_size=12),
       VALUES, VALUES)
def test_a_body_encoded_once_with_its_values_filled_in_decodes_to_the_text_with_them(lines, value, other):
    """Per recipient only the values are encoded, between soft line breaks: the body decodes to the text with
    the values in, as encoding it whole would; no line is longer than 76 or starts with a dot."""
    from syndicate.mail.message import QP_LINE, PreparedMessage, _qp

    body = "\n".join(lines) + "\n"
    template = PreparedMessage(sender=Mailbox("A", "a@example.com"), subject="s", text=body, html=body)
    encoded = template._encoded(template.text, {MARKER: value, OTHER: other})
    expected = template.text.replace(MARKER, value).replace(OTHER, other)
    assert binascii.a2b_qp(encoded) == binascii.a2b_qp(_qp(expected))
    assert binascii.a2b_qp(encoded).replace(b"\r\n", b"\n").decode("utf-8") == expected
    lines_out = encoded.split(b"\r\n")
    assert all(len(line) <= QP_LINE for line in lines_out)
    assert not any(line.startswith(b".") for line in lines_out)
    assert b"\n" not in encoded.replace(b"\r\n", b"") and all(byte < 128 for byte in encoded)
    if MARKER not in body and OTHER not in body:
        assert encoded == _qp(expected)  # a body without placeholders: the same bytes as encoding it whole


@pytest.mark.parametrize(("text", "placeholder_value"), [
    ("Plain lines.\nUnsubscribe: {}\n", "https://n.example/u/1"),
    (".A story line that starts with a dot\nUnsubscribe: {}\n", "https://n.example/u/1"),
    ("A line that wraps " * 10 + "." * 80 + "\nLink: {}\n", "https://n.example/u/1"),  # a soft break before a dot
    ("Link:\n{}\n", ".dotted-by-the-recipient"),  # only this recipient's line starts with a dot
    ("." * 500 + "\n.\n..\n{}\n", "é." * 100),
])
def test_no_line_of_a_message_starts_with_a_dot_so_smtp_sends_it_as_it_is(text, placeholder_value):
    template = PreparedMessage(sender=Mailbox("News", "news@example.com"), subject="s",
                               text=text.format(PLACEHOLDER), html="<p>hi</p>\n.<p>" + text.format(PLACEHOLDER))
    message = template.message(to="ana@example.com", message_id="<1@example.com>",
                               date=datetime(2026, 11, 28, tzinfo=UTC), per_recipient={},
                               replace={PLACEHOLDER: placeholder_value})
    lines = message.data.split(b"\r\n")
    assert message.transparent and not any(line.startswith(b".") for line in lines)
    assert b"\n" not in message.data.replace(b"\r\n", b"") and b"\r" not in message.data.replace(b"\r\n", b"")
    assert (message.sender, message.recipient) == ("news@example.com", "ana@example.com")
    parsed_back = parsed(message.data)
    plain, html = (parsed_back.get_body((kind,)).get_content().replace("\r\n", "\n") for kind in ("plain", "html"))
    assert plain == text.format(placeholder_value)
    assert html == "<p>hi</p>\n.<p>" + text.format(placeholder_value)


@given(st.text(st.characters(codec="utf-8"), max_size=400).map(lambda t: t.replace("\r", "")))
def test_quoted_printable_keeps_the_text_and_its_rules_whatever_the_dots(text):
    from syndicate.mail.message import QP_LINE, _qp

    text = "." + text.replace(" ", ". .")  # many dots, many places for a soft break to put one first
    encoded = _qp(text)
    lines = encoded.split(b"\r\n")
    assert not any(line.startswith(b".") for line in lines)
    assert all(len(line) <= QP_LINE for line in lines)
    assert b"\n" not in encoded.replace(b"\r\n", b"") and all(byte < 128 for byte in encoded)
    assert binascii.a2b_qp(encoded).replace(b"\r\n", b"\n").decode("utf-8") == text
