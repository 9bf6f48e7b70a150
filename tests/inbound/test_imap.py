"""`syndicate inbound poll`'s engine against a real IMAP server (pymap, on 127.0.0.1, with a certificate of
a test CA): each message is handed over and only then leaves the folder; a failed handling leaves it for the
next poll; a message too big to be a report is refused by its head; and every way of getting the mailbox
settings wrong ends in an error that says what to check, without the password."""

from __future__ import annotations

import dataclasses
import logging
import socket
from urllib.parse import quote

import pytest
from sqlalchemy import select

from conftest import ImapServer, postfix_dsn
from syndicate import tokens
from syndicate.config import parse_imap_url
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.errors import TransportError
from syndicate.inbound import handling, reports
from syndicate.inbound.imap import PollStopped, poll
from syndicate.ingest import feeds
from syndicate.models import Delivery, InboundMessage, Subscriber, SubscriberEvent
from syndicate.newsletters import lists
from syndicate.subscribers import consent


def mail(n: int, body: bytes = b"Thanks for your mail.\r\n") -> bytes:
    return (b"From: someone@example.org\r\nTo: bounces@example.com\r\nSubject: message %d\r\n"
            b"Message-ID: <%d@example.org>\r\n\r\n" % (n, n)) + body


class Recorder:
    """A handler that keeps what it was handed; `fail_on`: the message numbers it raises for."""

    def __init__(self, fail_on: tuple[int, ...] = ()):
        self.received: list[bytes] = []
        self.fail_on = fail_on

    def __call__(self, raw: bytes) -> str:
        if any(b"Subject: message %d\r\n" % n in raw for n in self.fail_on):
            raise RuntimeError("(psycopg.OperationalError) connection to server at 127.0.0.1 failed")
        self.received.append(raw)
        return "ignored"


def trusted(server: ImapServer, imap, handle, **options):
    return poll(imap, handle, ssl_context=server.client_context(), **options)


def commands(caplog) -> list[str]:
    """What clients sent the server, line by line, from its debug log."""
    return [str(r.args[1]) for r in caplog.records if r.name == "pymap.imap" and r.msg.startswith("%s -->|")]


@pytest.fixture
def transcript(caplog):
    caplog.set_level(logging.DEBUG, logger="pymap.imap")
    return lambda: commands(caplog)


# ── what a poll does with the mail ───────────────────────────────────────────


@pytest.mark.parametrize("kind", ["tls", "starttls"])
def test_it_hands_over_each_message_oldest_first_then_moves_it_to_the_done_folder(imap_server, kind):
    imap = imap_server.account(kind, done="Processed")
    imap_server.append(imap, mail(1), mail(2), mail(3))
    handler = Recorder()

    result = trusted(imap_server, imap, handler)

    assert handler.received == [mail(1), mail(2), mail(3)]
    assert (result.handled, dict(result.outcomes), result.too_big, result.left) == (3, {"ignored": 3}, 0, 0)
    assert result.summary == "3 handled from INBOX (3 ignored), 0 left"
    assert imap_server.messages(imap) == []
    assert imap_server.messages(imap, "Processed") == [mail(1), mail(2), mail(3)]


def test_without_a_done_folder_handled_mail_is_deleted(imap_server):
    imap = imap_server.account("starttls")
    imap_server.append(imap, mail(1), mail(2))

    result = trusted(imap_server, imap, Recorder())

    assert (result.handled, result.left) == (2, 0)
    assert imap_server.messages(imap) == []


@pytest.mark.parametrize("done", ["Processed", None])
def test_a_server_without_move_or_uidplus_gets_copy_store_and_expunge(imap_server, done, transcript):
    imap = imap_server.account("old", done=done)  # plain: allowed to this machine only
    imap_server.append(imap, mail(1), mail(2))

    result = poll(imap, Recorder())

    assert result.handled == 2
    assert imap_server.messages(imap) == []
    assert imap_server.messages(imap, "Processed") == ([mail(1), mail(2)] if done else [])
    sent = " ".join(transcript()).upper()
    assert "MOVE" not in sent and "UID EXPUNGE" not in sent  # the server would have answered BAD


def test_a_missing_done_folder_is_created_and_names_are_written_as_imap_writes_them(imap_server):
    imap = imap_server.account(password="pässwörd ✓", done="Erledigt & gelöscht")  # non-ASCII: AUTHENTICATE
    imap_server.append(imap, mail(1))

    assert trusted(imap_server, imap, Recorder()).handled == 1

    # RFC 3501 5.1.3, by hand: "&" is "&-", "ö" (U+00F6) is "&APY-" in modified UTF-7
    assert imap_server.messages(imap, "Erledigt &- gel&APY-scht") == [mail(1)]


def test_at_most_limit_messages_are_handled_per_poll_oldest_first(imap_server):
    imap = imap_server.account(done="Processed")
    imap_server.append(imap, *(mail(n) for n in range(1, 6)))

    result = trusted(imap_server, imap, Recorder(), limit=2)

    assert (result.handled, result.left) == (2, 3)
    assert imap_server.messages(imap, "Processed") == [mail(1), mail(2)]
    assert imap_server.messages(imap) == [mail(3), mail(4), mail(5)]


def test_an_empty_mailbox_is_a_poll_that_did_nothing(imap_server):
    imap = imap_server.account(done="Processed")

    result = trusted(imap_server, imap, Recorder())

    assert result.summary == "0 handled from INBOX, 0 left"


def test_a_message_whose_handling_fails_stays_and_the_next_poll_handles_it(imap_server):
    imap = imap_server.account(done="Processed")
    imap_server.append(imap, mail(1), mail(2), mail(3))

    with pytest.raises(PollStopped) as stopped:
        trusted(imap_server, imap, Recorder(fail_on=(2,)))

    assert "it stays there, and the next poll reads it again" in str(stopped.value)
    assert "OperationalError" in str(stopped.value)
    assert (stopped.value.result.handled, stopped.value.result.left) == (1, 2)
    assert imap_server.messages(imap) == [mail(2), mail(3)]  # untouched: the poll stopped at the failure
    assert imap_server.messages(imap, "Processed") == [mail(1)]

    handler = Recorder()
    assert trusted(imap_server, imap, handler).handled == 2
    assert handler.received == [mail(2), mail(3)]
    assert imap_server.messages(imap) == []


def test_a_message_too_big_to_be_a_report_is_refused_by_its_head_without_being_downloaded(imap_server, transcript):
    imap = imap_server.account(done="Processed")
    line = b"x" * 998 + b"\r\n"
    big = mail(1, line * (3 * 1024 * 1024 // len(line)))  # 3 MB: a report quotes one mail, not this
    imap_server.append(imap, big, mail(2))
    handed: list[bytes] = []

    def handle(raw: bytes) -> str:
        handed.append(raw)
        return reports.read(raw, "secret").kind

    result = trusted(imap_server, imap, handle)

    assert handed == [big[: reports.MAX_BYTES + 1], mail(2)]  # enough to be refused by size, its head kept
    assert (dict(result.outcomes), result.too_big) == ({"refused": 1, "ignored": 1}, 1)
    assert "1 too big to read" in result.summary
    assert imap_server.messages(imap, "Processed") == [big, mail(2)]  # out of the way of the next poll
    fetches = [c for c in transcript() if "FETCH" in c.upper() and "BODY" in c.upper()]
    assert f"BODY.PEEK[]<0.{reports.MAX_BYTES + 1}>" in fetches[0]
    assert "BODY.PEEK[])" in fetches[1]


# ── settings that are wrong, and servers that can't be trusted ───────────────


def test_a_wrong_password_is_a_clear_error_that_does_not_repeat_it(imap_server):
    imap = dataclasses.replace(imap_server.account(), password="n0t-the-Passw0rd")

    with pytest.raises(TransportError) as failed:
        trusted(imap_server, imap, Recorder())

    message = str(failed.value)
    assert f"refused the login of {imap.username!r}" in message
    assert "check the user and password in SYNDICATE_INBOUND_IMAP_URL" in message
    assert failed.value.permanent
    assert "n0t-the-Passw0rd" not in message + repr(failed.value) + str(failed.value.__cause__)


def test_a_folder_that_does_not_exist_is_a_clear_error(imap_server):
    imap = imap_server.account(folder="Bounces")

    with pytest.raises(TransportError, match=r"can't open the folder 'Bounces' of .*check the folder in "
                                             r"SYNDICATE_INBOUND_IMAP_URL"):
        trusted(imap_server, imap, Recorder())


@pytest.mark.parametrize("kind", ["tls", "starttls"])
def test_a_certificate_no_trusted_ca_signed_is_refused_before_the_password_is_sent(imap_server, kind, transcript):
    imap = imap_server.account(kind)
    imap_server.append(imap, mail(1))
    before = len(transcript())

    with pytest.raises(TransportError) as failed:
        poll(imap, Recorder())  # the default context: the system's CAs, which never signed the test CA's

    assert "is not trusted" in str(failed.value) and "SSL_CERT_FILE" in str(failed.value)
    assert not any("LOGIN" in c.upper() or "AUTHENTICATE" in c.upper() for c in transcript()[before:])
    assert imap_server.messages(imap) == [mail(1)]


def test_starttls_asked_of_a_server_that_does_not_offer_it_sends_no_password(imap_server, transcript):
    imap = dataclasses.replace(imap_server.account("none"), security="starttls")

    with pytest.raises(TransportError, match="does not offer STARTTLS, so we won't send it the password"):
        trusted(imap_server, imap, Recorder())

    assert not any("LOGIN" in c.upper() for c in transcript())


def test_tls_to_a_port_that_speaks_plain_imap_says_to_check_the_port(imap_server):
    imap = dataclasses.replace(imap_server.account("none"), security="tls")

    with pytest.raises(TransportError, match=r"TLS with .* failed .*check the port"):
        trusted(imap_server, imap, Recorder())


def test_a_server_that_is_down_is_a_temporary_error(imap_server, closed_port):
    imap = dataclasses.replace(imap_server.account(), port=closed_port)

    with pytest.raises(TransportError, match="cannot reach the IMAP server 127.0.0.1") as failed:
        trusted(imap_server, imap, Recorder())

    assert not failed.value.permanent


def test_a_server_that_never_answers_is_given_up_on_at_the_timeout(imap_server):
    with socket.socket() as silent:  # accepts connections (the kernel does), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        imap = dataclasses.replace(imap_server.account(), port=silent.getsockname()[1], timeout=0.2)

        with pytest.raises(TransportError, match=r"did not answer within 0.2 s while connecting") as failed:
            trusted(imap_server, imap, Recorder())

    assert not failed.value.permanent


def test_the_mailbox_named_by_the_url_is_the_one_polled(imap_server):
    account = imap_server.account(done="Processed")
    url = (f"imaps://{quote(account.username, safe='')}:{quote(account.password, safe='')}"
           f"@127.0.0.1:{account.port}/INBOX?done=Processed&timeout=5")
    imap = parse_imap_url(url)
    imap_server.append(imap, mail(1))

    assert trusted(imap_server, imap, Recorder()).handled == 1
    assert imap_server.messages(imap, "Processed") == [mail(1)]


# ── through the real handler, into the database ──────────────────────────────


ORIGINAL = b"From: Daily <news@example.com>\r\nTo: ana@example.com\r\nSubject: Harbour reopens after repairs\r\n\r\n"


def test_a_bounce_report_suppresses_its_reader_and_an_oversized_mail_is_kept_as_refused(imap_server, svc, sample_feed):
    settings = svc.settings
    with transaction(svc.Session) as session:
        daily = lists.add_newsletter(session, max_age_hours=0,
                                     slug="daily", name="Daily", from_address="news@example.com")
        consent.subscribe(session, "ana@example.com", [daily.id], confirmed=True)
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        edition = sending.cut(session, daily, settings).edition
        delivery_id = session.scalar(select(Delivery.id).where(Delivery.edition_id == edition.id))
    return_path = tokens.return_path(settings.secret_key, "d", delivery_id, "example.com")
    imap = imap_server.account(done="Processed")
    big = mail(1, (b"x" * 998 + b"\r\n") * 3000)  # 3 MB
    imap_server.append(imap, big, postfix_dsn(return_path, "ana@example.com", ORIGINAL))

    def handle(raw: bytes) -> str:
        with transaction(svc.Session) as session:
            return handling.handle(session, settings, raw, via="imap").outcome

    result = trusted(imap_server, imap, handle)

    assert dict(result.outcomes) == {"refused": 1, "bounce": 1}
    with transaction(svc.Session) as session:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == "ana@example.com"))
        assert subscriber.status == "bounced"
        event = session.scalar(select(SubscriberEvent).where(SubscriberEvent.subscriber_id == subscriber.id,
                                                             SubscriberEvent.kind == "bounce"))
        assert (event.source, event.delivery_id) == ("inbound mail", delivery_id)
        assert "550 5.1.1" in event.detail
        refused, bounce = session.scalars(select(InboundMessage).order_by(InboundMessage.id))
        assert (bounce.via, bounce.outcome, bounce.delivery_id) == ("imap", "bounce", delivery_id)
        assert (refused.via, refused.outcome, refused.subscriber_id) == ("imap", "refused", None)
        assert refused.raw == big[: handling.KEEP_BYTES]  # its head, for the operator

    # The same report again (a poll cut off between handling and moving it): nothing changes.
    imap_server.append(imap, postfix_dsn(return_path, "ana@example.com", ORIGINAL))
    assert dict(trusted(imap_server, imap, handle).outcomes) == {"duplicate": 1}
    assert len(imap_server.messages(imap, "Processed")) == 3
