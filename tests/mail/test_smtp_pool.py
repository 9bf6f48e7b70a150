"""The SMTP transport's pool: batches reuse a live connection, never a dead or failed one."""

from __future__ import annotations

from aiosmtpd.controller import Controller

from conftest import SmtpHandler, free_port
from syndicate.config import parse_smtp_url
from syndicate.errors import ConnectionLost
from syndicate.mail.smtp import SmtpTransport
from syndicate.mail.transport import Outgoing


class CountingHandler(SmtpHandler):
    """Counts the sessions (EHLO greetings) it was asked for."""

    greetings = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.greetings += 1
        session.host_name = hostname
        return responses


def message(to: str) -> Outgoing:
    data = f"From: a@example.com\r\nTo: {to}\r\nSubject: hi\r\n\r\nhello\r\n".encode()
    return Outgoing("a@example.com", to, data, f"<{to}>")


def serve(handler, port):
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


def test_consecutive_batches_reuse_one_connection():
    handler, port = CountingHandler(), free_port()
    controller = serve(handler, port)
    transport = SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{port}"))
    try:
        for batch in range(3):
            with transport.connect() as connection:
                for i in range(5):
                    connection.send(message(f"r{batch}{i}@example.com"))
    finally:
        transport.close()
        controller.stop()
    assert len(handler.messages) == 15 and handler.greetings == 1


def test_a_connection_that_lost_the_stream_is_not_reused():
    handler, port = CountingHandler(), free_port()
    handler.replies["slow@example.com"] = "421 4.7.0 slow down"
    controller = serve(handler, port)
    transport = SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{port}"))
    try:
        with transport.connect() as connection:
            try:
                connection.send(message("slow@example.com"))
            except ConnectionLost:
                pass
        with transport.connect() as connection:
            connection.send(message("fine@example.com"))
    finally:
        transport.close()
        controller.stop()
    assert handler.greetings == 2 and [m.recipients for m in handler.messages] == [["fine@example.com"]]


def test_a_pooled_connection_the_server_dropped_is_replaced():
    handler, port = CountingHandler(), free_port()
    controller = serve(handler, port)
    transport = SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{port}"))
    try:
        with transport.connect() as connection:
            connection.send(message("one@example.com"))
        controller.stop()  # the server restarts: the pooled socket is dead
        controller = serve(handler, port)
        with transport.connect() as connection:
            connection.send(message("two@example.com"))
    finally:
        transport.close()
        controller.stop()
    assert [m.recipients for m in handler.messages] == [["one@example.com"], ["two@example.com"]]
    assert handler.greetings == 2
