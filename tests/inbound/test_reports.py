"""inbound.reports against the mail servers' own shapes: tests/inbound/samples/*.mail, written as Postfix, Exim,
qmail, Gmail, Outlook, Yahoo, Thunderbird and Apple Mail send them, with placeholders for what we signed.

Each sample is read as it would come back to us, and the report says what it is, what the server said, and
which of our mails it is about — found only through our signed return path and unsubscribe token.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syndicate import tokens
from syndicate.inbound import reports

SAMPLES = Path(__file__).parent / "samples"
KEY = "inbound-corpus-secret-key-0123456789"
OTHER_KEY = "another-installation-secret-key-9876"
DELIVERY = 4711
SUBSCRIBER, NEWSLETTER = 42, 7
RECIPIENT = "ann.reader@example.net"
MESSAGE_ID = "<4711.12.a1b2c3d4e5@news.example.org>"


def sample(name: str, *, key: str = KEY, return_path: str | None = None) -> bytes:
    """A sample with our signed values in it; str.replace on the bytes, since a MIME body may hold braces."""
    raw = (SAMPLES / name).read_bytes()
    assert b"{" in raw or name.startswith("human"), f"{name} has no placeholder: it would test nothing of ours"
    return_path = return_path or tokens.return_path(key, "d", DELIVERY, "news.example.org")
    return (raw.replace(b"{RETURN_PATH}", return_path.encode())
            .replace(b"{RECIPIENT}", RECIPIENT.encode())
            .replace(b"{MESSAGE_ID}", MESSAGE_ID.encode())
            .replace(b"{UNSUBSCRIBE_TOKEN}", tokens.unsubscribe_token(key, SUBSCRIBER, NEWSLETTER).encode()))


def token() -> str:
    return tokens.unsubscribe_token(KEY, SUBSCRIBER, NEWSLETTER)


def test_every_sample_is_tested():
    tested = {name for name, *_ in BOUNCES} | {name for name, *_ in IGNORED} | set(OTHERS)
    assert {path.name for path in SAMPLES.glob("*.mail")} == tested


# ── bounce reports ───────────────────────────────────────────────────────────

# sample, kind, form, status, words the reply must carry, whether it quotes our mail (List-Unsubscribe, Message-ID)
BOUNCES = [
    ("postfix-user-unknown.mail", "bounce", "RFC 3464", "5.1.1",
     ["550 5.1.1", "User unknown in virtual mailbox table"], True),
    # These two were not written by hand: Postfix 3.7 sent them here (relaying an edition to an MX that refused
    # one reader for good and another for now, with maximal_queue_lifetime = 0), our values made placeholders.
    ("postfix-3.7-captured-user-unknown.mail", "bounce", "RFC 3464", "5.1.1",
     ["550 5.1.1", "User unknown in virtual mailbox table"], True),
    ("postfix-3.7-captured-expired-mailbox-full.mail", "soft_bounce", "RFC 3464", "4.2.2",
     ["452 4.2.2", "Mailbox full, try again later"], True),
    ("postfix-gave-up-temporary.mail", "soft_bounce", "RFC 3464", "4.4.7",
     ["421 4.7.0", "Service not available"], True),
    ("postfix-mailbox-full.mail", "soft_bounce", "RFC 3464", "5.2.2", ["552 5.2.2", "Mailbox full"], True),
    ("exim-plain.mail", "bounce", "Exim", "5.1.1",
     ["550-5.1.1 The email account that you tried to reach does not exist",
      "double-checking the recipient's email address", "550 5.1.1"], False),
    # Exim's report says Status: 5.0.0 for every failure; the server's own 5.1.1 is the one kept.
    ("exim-report.mail", "bounce", "RFC 3464", "5.1.1",
     ["550-5.1.1 The email account that you tried to reach does not exist", "unnecessary spaces"], True),
    ("gmail-failure.mail", "bounce", "RFC 3464", "5.1.1",
     ["550-5.1.1 The email account that you tried to reach does not exist", "NoSuchUser"], True),
    ("outlook-ndr.mail", "bounce", "RFC 3464", "5.1.10",
     ["550 5.1.10 RESOLVER.ADR.RecipientNotFound", "not found by SMTP address lookup"], True),
    # Yahoo's own plain-text "Failure Notice", read by flufl.bounce's Yahoo detector; its reply has no status.
    ("yahoo-failure-notice.mail", "bounce", "bounce from mailer-daemon@yahoo.com", None,
     ["554: delivery error", "doesn't have a yahoo.com account"], False),
    ("qmail.mail", "bounce", "bounce from mailer-daemon@mx.example.info", "5.1.1",
     ["Sorry, no mailbox here by that name. (#5.1.1)"], False),
]


@pytest.mark.parametrize(("name", "kind", "form", "status", "words", "quotes"), BOUNCES,
                         ids=[b[0] for b in BOUNCES])
def test_it_reads_a_bounce_report_as_the_server_sent_it(name, kind, form, status, words, quotes):
    report = reports.read(sample(name), KEY)

    assert (report.kind, report.form) == (kind, form), report.why
    assert report.mails == [("d", DELIVERY)]
    [failure] = report.failures
    assert failure.address == RECIPIENT
    assert failure.status == status
    assert failure.permanent is (kind == "bounce")
    for word in words:
        assert word in failure.reply
    assert failure.reply in report.why
    if quotes:
        assert report.unsubscribe_tokens == [token()]
        assert report.message_ids == [MESSAGE_ID]


def test_a_prose_bounce_reply_stops_at_the_copy_of_our_mail():
    """Exim's words end where its copy of our mail begins: a figure in a story ("500 readers") is no reply."""
    raw = sample("exim-plain.mail").replace(b"    550-5.1.1 The email account", b"    Unrouteable: The email account")
    raw = raw.replace(b"550-5.1.1 ", b"").replace(b"550 5.1.1  ", b"")
    raw = raw.replace(b"Seven stories this week.", b"250 readers said 550 5.7.1 was the worst code of the year.")

    report = reports.read(raw, KEY)

    assert report.kind == "bounce"
    assert "250 readers" not in report.failures[0].reply
    assert report.failures[0].reply == "failed"


def test_a_mailbox_full_reported_by_exim_as_5_0_0_is_a_soft_bounce():
    raw = sample("exim-report.mail").replace(b"550-5.1.1", b"552-5.2.2").replace(b"550 5.1.1", b"552 5.2.2")

    report = reports.read(raw, KEY)

    assert report.kind == "soft_bounce"
    assert report.failures[0].status == "5.2.2"


def test_a_delivery_status_without_the_message_block_loses_no_recipient():
    """Some servers leave out the per-message block: each recipient's block is found by its Action field."""
    raw = sample("postfix-user-unknown.mail")
    head, _, rest = raw.partition(b"Reporting-MTA: dns; mail.news.example.org\n")
    _, _, rest = rest.partition(b"\n\n")
    second = b"Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.1.2\n\n"

    report = reports.read(head + second + rest, KEY)

    assert [(f.address, f.status) for f in report.failures] == [("bob@example.net", "5.1.2"), (RECIPIENT, "5.1.1")]


def test_a_utf8_delivery_status_is_read_too():
    """Postfix reports on SMTPUTF8 mail with message/global-delivery-status (RFC 6533)."""
    raw = sample("postfix-user-unknown.mail").replace(b"Content-Type: message/delivery-status",
                                                       b"Content-Type: message/global-delivery-status")
    raw = raw.replace(f"Original-Recipient: rfc822;{RECIPIENT}".encode(),
                      "Original-Recipient: utf-8;jürgen@example.net".encode())

    report = reports.read(raw, KEY)

    assert report.kind == "bounce"
    assert report.failures[0].address == "jürgen@example.net"
    assert report.failures[0].status == "5.1.1"


def test_a_delay_warning_is_not_a_soft_bounce():
    report = reports.read(sample("postfix-delayed.mail"), KEY)

    assert report.kind == "ignored"
    assert report.failures == []
    assert "delay warning" in report.why
    assert report.mails == [("d", DELIVERY)]  # it is about our mail; there is just nothing to do yet


@pytest.mark.parametrize("name", [b[0] for b in BOUNCES])
def test_a_return_path_signed_with_another_key_names_no_mail(name):
    """A forger who knows our return path's shape but not our key: the report is read, and names no one."""
    report = reports.read(sample(name, key=OTHER_KEY), KEY)

    assert report.mails == []
    assert report.unsubscribe_tokens == []


# ── complaints ───────────────────────────────────────────────────────────────


def test_a_yahoo_complaint_names_the_mail_by_its_original_mail_from():
    report = reports.read(sample("arf-abuse-yahoo.mail"), KEY)

    assert (report.kind, report.form) == ("complaint", "ARF")
    assert report.mails == [("d", DELIVERY)]
    assert report.unsubscribe_tokens == [token()]
    assert report.message_ids == [MESSAGE_ID]
    assert "feedback@arf.mail.yahoo.com" in report.why


def test_a_yahoo_complaint_without_original_mail_from_still_names_the_mail_by_the_quoted_return_path():
    raw = sample("arf-abuse-yahoo.mail").replace(b"Original-Mail-From:", b"X-Removed:")

    assert reports.read(raw, KEY).mails == [("d", DELIVERY)]


def test_a_redacted_complaint_is_found_through_the_unsubscribe_token_alone():
    """Microsoft's (like AOL's) report hides the recipient and has no Original-Mail-From or Return-Path."""
    report = reports.read(sample("arf-abuse-redacted.mail"), KEY)

    assert (report.kind, report.form) == ("complaint", "ARF")
    assert report.mails == []
    assert report.unsubscribe_tokens == [token()]
    assert report.message_ids == [MESSAGE_ID]  # only a pointer, believed once the token said who


def test_a_complaint_whose_token_was_signed_with_another_key_names_no_one():
    report = reports.read(sample("arf-abuse-redacted.mail", key=OTHER_KEY), KEY)

    assert report.kind == "complaint"
    assert (report.mails, report.unsubscribe_tokens) == ([], [])


# ── what is read and left alone ──────────────────────────────────────────────

# sample, form, words of why
IGNORED = [
    ("arf-auth-failure.mail", "ARF", "'auth-failure'"),
    ("autoreply-rfc3834.mail", "auto-reply", "automatic reply"),
    ("vacation-x-autoreply.mail", "auto-reply", "automatic reply"),
    ("exchange-oof.mail", "auto-reply", "automatic reply"),
    ("abwesenheitsnotiz.mail", "auto-reply", "automatic reply"),
    ("mdn-read-receipt.mail", "MDN", "read receipt"),
    ("human-reply.mail", "unrecognised", "kept for the operator"),
]


@pytest.mark.parametrize(("name", "form", "words"), IGNORED, ids=[i[0] for i in IGNORED])
def test_it_leaves_alone_what_is_no_bounce_complaint_or_unsubscribe(name, form, words):
    report = reports.read(sample(name), KEY)

    assert (report.kind, report.form) == ("ignored", form), report.why
    assert words in report.why
    assert report.failures == []
    assert not report.acted_on


def test_an_auto_reply_keeps_who_sent_it_and_its_subject_for_the_operator():
    report = reports.read(sample("abwesenheitsnotiz.mail"), KEY)

    assert report.sender == f"Jürgen Müller <{RECIPIENT}>"
    assert report.subject == "Abwesenheitsnotiz: The Weekly: seven stories for 7 December"


# ── unsubscribe by mail ──────────────────────────────────────────────────────

OTHERS = ["unsubscribe-gmail.mail", "unsubscribe-apple-mail.mail"] + [
    "postfix-delayed.mail", "arf-abuse-yahoo.mail", "arf-abuse-redacted.mail"]


@pytest.mark.parametrize("name", ["unsubscribe-gmail.mail", "unsubscribe-apple-mail.mail"])
def test_an_unsubscribe_mail_carries_its_signed_token(name):
    report = reports.read(sample(name), KEY)

    assert (report.kind, report.form) == ("unsubscribe", "mailto")
    assert report.unsubscribe_tokens == [token()]
    assert report.mails == []


@pytest.mark.parametrize("name", ["unsubscribe-gmail.mail", "unsubscribe-apple-mail.mail"])
def test_an_unsubscribe_mail_with_a_token_signed_elsewhere_unsubscribes_no_one(name):
    report = reports.read(sample(name, key=OTHER_KEY), KEY)

    assert report.kind == "ignored"
    assert report.unsubscribe_tokens == []
    assert "without a valid token" in report.why
