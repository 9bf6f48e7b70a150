"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, for one machine with no Redis.

Chosen over kombu's filesystem transport because every message lives in a
transactional table (a crash never leaves half a message) and SQLite's locking
makes several worker processes safe. Neither redelivers a task whose worker died;
syndicate doesn't rely on that: the beat tick hands stale claims on (see deliveries.requeue).
"""

from celery.signals import worker_process_init
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel, Transport


class EmbeddedTransport(Transport):
    # kombu polls this transport once a second by default, so a worker took about one
    # task a second; the option can't go through broker_transport_options, which this
    # transport hands on to create_engine().
    polling_interval = 0.1


# `sqla+sqlite:///…` URLs keep their usual spelling and get the faster polling.
TRANSPORT_ALIASES["sqla"] = "syndicate.broker:EmbeddedTransport"


@worker_process_init.connect
def _own_connections_after_fork(**_) -> None:
    """kombu caches its engines on the class, as (engine, sessionmaker): a pool child forked after the
    worker connected (any child that replaces one that died) inherits the parent's SQLite connections,
    and two processes on one connection lose messages. Each child opens its own."""
    for engine, _ in Channel._engines.values():
        engine.dispose(close=False)  # forget the parent's connections without closing them under it
    Channel._engines.clear()
