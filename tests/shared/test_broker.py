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
