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

    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'n.db'}", smtp_url=server.url,
                                   batch_size=200))  # two batches: the per-batch writes are counted too
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


class Watching(SmtpTransport):
    """The real transport; notes when each message is ended and its reply awaited, and what is built meanwhile."""

    def __init__(self, *args, events: list, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = events

    @contextmanager
    def connect(self):
        with super().connect() as connection:
            send, events = connection.send, self.events

            def watched(message, before_end=None, while_waiting=None):
                def waiting():
                    events.append(("waiting", message.recipient))
                    while_waiting()
                    events.append(("reply read next", message.recipient))
                return send(message, before_end, waiting if while_waiting else None)

            connection.send = watched
            yield connection


def _newsletter_of(svc, sample_feed, readers: int) -> list[tuple[int, int, int]]:
    with transaction(svc.Session) as session:
        feeds.ingest(session, feeds.add_feed(session, "https://truthusa.example/feed/"), sample_feed)
        newsletter = lists.add_newsletter(session, max_age_hours=0, slug="daily", name="Daily",
                                          from_address="news@example.com", cron=None, first_fill="last:1")
        for i in range(readers):
            consent.subscribe(session, f"reader{i}@example.org", [newsletter.id], confirmed=True)
        return sending.cut(session, newsletter, svc.settings).batches


def test_the_message_after_next_is_built_while_the_server_reads_this_one(make_settings, tmp_path, server,
                                                                          sample_feed, monkeypatch):
    """What is left between a reply and the next write is the commit of the message before: the one after
    the next is decided and built while the worker waits for the server (bench/README.md: one process sent a
    5 KB alert ~10 % faster)."""
    from conftest import configured
    from syndicate.delivery.copies import MessageFactory

    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'n.db'}", smtp_url=server.url))
    batches = _newsletter_of(svc, sample_feed, 12)
    events: list[tuple[str, str]] = []
    build = MessageFactory.__call__

    def built(self, delivery_id, subscriber_id, email, name):
        events.append(("built", email))
        return build(self, delivery_id, subscriber_id, email, name)

    monkeypatch.setattr(MessageFactory, "__call__", built)
    transport = Watching(parse_smtp_url(server.url), events=events)
    try:
        (edition_id, lo, hi), = batches
        assert send_batch(svc.Session, svc.settings, transport, edition_id, lo, hi, token="t").counts == {"sent": 12}
    finally:
        transport.close()

    readers = [f"reader{i}@example.org" for i in range(12)]
    assert sorted(m.recipients[0] for m in server.messages) == sorted(readers)
    waits = [i for i, event in enumerate(events) if event[0] == "waiting"]
    assert [events[i][1] for i in waits] == readers  # each message's reply awaited in turn
    # The first two are built before any wait (the first, and the one announced with its end); from then on
    # message k + 2 is built while the reply to message k is awaited, and nothing else is built then.
    assert events[:2] == [("built", readers[0]), ("built", readers[1])]
    for k, at in enumerate(waits):
        inside = events[at + 1:events.index(("reply read next", readers[k]), at)]
        assert inside == ([("built", readers[k + 2])] if k + 2 < len(readers) else [])


def test_a_failure_while_the_message_after_next_is_prepared_comes_up_where_that_row_is_wanted(
        make_settings, tmp_path, server, sample_feed, monkeypatch):
    """The message whose reply was awaited is finished and marked sent; the one announced with it is never
    ended (the server drops it); the error is the batch's, as if met when the row was decided; the rest stay
    claimed for the task's retry."""
    from sqlalchemy import func, select

    from conftest import configured
    from syndicate.delivery.batches import _Batch
    from syndicate.models import Delivery

    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'n.db'}", smtp_url=server.url))
    (edition_id, lo, hi), = _newsletter_of(svc, sample_feed, 8)
    decide, calls = _Batch.next, []

    def failing(self, ahead):
        calls.append(ahead)
        if len(calls) == 5:  # the third message's wait: deciding the fifth
            raise RuntimeError("the pacing store went away mid-decision")
        return decide(self, ahead)

    monkeypatch.setattr(_Batch, "next", failing)
    transport = SmtpTransport(parse_smtp_url(server.url))
    try:
        with pytest.raises(RuntimeError, match="mid-decision"):
            send_batch(svc.Session, svc.settings, transport, edition_id, lo, hi, token="t")
    finally:
        transport.close()

    readers = [f"reader{i}@example.org" for i in range(4)]
    assert [m.recipients[0] for m in server.messages] == readers[:3]  # the fourth was announced, never ended
    with svc.Session() as session:
        statuses = dict(session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all())
    assert statuses == {"sent": 3, "sending": 5}  # the retry of the same task takes these back (ledger.claim)
