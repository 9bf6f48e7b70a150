"""Benchmark one worker's sending loop in one process: where fanout.py's workers spend their CPU, repeatably.

    python bench/send_once.py                           # the 5 KB alert to 10,000 readers, SQLite
    python bench/send_once.py --readers 20000 --database postgres
    python bench/send_once.py --readers 2000 --callgrind     # instructions a message (needs valgrind)

Seeds N readers and cuts one edition as fanout.py does (its templates, its seed), then sends every batch
with `send_batch` in this process, one after the other, over one pooled connection to Postfix's smtp-sink
(the asyncio sink of fanout.py when it is missing): no Celery, no broker, no second worker. Printed: msgs/s,
CPU and wall per message, and a one-connection smtplib wire with the same bytes. The CPU and wall times
move by ±15 % from run to run on a shared machine; `--callgrind` runs this file again under valgrind's
callgrind with instrumentation on for the sending only and prints the instructions a message, the same
from run to run (bench/README.md has the counts). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import TEMPLATE_DIR, Sink, run_wire, sample_message, seed  # noqa: E402

from ingest import Database  # noqa: E402

SIZES = {"5": (1, "alert"), "15": (4, "edition"), "64": (20, "edition")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--size", choices=sorted(SIZES), default="5", help="nominal KB, as fanout.py's --sizes")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--database-url", default=os.environ.get("SYNDICATE_TEST_DATABASE_URL"))
    parser.add_argument("--callgrind", action="store_true", help="count instructions a message under callgrind")
    args = parser.parse_args()
    if args.callgrind:
        return callgrind(args)

    stories, template = SIZES[args.size]
    data_dir = Path(tempfile.mkdtemp(prefix="syndicate-send-once-"))
    sink, database = Sink(data_dir, "auto"), Database(args.database, str(data_dir), args.database_url)
    env = {"SYNDICATE_DATA_DIR": str(data_dir), "SYNDICATE_DATABASE_URL": database.url,
           "SYNDICATE_SMTP_URL": sink.url, "SYNDICATE_BATCH_SIZE": "200", "SYNDICATE_SECRET_KEY": "bench-send-once",
           "SYNDICATE_BASE_URL": "https://news.example", "SYNDICATE_TEMPLATE_DIR": str(TEMPLATE_DIR),
           "SYNDICATE_LINK_CHECK": "0"}
    os.environ.update(env)
    os.environ.pop("SYNDICATE_BROKER_URL", None)  # the embedded broker: nothing is queued here
    svc = None
    from syndicate import db, tasks
    from syndicate.config import Settings
    from syndicate.delivery import sending
    from syndicate.delivery.batches import send_batch
    from syndicate.models import Newsletter, utcnow

    try:
        settings = Settings.from_env(os.environ)
        svc = tasks.configure(settings)
        db.upgrade(svc.engine)
        print(f"seeding {args.readers:,} readers, {stories} stories, template {template} ({args.database}) …",
              file=sys.stderr)
        newsletter_id, _ = seed(svc, settings, args.readers, 0, stories, template)
        with db.transaction(svc.Session) as session:
            cut = sending.cut(session, session.get(Newsletter, newsletter_id), settings, now=utcnow())
            edition_id, batches = cut.edition.id, cut.batches
        message = sample_message(svc, settings, edition_id)

        if os.environ.get("SEND_ONCE_CALLGRIND"):
            subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True, check=False)
        cpu, wall = time.process_time(), time.perf_counter()
        for batch_edition, lo, hi in batches:
            send_batch(svc.Session, settings, svc.transport, batch_edition, lo, hi, token=f"send-once-{lo}",
                       pacer=svc.pacer)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if os.environ.get("SEND_ONCE_CALLGRIND"):
            subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True, check=False)
            return
        svc.transport.close()
        wire = run_wire(sink, message, args.readers, 1)
        rate = args.readers / wall
        print(f"{args.database}, {len(message) / 1024:.1f} KB, {args.readers:,} readers, one process: "
              f"{rate:,.0f} msgs/s, CPU {cpu / args.readers * 1e3:.3f} ms and wall {wall / args.readers * 1e3:.3f} ms "
              f"a message; smtplib wire over one connection {wire['msgs_per_s']:,.0f} msgs/s "
              f"(ratio {rate / wire['msgs_per_s']:.2f})")
    finally:
        sink.close()
        if svc is not None:
            svc.engine.dispose()  # before the schema is dropped: no connection of ours may hold it
        database.drop()
        shutil.rmtree(data_dir, ignore_errors=True)


def callgrind(args) -> None:
    """This file again under callgrind, instrumented while it sends; the instructions a message."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind (apt-get install valgrind)")
    out = Path(tempfile.mkdtemp(prefix="syndicate-callgrind-")) / "callgrind.out"
    command = [a for a in sys.argv if a != "--callgrind"]
    subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                    sys.executable, *command], env={**os.environ, "SEND_ONCE_CALLGRIND": "1"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    summary = subprocess.run(["callgrind_annotate", str(out)], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", summary)[1].replace(",", ""))
    print(f"{args.database}, size {args.size} KB, {args.readers:,} readers: {total / args.readers:,.0f} instructions "
          f"a message while sending (callgrind; {out})")


if __name__ == "__main__":
    main()
