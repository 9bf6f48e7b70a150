"""The `syndicate` command: the demo end to end, the list commands, clear errors and --help everywhere."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from syndicate.cli.main import main


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s"}


@pytest.fixture
def syndicate(env):
    """Run one `syndicate …` command in this process, as the console script would see it."""
    runner = CliRunner()

    def run(*args: str, **extra_env: str):
        return runner.invoke(main, list(args), env={**env, **extra_env}, catch_exceptions=True)

    return run


def files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def parse(path: Path) -> email.message.EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


# ── the demo ─────────────────────────────────────────────────────────────────


@pytest.fixture(params=[0o022, 0o000], ids=["umask 022", "umask 000"])
def umask(request):
    """The process's umask for one test: a shared host's default, and the most careless."""
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def test_the_demo_leaves_its_database_key_and_outbox_to_the_owner_alone(syndicate, tmp_path, umask):
    result = CliRunner().invoke(  # no SYNDICATE_SECRET_KEY: the demo makes and keeps its own
        main, ["demo"], env={"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": ""})

    assert result.exit_code == 0, result.output
    data = tmp_path / "data"
    made = {data / "syndicate.db", data / "secret_key"}
    made |= set((data / "outbox" / "mail").glob("*.eml")) | set((data / "outbox" / "posts").glob("*.json"))
    assert len(made) == 2 + 3 + 4
    everything = [data, *data.rglob("*")]
    assert made <= set(everything)
    modes = {path.relative_to(tmp_path).as_posix(): oct(path.stat().st_mode & 0o777) for path in everything}
    assert modes == {name: oct(0o700 if (tmp_path / name).is_dir() else 0o600) for name in modes}


def test_it_runs_the_demo_into_the_outbox_in_dry_run(syndicate, tmp_path):
    result = syndicate("demo")

    assert result.exit_code == 0, result.output
    outbox = tmp_path / "data" / "outbox"
    assert len(list((outbox / "mail").glob("*.eml"))) == 3
    payloads = sorted((outbox / "posts").glob("*.json"))
    assert len(payloads) == 4
    for path in payloads:
        request = json.loads(path.read_text(encoding="utf-8"))["request"]
        assert request["method"] == "POST" and request["url"] == "https://api.twitter.com/2/tweets"
        assert request["json"]["text"].strip()
    previews = list((outbox / "editions").glob("*.html"))
    assert len(previews) == 1
    assert "<html" in previews[0].read_text(encoding="utf-8").lower()
    assert "dry-run" in result.stdout


def test_it_writes_demo_mails_a_mailbox_provider_accepts(syndicate, tmp_path):
    assert syndicate("demo").exit_code == 0
    mails = sorted((tmp_path / "data" / "outbox" / "mail").glob("*.eml"))

    assert len(mails) == 3
    message_ids = set()
    for path in mails:
        message = parse(path)
        assert message.get_content_type() == "multipart/alternative"
        assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
        unsubscribe = message["List-Unsubscribe"]
        links = [link.strip().strip("<>") for link in unsubscribe.split(",")]
        assert any(link.startswith(("https://", "http://")) and "/u/" in link for link in links), unsubscribe
        # No inbound path is configured in the demo: nothing would read a mailto, so none is offered.
        assert not any(link.startswith("mailto:") for link in links), unsubscribe
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Message-ID"] and message["Date"] and message["List-Id"]
        assert message["Date"].datetime is not None
        subject = str(message["Subject"])
        assert subject and "\n" not in subject and "\r" not in subject
        message_ids.add(message["Message-ID"])
    assert len(message_ids) == 3


def test_it_sends_nothing_twice_when_the_demo_runs_again(syndicate, tmp_path):
    assert syndicate("demo").exit_code == 0
    written = files(tmp_path / "data" / "outbox")

    again = syndicate("demo")

    assert again.exit_code == 0, again.output
    assert files(tmp_path / "data" / "outbox") == written
    assert "Nothing new, so nothing was sent" in again.stdout
    assert "not sent again" in again.stdout


def test_it_writes_the_demo_into_the_outbox_given(syndicate, tmp_path):
    outbox = tmp_path / "elsewhere"

    result = syndicate("demo", "--outbox", str(outbox))

    assert result.exit_code == 0, result.output
    assert len(list((outbox / "mail").glob("*.eml"))) == 3
    assert len(list((outbox / "posts").glob("*.json"))) == 4
    assert list((outbox / "editions").glob("*.html"))
    assert not (tmp_path / "data" / "outbox").exists()


def test_the_demo_keeps_its_data_out_of_the_folder_syndicate_run_uses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nothing_set = {"SYNDICATE_DATA_DIR": None, "SYNDICATE_DATABASE_URL": None, "SYNDICATE_OUTBOX": None,
                   "SYNDICATE_SECRET_KEY": None}
    runner = CliRunner()

    result = runner.invoke(main, ["demo"], env=nothing_set)

    assert result.exit_code == 0, result.output
    demo_data = tmp_path / "syndicate-demo"
    assert len(list((demo_data / "outbox" / "mail").glob("*.eml"))) == 3
    assert not (tmp_path / "syndicate-data").exists()
    assert f"Data: {demo_data}" in result.output
    assert f"rm -rf {demo_data}" in result.output
    # "Running it" in the same folder: a fresh database, no 07:00 newsletter, no made-up readers.
    assert runner.invoke(main, ["db", "upgrade"], env=nothing_set).exit_code == 0
    for group in ("newsletter", "subscriber", "feed"):
        listed = runner.invoke(main, [group, "list", "--json"], env=nothing_set)
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.output) == [], group


def test_the_demo_goes_where_it_is_told_and_then_suggests_no_removal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    told = tmp_path / "my demo"

    result = CliRunner().invoke(main, ["demo", "--data-dir", str(told)],
                                env={"SYNDICATE_DATA_DIR": None, "SYNDICATE_DATABASE_URL": None,
                                     "SYNDICATE_OUTBOX": None})

    assert result.exit_code == 0, result.output
    assert (told / "syndicate.db").is_file()
    assert not (tmp_path / "syndicate-demo").exists() and not (tmp_path / "syndicate-data").exists()
    assert "rm -rf" not in result.output  # a folder the operator named may hold more than the demo's


# ── listing ──────────────────────────────────────────────────────────────────


def test_it_lists_the_demo_articles_as_json(syndicate):
    assert syndicate("demo").exit_code == 0

    result = syndicate("article", "list", "--json")

    assert result.exit_code == 0, result.output
    articles = json.loads(result.stdout)
    assert len(articles) == 4
    assert all(a["url"].startswith("https://truthusa.example/") and a["title"] for a in articles)


@pytest.mark.parametrize("group, expected", [
    ("feed", 1), ("edition", 1), ("post", 4), ("subscriber", 3), ("newsletter", 1),
])
def test_it_prints_valid_json_from_every_list_command(syndicate, group, expected):
    assert syndicate("demo").exit_code == 0

    result = syndicate(group, "list", "--json")

    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and len(rows) == expected


# ── clear errors ─────────────────────────────────────────────────────────────




@pytest.mark.parametrize("option, complaint", [
    (["--cron", "61 7 * * *"], "bad cron expression '61 7 * * *'"),
    (["--cron", "every morning"], "bad cron expression"),
    (["--timezone", "Mars/Olympus_Mons"], "unknown time zone 'Mars/Olympus_Mons'"),
])
def test_it_refuses_a_newsletter_with_a_bad_schedule_and_says_why(syndicate, console, option, complaint):
    assert syndicate("db", "upgrade").exit_code == 0
    args = ["newsletter", "add", "daily", "--name", "Daily", "--from-address", "news@example.com", *option]

    result = syndicate(*args)
    assert result.exit_code != 0
    assert complaint in str(result.exception)

    code, out, err = console(*args)
    assert code != 0
    assert complaint in err
    assert "Traceback" not in err
    assert json.loads(syndicate("newsletter", "list", "--json").stdout) == []


def test_it_refuses_a_feed_that_is_not_http(syndicate, console):
    assert syndicate("db", "upgrade").exit_code == 0

    result = syndicate("feed", "add", "ftp://x")
    assert result.exit_code != 0
    assert "give a full http:// or https:// URL" in str(result.exception)

    code, out, err = console("feed", "add", "ftp://x")
    assert code != 0
    assert "'ftp://x' is not a web address we can fetch: give a full http:// or https:// URL" in err
    assert "Traceback" not in err
    assert json.loads(syndicate("feed", "list", "--json").stdout) == []


@pytest.mark.parametrize("url", ["http://0177.0.0.1/", "http://2130706433/", "http://0x7f.1/feed", "http://127.1/"])
def test_it_refuses_a_feed_whose_host_is_an_ip_address_in_an_odd_form(syndicate, console, url):
    # Octal, a single number, hex, a short form: programs disagree on what these are (0177 is 127 or 177).
    assert syndicate("db", "upgrade").exit_code == 0

    code, out, err = console("feed", "add", url)

    assert code != 0
    assert "IPv4 address written in a short, octal or hexadecimal form" in err
    assert "write it as four decimal numbers" in err
    assert "Traceback" not in err
    assert json.loads(syndicate("feed", "list", "--json").stdout) == []


def test_it_names_a_malformed_setting_in_one_line_without_a_traceback(tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
    environment.update(SYNDICATE_DATA_DIR=str(tmp_path / "data"), SYNDICATE_SECRET_KEY="s",
                       SYNDICATE_BATCH_SIZE="abc")
    script = Path(sys.executable).with_name("syndicate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "syndicate"]

    done = subprocess.run([*command, "feed", "list"], env=environment, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)

    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "SYNDICATE_BATCH_SIZE" in lines[0]
    assert "Traceback" not in done.stderr


# ── --help everywhere ────────────────────────────────────────────────────────


def every_command(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += every_command(command, (*path, name))
        else:
            found.append((*path, name))
    return found


COMMANDS = every_command(main)


def test_it_knows_the_commands_it_documents():
    names = {" ".join(path) for path in COMMANDS}
    assert {"demo", "run", "web", "deliver", "db upgrade", "feed add", "feed poll", "article list",
            "newsletter add", "edition cut", "subscriber add", "post list"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "syndicate")
def test_it_answers_help_for_every_command(path, tmp_path):
    # Any environment at all, even a broken one: --help never reads the settings.
    result = CliRunner().invoke(main, [*path, "--help"],
                                env={"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_BATCH_SIZE": "abc"})

    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert not (tmp_path / "data").exists()


def test_tables_say_each_times_zone_and_print_values_not_python(syndicate, console, tmp_path):
    """A Berlin newsletter's editions in Berlin time, labelled; counts as words; lists as lists; a note with
    line breaks on one line. --json keeps the data."""
    assert syndicate("demo").exit_code == 0  # a newsletter, a feed, three readers, an edition sent
    assert syndicate("newsletter", "add", "local", "--name", "Local", "--from-address", "local@news.example",
                     "--timezone", "Europe/Berlin", "--cron", "0 7 * * *").exit_code == 0
    code, out, _ = console("newsletter", "list")
    assert code == 0
    local = next(line for line in out.splitlines() if line.startswith("local "))
    assert re.search(r"\d{4}-\d\d-\d\d 07:00 CES?T", local), local  # 07:00 as scheduled, and which zone
    code, out, _ = console("edition", "list")
    assert code == 0 and "{" not in out and "'" not in out
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d (UTC|CES?T)", out) and "3 sent" in out
    code, out, _ = console("subscriber", "list")
    assert code == 0 and "[" not in out
    code, out, _ = console("edition", "list", "--json")
    assert json.loads(out)[0]["deliveries"] == {"sent": 3}
