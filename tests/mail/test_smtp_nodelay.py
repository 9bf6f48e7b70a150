"""A digest of ordinary size goes out without waiting on TCP: every SMTP socket has TCP_NODELAY and a message
is one write: after the ledger's commit of the message before, its body and final dot with the next message's
pipelined MAIL, RCPT and DATA (RFC 2920), whose replies come back with the dot's: one round trip.

With Nagle's algorithm on, the last partial segment of each write waited for the server's delayed ACK
(~40 ms): 1,000 readers of the 15 KB sample digest took 48 s to reach Postfix's smtp-sink, 2.8 s with the
option set (bench/fanout.py measures the sizes). What is checked here is the mechanism, through the real
client, the real ledger and a real server: no time is asserted.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from conftest import SmtpHandler, serve_smtp
from syndicate.config import parse_smtp_url
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.delivery.batches import send_batch
from syndicate.ingest import feeds
from syndicate.mail.smtp import SmtpTransport
from syndicate.newsletters import lists
from syndicate.subscribers import consent

READERS = 300


@dataclass
class Pipelining(SmtpHandler):
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        responses.insert(1, "250-PIPELINING")
        return responses


@pytest.fixture
def server():
    yield from serve_smtp(Pipelining())


class CountingTransport(SmtpTransport):
    """The real transport; counts the client's writes, and notes each socket's TCP_NODELAY."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writes, self.no_delay = 0, set()

    @contextmanager
    def connect(self):
        with super().connect() as connection:
            smtp = connection.smtp
            self.no_delay.add(smtp.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            send = smtp.send

            def counted(data):
                self.writes += 1
                return send(data)

            smtp.send = counted
            try:
                yield connection
            finally:
                del smtp.send  # pooled: the next batch counts afresh


@pytest.mark.parametrize("stories", [1, 4], ids=["breaking-alert", "daily-digest"])
def test_a_few_hundred_small_messages_go_out_in_one_write_each_on_sockets_that_hold_nothing_back(
        make_settings, tmp_path, server, sample_feed, stories):
    from conftest import configured

    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'n.db'}", smtp_url=server.url))
    with transaction(svc.Session) as session:
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        newsletter = lists.add_newsletter(session, max_age_hours=0,
                                          slug="daily", name="Daily", from_address="news@example.com",
                                          cron=None, first_fill=f"last:{stories}")
        for i in range(READERS):
            consent.subscribe(session, f"reader{i}@example.org", [newsletter.id], confirmed=True)
        cut = sending.cut(session, newsletter, svc.settings)
        size, batches = len(cut.edition.html.encode()), cut.batches
    transport = CountingTransport(parse_smtp_url(server.url))
    try:
        for edition_id, lo, hi in batches:
            send_batch(svc.Session, svc.settings, transport, edition_id, lo, hi, token=f"t-{lo}")
    finally:
        transport.close()

    assert size < 20_000  # the sizes that hid nothing: segments don't fill
    assert len(server.messages) == READERS
    assert transport.no_delay == {1}
    # Per message: its body and dot with the next one's commands, once the row before is committed; per
    # batch the first message's commands; and the session's EHLO.
    assert len(batches) == 2
    assert transport.writes == READERS + len(batches) + 1
