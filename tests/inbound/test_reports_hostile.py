"""inbound.reports against messages built to hurt it: anyone can send us mail. Each is refused or left alone
with a reason, quickly, and never raises (the MTA would retry it, or the IMAP poll stall on it)."""

from __future__ import annotations

import pytest

from syndicate import tokens
from syndicate.inbound import reports

KEY = "inbound-hostile-secret-key-0123456789"
RETURN_PATH = tokens.return_path(KEY, "d", 4711, "news.example.org")


def dsn(to: str, status_part: bytes = b"", recipient: bytes = b"real.person@example.com") -> bytes:
    status_part = status_part or (b"Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; " + recipient +
                                  b"\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\n")
    return (b"From: MAILER-DAEMON@mx.example.net\nTo: " + to.encode() + b"\nSubject: Undelivered Mail\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
            b"--b\nContent-Type: text/plain\n\nSorry.\n"
            b"--b\nContent-Type: message/delivery-status\n\n" + status_part + b"\n--b--\n")


def test_a_message_past_the_size_limit_is_refused_unread():
    raw = b"From: a@example.com\r\nSubject: x\r\n\r\n" + b"x" * (50 * 1024 * 1024)
    report = reports.read(raw, KEY)
    del raw

    assert report.kind == "refused"
    assert f"more than {reports.MAX_BYTES:,} bytes: more than a report needs" in report.why


def test_a_mime_bomb_of_thousands_of_parts_is_refused():
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(20_000))
    report = reports.read(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n", KEY)

    assert report.kind == "refused"
    assert "MIME boundary lines" in report.why


def test_a_hundred_parts_under_the_boundary_count_are_still_counted_after_parsing():
    parts = b"".join(b"--b\nContent-Type: text/plain\n\nx\n" for _ in range(100))
    report = reports.read(b"Content-Type: multipart/mixed; boundary=b\n\n" + parts + b"--b--\n", KEY)

    assert report.kind == "refused"
    assert "more than 64 MIME parts" in report.why


@pytest.mark.parametrize("depth", [10, 400, 2_000])
def test_deeply_nested_multiparts_are_refused(depth):
    nested = b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(depth))
    report = reports.read(b"Content-Type: multipart/mixed; boundary=b0\n\n" + nested + b"x\n", KEY)

    assert report.kind == "refused"
    assert "nested more than 6 deep" in report.why or "MIME boundary lines" in report.why


def test_messages_nested_in_messages_past_the_parser_recursion_are_refused():
    report = reports.read(b"Content-Type: message/rfc822\n\n" * 2_000 + b"x\n", KEY)

    assert report.kind == "refused"
    assert "nested too deep" in report.why


@pytest.mark.parametrize(("raw", "sender", "subject"), [
    (b"From: J\xfcrgen <j@example.de>\nSubject: Gr\xfc\xdfe\nContent-Type: text/plain; charset=latin-1\n\n"
     b"Ich bin nicht im B\xfcro.\n", "J\ufffdrgen <j@example.de>", "Gr\ufffd\ufffde"),
    (b"From: \xff\xfe <x@example.com>\nSubject: \xc3\x28 \xed\xa0\x80\n\n\xff\xfe\xfd\n",
     "\ufffd\ufffd <x@example.com>", "\ufffd( \ufffd\ufffd\ufffd"),
    ("From: Jürgen <j@example.de>\nSubject: Grüße\n\nhallo\n".encode(), "Jürgen <j@example.de>", "Grüße"),
], ids=["latin-1", "invalid-utf-8", "raw-utf-8"])
def test_raw_8bit_headers_are_read_as_utf8_with_what_is_not_replaced(raw, sender, subject):
    report = reports.read(raw, KEY)

    assert report.kind == "ignored"
    assert (report.sender, report.subject) == (sender, subject)


def test_a_bounce_with_an_8bit_from_is_still_read_by_the_detectors():
    """The email package wraps an 8-bit header in an object flufl.bounce's detectors can't read."""
    raw = (b"From: MAILER-DAEMON@yahoo.com (Mail \xe9)\nTo: " + RETURN_PATH.encode() + b"\nSubject: Failure Notice\n\n"
           b"Sorry, we were unable to deliver your message to the following address.\n\n"
           b"<gone@yahoo.com>:\n554: delivery error: dd This user doesn't have a yahoo.com account\n")
    report = reports.read(raw, KEY)

    assert report.kind == "bounce"
    assert report.mails == [("d", 4711)]
    assert report.failures[0].address == "gone@yahoo.com"


@pytest.mark.parametrize(("subject", "read"), [
    (b"=?utf-8?B?!!!notbase64?=", "=?utf-8?B?!!!notbase64?="),  # kept as written
    (b"=?x-unknown?Q?abc?=", "=?x-unknown?Q?abc?="),
    (b"=?idna?Q?=FF=FE?=", "=?idna?Q?=FF=FE?="),
    (b"=?utf-8?Q?=ZZ=?= =?utf-8?B?w6k?=", "=ZZ=é"),  # the stdlib reads a bad quoted-printable escape as written
])
def test_broken_encoded_words_are_read_without_an_error(subject, read):
    report = reports.read(b"From: x@example.com\nSubject: " + subject + b"\n\nhello\n", KEY)

    assert report.kind == "ignored"
    assert report.subject == read


def test_a_header_of_a_hundred_thousand_encoded_words_is_read_in_its_first_part():
    """decode_header is quadratic: 130,000 words took 35 s before the header was cut."""
    report = reports.read(b"Subject: " + b"=?utf-8?q?a?= " * 130_000 + b"\n\nx", KEY)

    assert report.kind == "ignored"
    assert report.subject.startswith("aaaa")


def test_a_part_in_a_charset_that_cannot_replace_is_refused():
    raw = (b"From: MAILER-DAEMON@mx.example.net\nX-Failed-Recipients: a@example.com\nSubject: Mail delivery failed\n"
           b"Content-Type: text/plain; charset=idna\n\n\xff\xfe 550 5.1.1 no\n")
    report = reports.read(raw, KEY)

    assert report.kind == "refused"
    assert "the email package could not read it" in report.why


@pytest.mark.parametrize("raw", [b"", b"From: x@example.com\nSubject: hello\nTo: z@example.com\n",
                                 bytes(range(256)) * 10])
def test_an_empty_or_bodiless_or_binary_message_is_left_alone(raw):
    report = reports.read(raw, KEY)

    assert report.kind == "ignored"
    assert report.why == "not a bounce report, complaint or unsubscribe: kept for the operator"


def test_a_delivery_report_whose_status_part_is_garbage_names_no_failure():
    report = reports.read(dsn(RETURN_PATH, b"\xff\xfe garbage ::: \n\n:::\n\x00\x01"), KEY)

    assert report.kind == "ignored"
    assert "names no recipient's fate" in report.why
    assert report.failures == []


def test_a_delivery_report_with_a_real_address_but_no_token_names_no_mail():
    """What a report says about an address is not believed: without our signed return path it names no one
    (inbound.handling then does nothing)."""
    report = reports.read(dsn("bounces@news.example.org"), KEY)

    assert report.kind == "bounce"
    assert report.failures[0].address == "real.person@example.com"
    assert (report.mails, report.unsubscribe_tokens) == ([], [])


def test_a_return_path_of_the_right_shape_with_a_wrong_mark_names_no_mail():
    local, _, domain = RETURN_PATH.partition("@")
    forged = f"{local[:-16]}{'a' * 16}@{domain}"
    assert forged != RETURN_PATH

    assert reports.read(dsn(forged), KEY).mails == []


def test_a_return_path_marked_for_a_kind_we_never_send_names_no_mail():
    mark = tokens._return_path_mark(KEY, "x", 5)  # a correct mark: only the kind is refused

    assert reports.read(dsn(f"bounces+x5-{mark}@news.example.org"), KEY).mails == []
    assert reports.read(dsn(RETURN_PATH), KEY).mails == [("d", 4711)]
