"""Benchmark the single-process path: `syndicate deliver` (the CLI, no worker) sends one edition to a local sink.

    python bench/deliver.py                      # the bundled sample digest to 1,000 readers, SQLite
    python bench/deliver.py --readers 5000 --database postgres

One newsletter of the bundled sample feed's four stories (the bundled template: the digest a new
user sees first), N confirmed readers, its edition cut in this process (nothing is queued); then
`syndicate deliver` runs as a user runs it, in its own process, with SYNDICATE_SMTP_URL pointing at
Postfix's `smtp-sink` (the asyncio sink of fanout.py when it is missing). Measured:

  deliver     the command's wall time, start-up included, and the span from the first row marked
              sent to the last (the sending itself); `syndicate deliver` run once before the cut,
              with nothing to send, gives the start-up alone.
  wire limit  one smtplib connection (TCP_NODELAY) sending the same bytes N times: the CLI sends
              over one connection too.
  pipelined   the same over a connection of syndicate's SmtpTransport, with no ledger.

The target is the sending's rate ≥ 0.5 × the wire (start-up is the same whatever the count of readers).
Figures are printed, never asserted: the exit status is 0 whether the target is met or not. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import SAMPLE_STORIES, Probe, Sink, refused, run_wire, sample_message, seed  # noqa: E402

from ingest import Database, code_version  # noqa: E402

TARGET_RATIO_TO_WIRE = 0.5


def syndicate_command() -> list[str]:
    """The console script installed beside this Python, as a user runs it."""
    script = Path(sys.executable).with_name("syndicate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "syndicate"]


def run_cli(env: dict, log: Path) -> dict:
    started = time.perf_counter()
    process = subprocess.Popen([*syndicate_command(), "deliver"], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # CPU of the command's own process, read from its children's totals once it has exited.
    before = os.times()
    output, _ = process.communicate()
    after = os.times()
    wall = time.perf_counter() - started
    log.write_bytes(output)
    lines = output.decode(errors="replace").strip().splitlines()
    return {"wall_s": wall, "exit": process.returncode, "last_line": lines[-1] if lines else "",
            "cpu_s": (after.children_user - before.children_user) + (after.children_system - before.children_system)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, default=1000)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--database-url",
                        default=os.environ.get("SYNDICATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                        help="PostgreSQL server for --database postgres; a fresh schema is made there and dropped")
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "asyncio"), default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (SQLite file, the command's output)")
    args = parser.parse_args(argv)
    if args.readers < 1:
        parser.error("--readers must be at least 1")

    from syndicate import db, tasks
    from syndicate.config import Settings
    from syndicate.db import transaction
    from syndicate.delivery import sending
    from syndicate.models import Newsletter, utcnow

    load_at_start, version = os.getloadavg()[0], code_version()
    data_dir = Path(tempfile.mkdtemp(prefix="syndicate-deliver-"))
    database = sink = probe = svc = None
    try:
        database = Database(args.database, str(data_dir), args.database_url)
        if args.database == "postgres":
            database.url += "%20-csynchronous_commit%3Don"  # PostgreSQL's default, as in production
        sink = Sink(data_dir, args.sink)
        env = {**os.environ, "SYNDICATE_DATA_DIR": str(data_dir), "SYNDICATE_DATABASE_URL": database.url,
               "SYNDICATE_SMTP_URL": sink.url, "SYNDICATE_SECRET_KEY": "bench-deliver",
               "SYNDICATE_BASE_URL": "https://news.example"}
        env.pop("SYNDICATE_BROKER_URL", None)  # the embedded broker: deliver needs no Redis
        settings = Settings.from_env(env)
        svc = tasks.configure(settings)
        db.upgrade(svc.engine)
        print(f"seeding {args.readers:,} readers of the sample digest ({args.database}) …", file=sys.stderr)
        newsletter_id, _ = seed(svc, settings, args.readers, 1, SAMPLE_STORIES)
        probe = Probe(database.url)

        print("syndicate deliver, nothing to send: start-up …", file=sys.stderr)
        idle = run_cli(env, data_dir / "deliver-idle.out")
        with transaction(svc.Session) as session:  # cut, nothing queued: the CLI finds the pending rows itself
            cut = sending.cut(session, session.get(Newsletter, newsletter_id), settings, now=utcnow())
            edition_id = cut.edition.id
            refused(cut.edition)
        message = sample_message(svc, settings, edition_id)
        sink_before, sink_cpu = sink.received(), sink.cpu_seconds()
        print(f"syndicate deliver: {args.readers:,} readers …", file=sys.stderr)
        run = run_cli(env, data_dir / "deliver.out")
        sink_received, sink_cpu = sink.received() - sink_before, sink.cpu_seconds() - sink_cpu
        counts = probe.counts(edition_id)
        first, last = probe.sent_span(edition_id)
        sending_s = (last - first).total_seconds() if first and last else 0.0
        sent = counts.get("sent", 0)
        print(f"wire limit: {args.readers:,} messages over 1 smtplib connection …", file=sys.stderr)
        wire = run_wire(sink, message, args.readers, 1)
        print(f"pipelined wire: {args.readers:,} messages over 1 SmtpTransport connection …", file=sys.stderr)
        pipelined = run_wire(sink, message, args.readers, 1, pipelined=True)
        loads = (load_at_start, os.getloadavg()[0])
    finally:
        if probe is not None:
            probe.close()
        if svc is not None:
            svc.close()
        if sink is not None:
            sink.close()
        if args.keep:
            print(f"kept {data_dir}", file=sys.stderr)
        else:
            if database is not None:
                database.drop()
            shutil.rmtree(data_dir, ignore_errors=True)

    rate_wall = sent / run["wall_s"] if run["wall_s"] else 0.0
    # Over the span first → last "sent", one message fewer than were sent fell inside it.
    rate_sending = (sent - 1) / sending_s if sending_s else 0.0
    ratio_wall = rate_wall / wire["msgs_per_s"]
    ratio_sending = rate_sending / wire["msgs_per_s"]
    # The target is the sending's: start-up (imports, settings, the database) is the same for 10 readers or 100,000.
    met = sent == args.readers and sink_received == args.readers and ratio_sending >= TARGET_RATIO_TO_WIRE

    def row(label, value, note=""):
        return f"  {label:<52}{value:>14}  {note}"

    print("\n".join([
        f"deliver: `syndicate deliver` to {args.readers:,} readers, {args.database}, {os.cpu_count()} CPUs",
        f"code: {version}; load average at start / end: {loads[0]:.1f} / {loads[1]:.1f}",
        f"message: the sample digest, {SAMPLE_STORIES} stories, {len(message) / 1024:.1f} KB on the wire",
        f"sink: {sink.description}",
        f"command: {' '.join(syndicate_command())} deliver",
        "",
        row("start-up alone (deliver with nothing to send, s)", f"{idle['wall_s']:.2f}"),
        row("deliver: wall time, start-up included (s)", f"{run['wall_s']:.2f}"),
        row("  its last line", run["last_line"][:60]),
        row("  exit status", f"{run['exit']}"),
        row("  rows by status", ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))),
        row("  sink received", f"{sink_received:,}"),
        row("  sending: first → last row sent (s)", f"{sending_s:.2f}"),
        row("  CPU of the command (s)", f"{run['cpu_s']:.2f}"),
        row("  sink's CPU per message (ms)", f"{1000 * sink_cpu / max(1, sink_received):.2f}"),
        row("messages/s, wall (start-up included)", f"{rate_wall:.0f}"),
        row("messages/s, sending", f"{rate_sending:.0f}"),
        row("wire limit (1 smtplib connection, TCP_NODELAY), msgs/s", f"{wire['msgs_per_s']:.0f}",
            f"{wire['wall_s']:.2f} s"),
        row("pipelined wire (1 SmtpTransport connection), msgs/s", f"{pipelined['msgs_per_s']:.0f}",
            f"{pipelined['wall_s']:.2f} s"),
        row("ratio to wire, wall (start-up included)", f"{ratio_wall:.2f}"),
        row("ratio to wire, sending", f"{ratio_sending:.2f}",
            f"≥ {TARGET_RATIO_TO_WIRE}: {'met' if met else 'NOT MET'}"),
        row("ratio to pipelined wire, sending", f"{rate_sending / pipelined['msgs_per_s']:.2f}"),
    ]))
    print(json.dumps({
        "bench": "deliver", "code": version, "cpus": os.cpu_count(), "load_average": loads,
        "database": args.database, "readers": args.readers, "sent": sent, "sink_received": sink_received,
        "message_bytes": len(message), "startup_s": round(idle["wall_s"], 3), "wall_s": round(run["wall_s"], 3),
        "sending_s": round(sending_s, 3), "cpu_s": round(run["cpu_s"], 3), "msgs_per_s_wall": round(rate_wall, 1),
        "msgs_per_s_sending": round(rate_sending, 1), "wire_msgs_per_s": round(wire["msgs_per_s"], 1),
        "wire_pipelined_msgs_per_s": round(pipelined["msgs_per_s"], 1), "ratio_to_wire_wall": round(ratio_wall, 3),
        "ratio_to_wire": round(ratio_sending, 3), "exit": run["exit"], "target_met": met,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
