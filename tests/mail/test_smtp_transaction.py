"""One mail transaction over a real SMTP server, with PIPELINING offered and without: the bytes
arrive intact, each refusal is reported for what it is, and the session stays usable after it."""

from __future__ import annotations

import smtplib
import socket
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import SmtpHandler, serve_smtp
from syndicate.config import parse_smtp_url
from syndicate.errors import ConnectionLost, TransportError
from syndicate.mail.smtp import _PLAIN_ADDRESS, SmtpTransport, _path, reply_text, wire
from syndicate.mail.transport import Outgoing


@dataclass
class Server(SmtpHandler):
    pipelining: bool = False
    mail_reply: str | None = None
    accept_data_anyway: set[str] = field(default_factory=set)  # refused at RCPT, yet DATA gets 354 (broken)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from, envelope.mail_options = address, mail_options
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.accept_data_anyway:
            envelope.rcpt_tos.append(address)
            return self.replies[address]
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        await super().handle_DATA(server, session, envelope)
        return "250 2.0.0 Ok: queued as 4ZxY7"


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def server(request):
    yield from serve_smtp(Server(pipelining=request.param))


@pytest.fixture
def transport(server):
    transport = SmtpTransport(parse_smtp_url(server.url))
    yield transport
    transport.close()


def message(to: str, body: str = "hello\r\n") -> Outgoing:
    data = f"From: a@example.com\r\nTo: {to}\r\nSubject: hi\r\n\r\n{body}".encode()
    return Outgoing("a@example.com", to, data, f"<{to}>")


def writes(connection) -> list[bytes]:
    """Record what the client writes to the socket, one entry per write."""
    sent, send = [], connection.smtp.send
    connection.smtp.send = lambda data: (sent.append(data), send(data))[1]
    return sent


def test_a_message_arrives_byte_for_byte_and_the_servers_own_reply_is_kept(server, transport):
    body = ".a line that starts with a dot\r\n..two\r\n.\r\nend\r\n"
    with transport.connect() as connection:
        sent = writes(connection)
        reply = connection.send(message("ana@example.com", body))
    assert reply == "250 2.0.0 Ok: queued as 4ZxY7"
    (received,) = server.messages
    assert received.recipients == ["ana@example.com"] and received.sender == "a@example.com"
    assert received.data == message("ana@example.com", body).data
    # MAIL, RCPT and DATA in one write when the server pipelines, one at a time when it does not.
    greeting, *transaction = sent
    assert greeting.startswith("ehlo") and len(transaction) == (2 if server.pipelining else 4)
    assert transaction[0].startswith("MAIL FROM:<a@example.com> SIZE=")


def test_bare_line_feeds_and_carriage_returns_go_out_as_crlf():
    assert wire(b"a\nb\rc\r\n.d") == b"a\r\nb\r\nc\r\n..d\r\n"
    assert wire(b".x\r\n") == b"..x\r\n"
    crlf = b"Subject: x\r\n\r\nbody\r\n"
    assert wire(crlf) is crlf


def test_a_refused_recipient_is_reported_and_the_next_one_goes_through(server, transport):
    server.replies["gone@example.com"] = "550 5.1.1 no such user"
    with transport.connect() as connection:
        with pytest.raises(TransportError) as refused:
            connection.send(message("gone@example.com"))
        assert connection.send(message("ben@example.com")).startswith("250")
        assert connection.healthy
    error = refused.value
    assert not isinstance(error, ConnectionLost)
    assert error.permanent and error.recipient and error.code == 550 and "no such user" in str(error)
    assert [m.recipients for m in server.messages] == [["ben@example.com"]]


def test_a_temporary_refusal_is_not_permanent(server, transport):
    server.replies["full@example.com"] = "452 4.2.2 mailbox full"
    with transport.connect() as connection, pytest.raises(TransportError) as refused:
        connection.send(message("full@example.com"))
    assert not refused.value.permanent and refused.value.code == 452


def test_a_refusal_of_the_message_itself_is_not_a_refusal_of_the_address(server, transport):
    server.data_reply = "554 5.7.1 message rejected as spam"
    with transport.connect() as connection:
        with pytest.raises(TransportError) as refused:
            connection.send(message("ana@example.com"))
        server.data_reply = None
        assert connection.send(message("ana@example.com")).startswith("250")
    assert refused.value.permanent and not refused.value.recipient and refused.value.code == 554


def test_a_421_throttle_is_a_lost_connection_with_its_code(server, transport):
    server.mail_reply = "421 4.7.0 too many messages, slow down"
    with transport.connect() as connection:
        with pytest.raises(ConnectionLost) as lost:
            connection.send(message("ana@example.com"))
        assert not connection.healthy
    assert lost.value.code == 421 and "slow down" in str(lost.value)
    assert server.messages == []


@pytest.mark.parametrize("where, reply, throttled", [
    ("rcpt", "450 4.7.28 rate limited, try again later", True),  # the recipient's domain: pacing.Domain
    ("rcpt", "421 4.7.0 Try again later", True),
    ("data", "451 4.7.1 too much mail from you, try later", True),  # after the message, one recipient
    ("rcpt", "452 4.2.2 mailbox full", False),  # a busy mailbox is no word about our pace
    ("rcpt", "421 4.3.2 shutting down", False),  # the server going away: the stream's
    ("mail", "421 4.7.0 too many messages, slow down", False),  # before any recipient: the stream's
    ("mail", "451 4.7.1 sender rate limited", False),
])
def test_a_rate_deferral_is_the_recipients_domains_only_in_reply_to_that_recipient(
        server, transport, where, reply, throttled):
    if where == "rcpt":
        server.replies["ana@gmail.example"] = reply
    elif where == "data":
        server.data_reply = reply
    else:
        server.mail_reply = reply
    with transport.connect() as connection, pytest.raises(TransportError) as refused:
        connection.send(message("ana@gmail.example"))
    assert refused.value.throttled is throttled and str(refused.value) == reply
    assert isinstance(refused.value, ConnectionLost) is reply.startswith("421")  # a 421 closes the session


def test_a_server_that_takes_data_without_a_recipient_gets_an_empty_message_only(server, transport):
    server.replies["gone@example.com"] = "550 5.1.1 no such user"
    server.accept_data_anyway.add("gone@example.com")
    with transport.connect() as connection:
        with pytest.raises(TransportError) as refused:
            connection.send(message("gone@example.com"))
        assert connection.send(message("ben@example.com")).startswith("250")
    assert refused.value.code == 550
    if server.pipelining:  # DATA was already on its way: it is ended at once, with nothing in it
        assert [m.data for m in server.messages] == [b"", message("ben@example.com").data]
    else:  # one at a time, DATA is never sent after a refused RCPT
        assert [m.data for m in server.messages] == [message("ben@example.com").data]


def test_a_connection_closed_mid_transaction_is_lost(server, transport):
    with transport.connect() as connection:
        connection.smtp.sock.shutdown(socket.SHUT_RDWR)
        with pytest.raises(ConnectionLost):
            connection.send(message("ana@example.com"))
        assert not connection.healthy



class HoldBack(Exception):
    pass


def test_before_end_runs_once_the_server_is_ready_for_the_message_and_can_still_hold_it_back(server, transport):
    seen = []
    with transport.connect() as connection:
        assert connection.send(message("ana@example.com"), before_end=lambda: seen.append(len(server.messages)))
    assert seen == [0] and len(server.messages) == 1  # called before the server had the message

    def hold_back():
        raise HoldBack

    with pytest.raises(HoldBack), transport.connect() as connection:
        connection.send(message("ben@example.com"), before_end=hold_back)
    assert not connection.healthy
    with transport.connect() as connection:  # a new connection: the server dropped the unfinished one
        connection.send(message("cleo@example.com"))
    assert [m.recipients for m in server.messages] == [["ana@example.com"], ["cleo@example.com"]]


def test_while_waiting_runs_once_the_message_is_ended_and_a_failure_there_drops_the_connection(server, transport):
    ended = []
    with transport.connect() as connection:
        reply = connection.send(message("ana@example.com"), while_waiting=lambda: ended.append(connection.announced))
        assert reply.startswith("250") and ended == [None]

    def broken():
        raise HoldBack

    with pytest.raises(HoldBack), transport.connect() as connection:
        connection.send(message("ben@example.com"), while_waiting=broken)
    assert not connection.healthy  # its reply was never read: the connection is not used again
    with transport.connect() as connection:
        connection.send(message("cleo@example.com"))
    # Ben's message was ended before the failure: the server has it, as it would any message whose reply is lost.
    assert sorted(m.recipients[0] for m in server.messages) == [f"{n}@example.com" for n in ("ana", "ben", "cleo")]


def test_the_outbox_holds_a_message_back_too(tmp_path):
    from syndicate.mail.outbox import OutboxTransport

    def hold_back():
        raise HoldBack

    with OutboxTransport(tmp_path).connect() as connection:
        with pytest.raises(HoldBack):
            connection.send(message("ben@example.com"), before_end=hold_back)
        connection.send(message("ana@example.com"), before_end=lambda: None)
    assert [p.name for p in tmp_path.iterdir()] == ["ana@example.com.eml"]


@given(st.from_regex(_PLAIN_ADDRESS, fullmatch=True) | st.sampled_from(
    ["reader@example.org", "o'brien+news@example.ie", "", "a b@example.org", "<x@example.org>", "Zoë <z@example.org>"]))
def test_mail_and_rcpt_quote_an_address_as_smtplib_would(address):
    """The fast path's brackets give what smtplib.quoteaddr gives, and anything else goes through it."""
    assert _path(address) == smtplib.quoteaddr(address)


def test_a_servers_reply_becomes_text_without_control_characters_but_its_line_breaks():
    """What a server says is kept, logged and shown: no NUL (PostgreSQL's text can't hold one), no escape
    sequence for a terminal; bytes that aren't UTF-8 become U+FFFD, as the controls do."""
    assert reply_text(b"550 5.1.1 gone\x00\x1b[2J\xff\r") == "550 5.1.1 gone\ufffd\ufffd[2J\ufffd\ufffd"
    assert reply_text(b"250-first\n250 second\tline") == "250-first\n250 second\tline"
    assert reply_text("421 caf\u00e9 \x7f") == "421 caf\u00e9 \ufffd"
