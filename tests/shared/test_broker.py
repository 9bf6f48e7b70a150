"""The embedded broker (kombu's SQLAlchemy transport on SQLite) in worker processes."""

from __future__ import annotations

from kombu import Connection
from kombu.transport.sqlalchemy import Channel

from syndicate import broker


def test_a_pool_child_forked_after_the_worker_connected_opens_its_own_broker_connections(tmp_path):
    """A worker's pool process that dies is replaced by a fork of the main process, which by then holds
    the broker's engine: the child must not go on with the parent's SQLite connections."""
    others = dict(Channel._engines)  # other tests' embedded brokers: out of the way, and back afterwards
    Channel._engines.clear()
    with Connection(f"sqla+sqlite:///{tmp_path / 'broker.db'}") as connection:
        connection.SimpleQueue("mail").put({"task": 1})  # the engine is open and pooled now
        (engine, _), = Channel._engines.values()
        inherited = engine.pool
        try:
            broker._own_connections_after_fork()
            assert Channel._engines == {}
            assert engine.pool is not inherited  # the parent's pooled connections are forgotten, not shared
            assert connection.SimpleQueue("mail").get(timeout=1).payload == {"task": 1}  # a fresh engine
        finally:
            for engine, _ in Channel._engines.values():
                engine.dispose()
            Channel._engines.clear()
            Channel._engines.update(others)


def test_a_queue_another_process_created_first_is_read_not_a_crash(tmp_path):
    """Worker and beat start together on a fresh install and both create the "mail" queue's row: the one
    that comes second must go on with the row the other made, not end with an IntegrityError."""
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    others = dict(Channel._engines)
    Channel._engines.clear()
    try:
        with Connection(url) as first, Connection(url) as second:
            late = second.default_channel
            assert isinstance(late, broker.EmbeddedChannel)
            late.session.query(late.queue_cls).filter(late.queue_cls.name == "mail").first()  # looked: none yet
            first.SimpleQueue("mail").put({"task": 1})  # the other process creates the row meanwhile
            looked = late.session.query

            def stale_look(*args):  # what the race looks like to the second process: its read saw no row
                query = looked(*args)
                query.first = lambda: None
                return query

            late.session.query = stale_look
            try:
                queue = late._get_or_create("mail")
            finally:
                del late.session.query
            assert queue.name == "mail"
            assert second.SimpleQueue("mail").get(timeout=1).payload == {"task": 1}
    finally:
        for engine, _ in Channel._engines.values():
            engine.dispose()
        Channel._engines.clear()
        Channel._engines.update(others)
