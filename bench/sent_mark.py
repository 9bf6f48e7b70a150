"""Benchmark a batch's "sent" marks, alone and with the fold that moves their readers' cursors (delivery.choices).

    python bench/sent_mark.py                                   # SQLite
    python bench/sent_mark.py --database-url postgresql://postgres@127.0.0.1:5432/test   # and PostgreSQL

18,000 claimed rows marked sent through the batch ledger's own writer (`batches._Ledger.write`), in
chunks of 1,000 that alternate between marks alone and marks with a fold after every 200 (a batch, as
send_batch does it), so both see the same machine; prints the median µs a mark of each: the wall time,
the CPU of this process, and on a PostgreSQL server on this machine, the CPU of its backend. On
PostgreSQL a third kind is the baseline the ledger's libpq path replaced: the same statement through
psycopg's execute. A PostgreSQL run makes a schema of its own and drops it. (Until the fold, the cursor
moved in each mark's own commit: bench/README.md has what that cost.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

ROWS, CHUNK, BATCH = 18_000, 1_000, 200


def measure(url: str, data_dir: str) -> dict[str, list[float]]:
    from syndicate import db, tasks
    from syndicate.config import Settings
    from syndicate.db import transaction
    from syndicate.delivery.batches import BatchResult, _Ledger
    from syndicate.models import Delivery, Edition, Newsletter, Subscriber, Subscription

    settings = Settings.from_env({"SYNDICATE_DATABASE_URL": url, "SYNDICATE_SECRET_KEY": "bench",
                                  "SYNDICATE_DATA_DIR": data_dir})
    svc = tasks.configure(settings)
    db.upgrade(svc.engine)
    now = datetime.now(UTC)
    with transaction(svc.Session) as session:
        newsletter = Newsletter(slug="n", name="N", from_name="N", from_address="n@news.example", articles_since=now)
        session.add(newsletter)
        session.flush()
        edition = Edition(newsletter_id=newsletter.id, number=1, status="sending", cut_at=now, started_at=now)
        session.add(edition)
        session.flush()
        session.execute(sa.insert(Subscriber), [dict(email=f"r{i}@example.org", status="confirmed", created_at=now,
                                                     confirmations_sent=0) for i in range(ROWS)])
        ids = session.scalars(sa.select(Subscriber.id).order_by(Subscriber.id)).all()
        session.execute(sa.insert(Subscription), [dict(subscriber_id=i, newsletter_id=newsletter.id, status="active",
                                                       created_at=now) for i in ids])
        session.execute(sa.insert(Delivery), [dict(edition_id=edition.id, subscriber_id=i, status="sending",
                                                   claimed_by="t", attempts=0, created_at=now) for i in ids])
        rows = session.execute(sa.select(Delivery.id, Delivery.attempts, Delivery.subscriber_id)
                               .order_by(Delivery.id)).all()
        edition_id, newsletter_id = edition.id, newsletter.id
    kinds = ["marks alone", "marks and their folds"]
    if svc.engine.dialect.name == "postgresql":
        kinds.append("marks through psycopg's execute")
    times: dict[str, dict[str, list[float]]] = {kind: {"wall": [], "cpu": [], "server": []} for kind in kinds}
    for k in range(0, len(rows), CHUNK):
        kind = kinds[(k // CHUNK) % len(kinds)]
        with svc.Session() as session, _Ledger(session, settings, BatchResult()) as ledger:
            backend = ledger.driver.info.backend_pid if not ledger.sqlite else None
            write = _psycopg_writer(ledger) if kind == "marks through psycopg's execute" else ledger.write
            started, cpu, server = time.perf_counter(), time.process_time(), process_cpu(backend)
            for b in range(k, min(k + CHUNK, len(rows)), BATCH):
                batch = rows[b:b + BATCH]
                for row in batch:
                    write(row, "t", "sent", "250 OK", now)
                if kind == "marks and their folds":
                    ledger.fold(edition_id, newsletter_id)  # as send_batch, once a batch is done
                ledger.sent.clear()
            figures = times[kind]
            figures["wall"].append((time.perf_counter() - started) / CHUNK * 1e6)
            figures["cpu"].append((time.process_time() - cpu) / CHUNK * 1e6)
            if server is not None and (after := process_cpu(backend)) is not None:
                figures["server"].append((after - server) / CHUNK * 1e6)
    svc.close()
    return times


def process_cpu(pid: int | None) -> float | None:
    """A process's CPU seconds so far, if it runs on this machine and may be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _psycopg_writer(ledger):
    """The mark as it was written before the libpq path: the same statement through psycopg's execute."""
    from syndicate.delivery import batches

    sql, names, positional, at = batches._for_driver(batches._outcome("sent", True), ledger.engine.dialect)

    def write(row, token, status, reply, now):
        values = batches._outcome_values(row, token, status, reply, now, ledger.settings)
        values["at"] = at(values["at"])
        ledger.cursor.execute(sql, batches._in_order(names, positional, values), prepare=True)
        assert ledger.cursor.rowcount == 1
    return write


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a PostgreSQL server to measure too (a schema is made and dropped)")
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="syndicate-sent-mark-")
    urls = [("SQLite", f"sqlite:///{Path(folder) / 'bench.db'}")]
    admin = schema = None
    if args.database_url:
        from syndicate.config import Settings

        base = Settings.from_env({"SYNDICATE_DATABASE_URL": args.database_url, "SYNDICATE_SECRET_KEY": "x",
                                  "SYNDICATE_DATA_DIR": folder}).database_url
        schema, admin = f"bench_{uuid.uuid4().hex[:8]}", sa.create_engine(base)
        with admin.begin() as connection:
            connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
        urls.append(("PostgreSQL", f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"))
    try:
        for name, url in urls:
            for kind, figures in measure(url, folder).items():
                shown = [f"{label} {statistics.median(figures[key]):.0f}" for key, label in
                         (("wall", "wall"), ("cpu", "this process's CPU"), ("server", "the server's CPU"))
                         if figures[key]]
                print(f"{name}, {kind}: µs a mark (median of {len(figures['wall'])} chunks): {', '.join(shown)}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if admin is not None:
            with admin.begin() as connection:
                connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
