"""Benchmark a batch's "sent" marks, alone and with the fold that moves their readers' cursors (delivery.choices).

    python bench/sent_mark.py                                   # SQLite
    python bench/sent_mark.py --database-url postgresql://postgres@127.0.0.1:5432/test   # and PostgreSQL

18,000 claimed rows marked sent through the batch ledger's own writer (`batches._Ledger.write`), in
chunks of 1,000 that alternate between marks alone and marks with a fold after every 200 (a batch, as
send_batch does it), so both see the same machine; prints the median µs a mark of each. A PostgreSQL
run makes a schema of its own and drops it. (Until the fold, the cursor moved in each mark's own commit:
bench/README.md has what that cost.)
"""

from __future__ import annotations

import argparse
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
    times: dict[str, list[float]] = {"marks alone": [], "marks and their folds": []}
    for k in range(0, len(rows), CHUNK):
        kind = "marks and their folds" if (k // CHUNK) % 2 else "marks alone"
        with svc.Session() as session, _Ledger(session, settings, BatchResult()) as ledger:
            started = time.perf_counter()
            for b in range(k, min(k + CHUNK, len(rows)), BATCH):
                batch = rows[b:b + BATCH]
                for row in batch:
                    ledger.write(row, "t", "sent", "250 OK", now)
                if kind == "marks and their folds":
                    ledger.fold(edition_id, newsletter_id)  # as send_batch, once a batch is done
                ledger.sent.clear()
            times[kind].append((time.perf_counter() - started) / CHUNK * 1e6)
    svc.close()
    return times


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
            times = measure(url, folder)
            print(f"{name}: " + "; ".join(f"{kind} {statistics.median(v):.0f} µs a mark (chunks: "
                                          f"{', '.join(f'{x:.0f}' for x in v)})" for kind, v in times.items()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if admin is not None:
            with admin.begin() as connection:
                connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
