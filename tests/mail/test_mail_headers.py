"""Every header made from outside text (a feed's title, a reader's name from the public form, a newsletter's
name) comes out as exactly the header we wrote, whatever the text: checked by parsing the bytes we send, on
the interpreter the tests run on (CI's 3.11.7 has the stdlib bug of CVE-2024-6923, which decodes encoded
words it is handed and writes a decoded CR LF raw)."""

from __future__ import annotations

import email
import email.policy
import json
import quopri
import re
from base64 import b64encode
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from xml.sax.saxutils import escape

import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from conftest import submit
from desk_client import add_editor, api_headers, desk_client
from syndicate import tasks
from syndicate.cli.main import main
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.ingest import feeds
from syndicate.mail.message import Mailbox, PreparedMessage, build_message, header_text, mailbox, phrase
from syndicate.models import Edition, utcnow
from syndicate.newsletters import lists
from syndicate.subscribers import consent
from syndicate.text import one_line
from syndicate.web.app import create_app

DATE = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
INJECTION = "Vote =?UTF-8?Q?=0D=0AReply-To:_payments@evil.example=0D=0A?="
# A blank line encoded in: the attacker's own Content-Type and body, and our MIME headers pushed out.
BODY_INJECTION = ("=?utf-8?b?" + b64encode(b"x\r\nReply-To: p@evil.example\r\nContent-Type: text/html\r\n\r\n"
                                           b"<a href=//evil.example>pay</a>").decode() + "?=")
TEMPLATE_HEADERS = {"From", "Subject", "List-Id", "List-Unsubscribe-Post", "Auto-Submitted", "MIME-Version",
                    "Content-Type", "To", "Message-ID", "Date", "List-Unsubscribe"}
SCOTLAND = "🏴\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"  # a flag made of tag characters
EMOJI = f"Family 👩\u200d👩\u200d👧\u200d👦, {SCOTLAND}, می\u200cخواهم"


def encoded_word(text: str, b: bool) -> str:
    """`text` as an RFC 2047 encoded word, as an attacker writes one: CR, LF and all."""
    data = text.encode("utf-8", "surrogatepass")
    if b:
        return f"=?UTF-8?B?{b64encode(data).decode()}?="
    return "=?UTF-8?Q?" + quopri.encodestring(data, header=True).decode().replace("=\n", "") + "?="


# Any text, and text salted with encoded words that decode to line breaks and headers.
hostile = st.one_of(
    st.text(),
    st.builds(lambda before, inner, b, after: before + encoded_word(inner, b) + after,
              st.text(max_size=20), st.text(alphabet=st.sampled_from("\r\n:aZ@ =?é😀\t"), max_size=40),
              st.booleans(), st.text(max_size=20)),
)


def test_a_header_keeps_the_joiners_emoji_and_scripts_need():
    """Made header-safe where the header is made: the family emoji, a flag's tags and a ZWNJ survive."""
    template = PreparedMessage(sender=Mailbox(EMOJI, "briefing@news.example"), subject=f"{EMOJI}\r\nBcc: x@y.z",
                               text="Hello\n", html="<p>Hello</p>", headers={})
    data = template.render(to="reader@example.org", name=EMOJI, message_id="<1.2.abc@news.example>", date=DATE,
                           per_recipient={}, replace={})

    assert str(parsed(data)["Subject"]) == f"{EMOJI} Bcc: x@y.z"
    assert display_name(email.message_from_bytes(data, policy=email.policy.compat32)["From"]) == EMOJI


def parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def display_name(raw_header: str) -> str:
    """The display name as a mail client shows it: a quoted string unquoted, and encoded words decoded as
    RFC 2047 §6.2 reads them (whitespace between adjacent encoded words ignored), which mail clients do and
    the stdlib's structured parser doesn't. Only a quoted string is unquoted: a name that decodes to text in
    quotes is shown with them."""
    raw = raw_header.rpartition("<")[0].strip()
    if raw.startswith('"') and raw.endswith('"') and len(raw) > 1:
        return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return str(make_header(decode_header(raw)))


def assert_well_formed(message, expected_headers: set[str]) -> None:
    assert set(message.keys()) == expected_headers
    assert all(len(message.get_all(name)) == 1 for name in expected_headers)
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message.get_body(("plain",)).get_content().startswith("Hello")


@settings(max_examples=300, deadline=None)
@given(title=hostile, reader=hostile, from_name=hostile, newsletter=hostile)
@example(title=INJECTION, reader=INJECTION, from_name=INJECTION, newsletter=INJECTION)
@example(title=BODY_INJECTION, reader=BODY_INJECTION, from_name=BODY_INJECTION, newsletter=BODY_INJECTION)
@example(title=EMOJI, reader=EMOJI, from_name=EMOJI, newsletter=EMOJI)
def test_an_edition_has_exactly_the_headers_we_wrote_whatever_the_outside_text(title, reader, from_name, newsletter):
    template = PreparedMessage(
        sender=Mailbox(from_name, "briefing@news.example"), subject=title,
        text="Hello\n", html="<p>Hello</p>",
        headers={"List-Id": f"{phrase(newsletter)} <morning.news.example>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "Auto-Submitted": "auto-generated"})
    data = template.render(to="reader@example.org", name=reader, message_id="<1.2.abc@news.example>", date=DATE,
                           per_recipient={"List-Unsubscribe": "<https://news.example/u/t>"}, replace={})
    message = parsed(data)

    assert_well_formed(message, TEMPLATE_HEADERS)
    assert str(message["Subject"]) == one_line(title)
    raw = email.message_from_bytes(data, policy=email.policy.compat32)
    assert display_name(raw["From"]) == one_line(from_name)
    assert display_name(raw["To"]) == one_line(reader)
    assert display_name(raw["List-Id"]) == one_line(newsletter)
    assert message["From"].addresses[0].addr_spec == "briefing@news.example"
    assert message["To"].addresses[0].addr_spec == "reader@example.org"
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


@settings(max_examples=200, deadline=None)
@given(subject=hostile, reader=hostile, from_name=hostile)
@example(subject=INJECTION, reader=BODY_INJECTION, from_name=INJECTION)
def test_a_single_message_has_exactly_the_headers_we_wrote_whatever_the_outside_text(subject, reader, from_name):
    data = build_message(sender=Mailbox(from_name, "news@example.com"),
                         to=Mailbox(reader, "reader@example.org"), subject=subject,
                         text="Hello, confirm\n", html="<p>Hello</p>", message_id="<c.1@example.com>", date=DATE,
                         headers={"Auto-Submitted": "auto-generated"})
    message = parsed(data)

    assert_well_formed(message, {"From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version",
                                 "Content-Type"})
    assert str(message["Subject"]) == one_line(subject)
    raw = email.message_from_bytes(data, policy=email.policy.compat32)
    assert display_name(raw["To"]) == one_line(reader)


def test_an_encoded_word_in_a_title_is_shown_as_the_characters_the_site_wrote():
    value = header_text(INJECTION)

    assert "\r\n" not in value.replace("\r\n ", "")
    assert str(make_header(decode_header(value))) == INJECTION


def test_plain_text_goes_as_it_is_and_everything_else_is_encoded_by_us():
    assert header_text("Budget passes — and 3 more stories").startswith("=?utf-8?")
    assert header_text("Budget passes, and 3 more stories") == "Budget passes, and 3 more stories"
    assert phrase("Ada Lovelace") == "Ada Lovelace"
    assert phrase('O\'Brien, "Pat"') == '"O\'Brien, \\"Pat\\""'
    assert mailbox("", "a@example.com") == "a@example.com"


@given(text=hostile | st.text(st.characters(codec="utf-8"), max_size=70),
       name=st.sampled_from(["From", "To", "Subject", "Reply-To", "List-Id"]))
@example(text="a" * 60 + "é", name="From")  # one character past what one word on the first line holds
@example(text="Zoë Ødegård", name="From")
def test_encoded_words_are_the_ones_the_stdlibs_header_makes(text, name):
    """A short text (a reader's name) is encoded without Header's folding machinery, into the same bytes. (Text
    reaches it as one_line leaves it: no line breaks or control characters, whitespace collapsed.)"""
    from email.header import Header

    from syndicate.mail.message import _UTF8, _encoded_words

    text = one_line(text)
    assert _encoded_words(text, name) == Header(text, _UTF8, header_name=name).encode(linesep="\r\n")


@pytest.mark.parametrize("address", ["a@example.com>\r\nBcc: x@evil.example", "a b@example.com", "<a@example.com>",
                                     "a@example.com, b@example.com", "no-at-sign"])
def test_an_address_that_a_header_cannot_carry_is_refused_not_sent(address):
    with pytest.raises(ValueError, match="not an address"):
        mailbox("Reader", address)


# ── through the real entry points ────────────────────────────────────────────


def hostile_feed(title: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Hub</title>'
        "<link>https://hub.example/</link><description>d</description>"
        f"<item><title>{escape(title)}</title><link>https://hub.example/2026/vote</link>"
        "<guid>vote</guid>"
        "<pubDate>Sun, 06 Dec 2026 09:00:00 GMT</pubDate>"
        "<description>Polls open at eight. Results tonight.</description></item>"
        "<item><title>Council approves the library budget</title><link>https://hub.example/2026/library</link>"
        "<guid>library</guid><pubDate>Sun, 06 Dec 2026 08:00:00 GMT</pubDate>"
        "<description>The vote was 7 to 2. Work starts in May.</description></item>"
        "</channel></rss>"
    ).encode()


@pytest.mark.parametrize("attack", [INJECTION, BODY_INJECTION])
def test_a_hostile_feed_title_and_reader_name_reach_every_inbox_as_text_not_headers(
        site, smtp_server, feed_server, attack):
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        # The public form, unauthenticated: the name goes into the confirmation mail's To.
        assert submit(client, "/subscribe", {"email": "reader@example.org", "name": attack,
                                             "newsletter": "daily"}).status_code == 200
        [confirmation] = smtp_server.messages
        message = parsed(confirmation.data)
        assert_headers_are_ours(message, {"From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted",
                                          "MIME-Version", "Content-Type"})
        raw = email.message_from_bytes(confirmation.data, policy=email.policy.compat32)
        assert display_name(raw["To"]) == one_line(attack)
        [link] = re.findall(r"http://testserver(/confirm/\S+)", message.get_body(("plain",)).get_content())
        assert submit(client, link).status_code == 200

    with transaction(site.Session) as session:
        feeds.add_feed(session, feed_server.serve("/feed", hostile_feed(attack)))
        lists.get_newsletter(session, "daily").next_run_at = utcnow() - timedelta(seconds=1)
    tasks.poll_feeds()  # polls, then ticks: the edition is cut and sent to the SMTP server

    [digest] = smtp_server.messages[1:]
    message = parsed(digest.data)
    assert_headers_are_ours(message, TEMPLATE_HEADERS)
    assert str(message["Subject"]).startswith(one_line(attack))
    assert message["From"].addresses[0].addr_spec == "news@example.com"


def assert_headers_are_ours(message, expected: set[str]) -> None:
    assert set(message.keys()) == expected
    assert all(len(message.get_all(name)) == 1 for name in expected)
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


def test_a_from_name_stored_with_a_line_break_before_it_was_refused_still_sends_cleanly(
        site, smtp_server, sample_feed):
    with transaction(site.Session) as session:
        newsletter = lists.get_newsletter(session, "daily")
        newsletter.from_name = "Daily\r\nBcc: everyone@evil.example"  # as a row from before the check may be
        consent.subscribe(session, "reader@example.org", [newsletter.id], confirmed=True)
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        cut = sending.cut(session, newsletter, site.settings)
        edition_id, batches = cut.edition.id, cut.batches
    for edition, lo, hi in batches:
        tasks.deliver_batch(edition, lo, hi)

    [digest] = smtp_server.messages
    assert parsed(digest.data)["From"].addresses[0].display_name == "Daily Bcc: everyone@evil.example"
    assert "Bcc" not in parsed(digest.data)
    tasks.tick()  # closes finished editions
    with transaction(site.Session) as session:
        assert session.get(Edition, edition_id).status == "sent"


@pytest.mark.parametrize("field", ["--name", "--from-name"])
def test_the_cli_refuses_a_newsletter_name_with_a_line_break_and_says_what_to_do(tmp_path, field):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s"}
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    args = ["newsletter", "add", "daily", "--name", "Daily", "--from-address", "news@example.com",
            field, "Daily\r\nReply-To: payments@evil.example"]

    result = runner.invoke(main, args, env=env)

    assert result.exit_code != 0
    assert "must be one line of text" in str(result.exception) + result.output
    assert json.loads(runner.invoke(main, ["newsletter", "list", "--json"], env=env).stdout) == []


def test_the_desk_api_refuses_a_from_name_with_a_line_break(site):
    add_editor(site)
    with desk_client() as client:
        token = api_headers(site)
        refused = client.patch("/api/v1/newsletters/daily", headers=token,
                               json={"from_name": "Daily\nReply-To: payments@evil.example"})
        made = client.post("/api/v1/newsletters", headers=token, json=dict(
            slug="alerts", name="Alerts\r\nBcc: all@evil.example", from_address="alerts@example.com"))

    assert refused.status_code == 422 and "must be one line of text" in refused.json()["error"]
    assert made.status_code == 422 and "type it again on one line" in made.json()["error"]
    with transaction(site.Session) as session:
        assert lists.get_newsletter(session, "daily").from_name == "Daily"
