"""Engine, sessions and migrations."""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from syndicate import private_files
from syndicate.errors import NotFound

T = TypeVar("T")

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    # Enough connections for the polling threads of one process (feeds.poll_many) and then some.
    pool = dict(pool_size=20, max_overflow=10)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **pool)
    if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        private_files.create(Path(parsed.database))  # before SQLite makes it with the umask's mode
    # SQLAlchemy's AUTOCOMMIT leaves the driver out of transactions: they are begun below, and
    # committed or rolled back as usual. (Set per connection instead, SQLite's would be undone
    # as the connection went back to the pool, and pysqlite would begin transactions itself.)
    engine = create_engine(url, connect_args={"timeout": 30}, isolation_level="AUTOCOMMIT", **pool)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        # WAL lets readers go on while one writes; workers in other processes wait for
        # the write lock instead of failing at once.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # under connect_args' 30 s busy timeout
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Waiting for the write lock is done by _begin_immediate, finer than SQLite's own busy handler.
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        # A deferred transaction that reads, then writes after another process wrote,
        # fails at once with SQLITE_BUSY (no waiting helps it). Taking the write lock
        # at BEGIN makes every transaction wait its turn instead. Keep them short.
        begin_immediate(connection.connection.dbapi_connection)

    return engine


def begin_immediate(dbapi_connection, timeout: float = 30.0) -> None:
    """BEGIN IMMEDIATE, retried every 0.1 ms at first, then less often, for up to `timeout` seconds.

    SQLite's own busy handler sleeps 1, 2, 5, 10… ms between tries: two workers each committing one
    delivery row per message (a transaction of about 0.1 ms) spent a fifth of their time asleep
    there, waiting for a lock that was free again long before. Every transaction of ours starts
    here (isolation_level None, the begin event), so it is the one place that meets a busy database.
    """
    deadline, pause = time.monotonic() + timeout, 0.0001
    while True:
        try:
            dbapi_connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 1.5, 0.005)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)



def row(session: Session, model: type[T], key: object, missing: str) -> T:
    """The row of `model` whose primary key is `key`; NotFound saying `missing` (and what to do) if none."""
    found = session.get(model, key)
    if found is None:
        raise NotFound(missing)
    return found


@contextmanager
def transaction(sessions: sessionmaker[Session]):
    """A session that commits on success and rolls back on error."""
    with sessions() as session, session.begin():
        yield session


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config  # alembic costs ~0.1 s at import: only where migrations are run

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def migrated(engine: Engine) -> bool:
    """Whether the schema has been made: the migrations' own table exists (without loading alembic)."""
    return inspect(engine).has_table("alembic_version")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
