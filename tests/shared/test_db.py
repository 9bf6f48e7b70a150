"""SQLite as the embedded default: every transaction takes the write lock at BEGIN, waiting its turn."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import text

from syndicate.db import begin_immediate, make_engine


def test_a_writer_waits_for_the_lock_and_gets_it_once_it_is_free(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (n INTEGER)"))
    holder = engine.connect()
    holder.begin()
    holder.execute(text("INSERT INTO t VALUES (1)"))
    released = []

    def release():
        time.sleep(0.3)
        released.append(time.monotonic())
        holder.commit()

    threading.Thread(target=release).start()
    with engine.begin() as connection:  # blocks in BEGIN IMMEDIATE until the holder commits
        got = time.monotonic()
        connection.execute(text("INSERT INTO t VALUES (2)"))
    holder.close()
    assert got >= released[0]  # it waited for the commit (how promptly is bench/fanout.py's business)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 2]
    engine.dispose()


def test_a_lock_never_released_gives_up_with_sqlites_own_error(tmp_path):
    path = tmp_path / "db.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(waiter, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1
    holder.rollback()
    begin_immediate(waiter)  # free again: taken at once
    waiter.rollback()
