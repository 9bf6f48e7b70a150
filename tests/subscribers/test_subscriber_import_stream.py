"""A long CSV list imported as a stream: read in batches, each committed, never held whole; a file refused
whole before anything is written; a progress bar on a terminal and nowhere else."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import event, func, select

from syndicate.cli.main import main
from syndicate.db import transaction
from syndicate.models import Subscriber
from syndicate.newsletters import lists
from syndicate.subscribers import csv_files


@pytest.fixture
def daily(svc) -> int:
    with transaction(svc.Session) as session:
        return lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com").id


def listing(rows: int, start: int = 0) -> bytes:
    return ("email,name\r\n" + "".join(f"reader{i}@example.com,Zoë {i}\r\n" for i in range(start, start + rows))
            ).encode()


def subscribers(svc) -> int:
    with transaction(svc.Session) as session:
        return session.scalar(select(func.count()).select_from(Subscriber))


class Watched(io.BytesIO):
    """A file that tells how far it had been read at each commit."""


def test_the_import_commits_each_batch_having_read_only_the_rows_before_it(svc, daily):
    data = listing(10_000)
    stream, read_at_commit = Watched(data), []
    event.listen(svc.engine, "commit", lambda _: read_at_commit.append(stream.tell()))

    report = csv_files.import_file(svc.Session, stream, [daily], batch=1000)
    checked, *batches = read_at_commit

    assert report.added == 10_000 and subscribers(svc) == 10_000
    assert checked == len(data)  # the newsletters checked, once the first pass read the whole file
    assert len(batches) == 10
    assert batches == sorted(batches) and batches[0] < len(data) / 5  # the first batch in before the rest is read


def test_a_repeat_in_a_later_batch_is_reported_with_the_line_it_repeats(svc, daily):
    data = b"email\nann@example.com\nbo@example.com\ncy@example.com\nANN@example.com\nnope\nbo@example.com\n"

    report = csv_files.import_file(svc.Session, io.BytesIO(data), [daily], batch=1)

    assert report.added == 3
    assert report.duplicates == [(5, "ann@example.com", "duplicate of line 2"),
                                 (7, "bo@example.com", "duplicate of line 3")]
    assert [line for line, _, _ in report.bad] == [6]


def test_an_import_stopped_half_way_is_finished_by_importing_the_file_again(svc, daily):
    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        csv_files.import_file(svc.Session, io.BytesIO(listing(5000)), [daily], batch=2000, progress=stop)
    assert subscribers(svc) == 2000  # the first batch stays: committed

    again = csv_files.import_file(svc.Session, io.BytesIO(listing(5000)), [daily], batch=2000)

    assert (again.added, again.unchanged, subscribers(svc)) == (3000, 2000, 5000)


def test_lines_ended_by_a_lone_cr_are_lines(svc, daily):
    report = csv_files.import_file(svc.Session, io.BytesIO(b"email\rann@example.com\rnope\r\rbo@example.com\r"),
                                   [daily])

    assert report.added == 2 and report.bad == [(3, "nope", report.bad[0][2])]


# ── through the command ──────────────────────────────────────────────────────


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    found = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s"}
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"], env=found).exit_code == 0
    made = runner.invoke(main, ["newsletter", "add", "daily", "--name", "Daily", "--from-address",
                                "news@example.com"], env=found)
    assert made.exit_code == 0, made.output
    return found


def run(env, *args: str, input: bytes | None = None):
    return CliRunner().invoke(main, list(args), env=env, input=input)


def test_a_byte_that_isnt_utf8_near_the_end_refuses_the_file_before_any_row_goes_in(env, tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(listing(12_000) + b"M\xfcller@example.com,x\r\n")

    result = run(env, "subscriber", "import", str(path), "--newsletter", "daily")

    assert result.exit_code != 0
    assert "line 12002 has byte 0xfc" in str(result.exception) and "nothing was imported" in str(result.exception)
    assert "(none)" in run(env, "subscriber", "list").output


def test_a_line_without_end_is_refused_without_reading_it_into_memory(env):
    result = run(env, "subscriber", "import", "-", "--newsletter", "daily",
                 input=b"email\n" + b"a" * (csv_files.MAX_LINE + 10))

    assert result.exit_code != 0
    said = str(result.exception)
    assert "line 2 of the file is over 1 MB long" in said and "nothing was imported" in said


def test_standard_input_is_imported_in_batches_like_a_file(env):
    result = run(env, "subscriber", "import", "-", "--newsletter", "daily", input=listing(12_000))

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("12000 added")


def syndicate_command(env: dict[str, str], *args: str, stderr) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from syndicate.cli.main import cli; cli()", *args],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=stderr,
                            stdin=subprocess.DEVNULL)


def test_a_terminal_sees_a_progress_bar_of_rows_and_rate_on_stderr(env, tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(listing(12_000))
    terminal, child_end = pty.openpty()
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                got = os.read(terminal, 4096)
            except OSError:  # the child closed its end
                return
            if not got:
                return
            seen.extend(got)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    child = syndicate_command(env, "subscriber", "import", str(path), "--newsletter", "daily", stderr=child_end)
    out, _ = child.communicate(timeout=300)
    os.close(child_end)
    reader.join(timeout=30)
    os.close(terminal)

    assert child.returncode == 0
    assert out.decode().startswith("12000 added")
    shown = seen.decode(errors="replace")
    assert "importing" in shown and "12000/12000" in shown and "rows/s" in shown
    assert "importing" not in out.decode()


def test_no_bar_when_stderr_is_not_a_terminal(env, tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(listing(6000))

    child = syndicate_command(env, "subscriber", "import", str(path), "--newsletter", "daily",
                              stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=300)

    assert child.returncode == 0, err
    assert out.decode().startswith("6000 added")
    assert b"importing" not in err and b"rows/s" not in err


def test_an_import_stopped_by_ctrl_c_says_how_many_rows_are_in_and_how_to_finish(env, console, tmp_path, monkeypatch):
    path = tmp_path / "list.csv"
    path.write_bytes(listing(12_000))
    real, calls = csv_files.import_chunk, []

    def interrupted(*args, **kwargs):  # Ctrl-C as the second batch starts (CHUNK rows per call)
        calls.append(1)
        if len(calls) > csv_files.BATCH // csv_files.CHUNK:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(csv_files, "import_chunk", interrupted)
    code, _, err = console("subscriber", "import", str(path), "--newsletter", "daily")

    assert code != 0
    assert "stopped after 5,000 rows, which are in: import the same file again to finish" in err
    monkeypatch.setattr(csv_files, "import_chunk", real)
    code, out, _ = console("subscriber", "import", str(path), "--newsletter", "daily")
    assert code == 0 and out.startswith("7000 added, 0 updated, 5000 unchanged")
