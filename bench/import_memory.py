"""The memory `syndicate subscriber import` takes for a long list (issue 22: 815 MB for 1,000,000 rows).

    python bench/import_memory.py                      # 1,000,000 rows, SQLite in a temp folder
    python bench/import_memory.py --rows 100000 --baseline-rows 100000
    python bench/import_memory.py --database-url postgresql://postgres@127.0.0.1:5432/test   # a fresh schema
    python bench/import_memory.py --baseline-commit a19f731   # the old code path, same file, same run

Writes a CSV like a real export: names with accents and other scripts, a few quoted with commas, ~1 %
addresses that aren't addresses, ~1 % repeats of an earlier row, Windows line ends. Each import is the real
command in a child process on a fresh database; its peak RSS is the child's own (os.wait4's ru_maxrss).
Beside it, in the same run:

  floor      `syndicate subscriber import` of a one-row file: the interpreter and the libraries the
             command loads, what any import costs before its first row
  csv parse  the same file through csv.reader alone, in a child: the least that reading it can take
  baseline   the code of --baseline-commit (taken with `git archive`, nothing checked out), on the first
             --baseline-rows rows (0 skips it)

Rates are rows per CPU second of the child (its user + system time): on a shared machine the wall clock
measures the neighbours too, and both are printed. Target: the import's peak ≤ 150 MB for 1,000,000 rows.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # bench/: the sibling ingest benchmark
from ingest import Database  # noqa: E402 - a fresh PostgreSQL schema, dropped after

SYNDICATE = [sys.executable, "-c", "import sys; from syndicate.cli.main import cli; sys.argv[0] = 'syndicate'; cli()"]
TARGET_MB = 150
FIRST = ["José", "Zoë", "Łukasz", "Søren", "Ana María", "Mehmet", "Aoife", "Nguyễn", "李", "Олег", "Fatima", "Ángel",
         "Chloé", "Jürgen", "Ines", "Kwame", "Sasha", "Renée", "Björn", "Marta"]
LAST = ["Müller", "García", "O'Brien", "Dupont", "Kowalski", "Østergaard", "Yılmaz", "Tanaka", "雷", "Петров",
        "Smith", "da Silva", "Nuñez", "Ó Súilleabháin", "van der Berg", "Haddad", "Jensen", "Rossi"]
DOMAINS = ["example.com", "mail.example.org", "post.example.net", "news-reader.example", "exämple.de"]


def write_csv(path: Path, rows: int, seed: int = 22) -> dict[str, int]:
    """`rows` data rows; how many of them are meant bad and repeated."""
    rng = random.Random(seed)
    bad = repeated = 0
    recent: list[str] = []
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["email", "name", "signed_up"])
        for i in range(rows):
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            if i % 37 == 0:
                name = f"{name}, Jr."  # quoted by the writer
            roll = rng.random()
            if roll < 0.01:
                email, bad = rng.choice(["not-an-address", f"reader{i}@", f"reader {i}@example.com", ""]), bad + 1
            elif roll < 0.02 and recent:
                email, repeated = rng.choice(recent).upper(), repeated + 1  # the same address, other case
            else:
                local = unicodedata.normalize("NFKD", name.split()[0].lower()).encode("ascii", "ignore").decode()
                email = f"{local or 'reader'}.{i}@{rng.choice(DOMAINS)}"
                recent = (recent + [email])[-100:]
            writer.writerow([email, name, f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}"])
    return {"bad": bad, "repeated": repeated}


def peak_of(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float, float, int, str]:
    """(peak RSS in MB, wall seconds, CPU seconds, exit code, first line of stdout or the end of stderr) of one
    child process. CPU beside wall: on a shared machine the wall clock measures the neighbours too."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        said = (out.read().decode(errors="replace").strip().splitlines() or [""])[0]
        if child.returncode not in (0, 1):
            said = err.read().decode(errors="replace").strip()[-600:]
    return usage.ru_maxrss / 1024, wall, usage.ru_utime + usage.ru_stime, child.returncode, said


def fresh_database(folder: Path, source: Path, database_url: str | None) -> dict[str, str]:
    """The environment of a `syndicate` on a new database with the newsletter `daily`, made by `source`'s code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
    env.update(PYTHONPATH=str(source / "src"), SYNDICATE_DATA_DIR=str(folder / "data"),
               SYNDICATE_SECRET_KEY="bench", SYNDICATE_BASE_URL="http://bench.example")
    if database_url:
        env["SYNDICATE_DATABASE_URL"] = database_url
    syndicate = SYNDICATE
    subprocess.run([*syndicate, "db", "upgrade"], env=env, check=True, capture_output=True)
    made = subprocess.run([*syndicate, "newsletter", "add", "daily", "--name", "Daily", "--from-address",
                           "news@example.com"], env=env, capture_output=True, text=True)
    if made.returncode != 0 and "exists" not in made.stderr + made.stdout:
        raise SystemExit(f"could not make the newsletter: {made.stderr or made.stdout}")
    return env


def first_rows(source: Path, target: Path, rows: int) -> None:
    with source.open("rb") as read, target.open("wb") as write:
        for i, line in enumerate(read):
            if i > rows:
                break
            write.write(line)


def old_code(commit: str, folder: Path) -> Path:
    archive = folder / "old.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src", "templates"], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "old", filter="data")
    return folder / "old"


def report(label: str, rows: int, found: tuple[float, float, float, int, str]) -> dict:
    peak, wall, cpu, code, said = found
    rate = rows / cpu if cpu else 0
    print(f"{label:<34} {rows:>10,} rows  peak {peak:7.1f} MB  wall {wall:7.1f} s  CPU {cpu:7.1f} s  "
          f"{rate:9,.0f} rows per CPU s  exit {code}")
    if said:
        print(f"{'':<34} {said[:200]}")
    return {"label": label, "rows": rows, "peak_mb": round(peak, 1), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "rows_per_cpu_s": round(rate)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server's database, where a fresh schema is made for the run and dropped "
                             "after it (default: SQLite in a temp folder)")
    parser.add_argument("--baseline-commit", help="measure this commit's code too (e.g. the one before streaming)")
    parser.add_argument("--baseline-rows", type=int, default=200_000,
                        help="rows for the baseline (it holds the whole file: 1,000,000 took 815 MB)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="syndicate-import-bench-"))
    try:
        print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; writing {args.rows:,} rows …")
        data = folder / "list.csv"
        meant = write_csv(data, args.rows)
        print(f"{data.stat().st_size / 1e6:.1f} MB; {meant['bad']:,} bad, {meant['repeated']:,} repeated")
        figures = []
        one = folder / "one.csv"
        first_rows(data, one, 1)
        env = fresh_database(folder / "floor", ROOT, None)
        syndicate = [*SYNDICATE, "subscriber", "import", "--newsletter", "daily"]
        figures.append(report("floor (a one-row import)", 1, peak_of([*syndicate, str(one)], env)))
        figures.append(report("csv parse (csv.reader alone)", args.rows, peak_of(
            [sys.executable, "-c", "import csv, sys; print(sum(1 for _ in csv.reader(open(sys.argv[1], "
                                   "encoding='utf-8', newline=''))))", str(data)], env)))
        database = Database("postgres" if args.database_url else "sqlite", str(folder), args.database_url)
        try:
            env = fresh_database(folder / "new", ROOT, database.url if args.database_url else None)
            kind = "PostgreSQL" if args.database_url else "SQLite"
            figures.append(report(f"import (this code, {kind})", args.rows, peak_of([*syndicate, str(data)], env)))
            figures.append(report("import again (all unchanged)", args.rows, peak_of([*syndicate, str(data)], env)))
        finally:
            database.drop()
        if args.baseline_commit and args.baseline_rows:
            part = folder / "part.csv"
            first_rows(data, part, args.baseline_rows)
            old = old_code(args.baseline_commit, folder)
            env = fresh_database(folder / "old-db", old, None)
            figures.append(report(f"baseline {args.baseline_commit[:10]}", args.baseline_rows,
                                  peak_of([*syndicate, str(part)], env)))
            env = fresh_database(folder / "new-part", ROOT, None)
            figures.append(report("this code, same rows", args.baseline_rows, peak_of([*syndicate, str(part)], env)))
        peak = figures[2]["peak_mb"]
        print(f"target: peak ≤ {TARGET_MB} MB for 1,000,000 rows: {peak:.1f} MB for {args.rows:,} rows "
              f"({'met' if peak <= TARGET_MB else 'NOT met'}); issue 22 measured 815 MB before")
        print(json.dumps({"rows": args.rows, "figures": figures, "target_mb": TARGET_MB}))
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
