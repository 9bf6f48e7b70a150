"""The editor's commands end to end: a newsletter set up, an edition drafted, previewed, edited, test-sent,
scheduled and delivered over real SMTP, then what happened read back per edition and per subscriber."""

from __future__ import annotations

import email
import email.policy
import json

import pytest
from click.testing import CliRunner

from conftest import cli_in
from syndicate.cli.main import main


@pytest.fixture
def syndicate(tmp_path, smtp_server, feed_server, sample_feed):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
           "SYNDICATE_SMTP_URL": smtp_server.url, "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1",
           "SYNDICATE_BASE_URL": "https://news.example"}
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(main, list(args), env=env)
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    run("db", "upgrade")
    run("feed", "add", feed_server.serve("/feed/", sample_feed, **{"Content-Type": "application/rss+xml"}))
    return run


def subjects(smtp_server) -> list[str]:
    return [email.message_from_bytes(m.data, policy=email.policy.default)["Subject"] for m in smtp_server.messages]


def test_an_editor_runs_an_edition_from_draft_to_inboxes_and_reads_what_happened(syndicate, smtp_server, tmp_path):
    out = syndicate("newsletter", "add", "morning", "--name", "Morning Briefing", "--from-address",
                    "news@example.com", "--timezone", "Europe/Berlin", "--first-fill", "last:10",
                    "--max-age", "0").output  # the sample's stories are from 2023
    assert "next edition at" in out and "07:00:00+01:00" in out
    shown = json.loads(syndicate("newsletter", "show", "morning", "--json").output)
    assert len(shown["next_runs"]) == 5 and all("T07:00:00" in t for t in shown["next_runs"])
    syndicate("feed", "poll", "--all")
    for i in range(3):
        syndicate("subscriber", "add", f"reader{i}@example.com", "--newsletter", "morning", "--confirmed")

    assert "morning/1 (id 1): draft" in syndicate("edition", "cut", "morning", "--draft").output
    html, text = syndicate("edition", "preview", "morning/1", "--out", str(tmp_path / "p")).output.split()
    assert html.endswith(".html") and "Morning Briefing" in open(html, encoding="utf-8").read()
    stories = json.loads(syndicate("edition", "show", "1", "--json").output)["stories"]
    assert len(stories) == 4
    dropped = stories[1].split(":")[0]
    edited = syndicate("edition", "edit", "morning/1", "--remove", dropped, "--subject", "Hand-picked").output
    assert "subject: Hand-picked" in edited and f"  {dropped}:" not in edited

    syndicate("edition", "test-send", "1", "--to", "editor@example.com")
    assert subjects(smtp_server) == ["[Test] Hand-picked"]

    assert "scheduled for 20" in syndicate("edition", "schedule", "1", "--at", "now").output
    assert syndicate("deliver").output.strip().endswith("3 sent")
    assert sorted(subjects(smtp_server)) == ["Hand-picked"] * 3 + ["[Test] Hand-picked"]
    record = json.loads(syndicate("edition", "show", "morning/1", "--json").output)
    assert record["status"] == "sent" and record["counts"]["sent"] == 3 and record["counts"]["pending"] == 0

    # The next edition: one address now refuses mail, and one reader leaves before it goes.
    smtp_server.replies["reader2@example.com"] = "550 5.1.1 <reader2@example.com>: no such user"
    syndicate("edition", "cut", "morning", "--draft")  # holds the story that was removed from #1
    syndicate("edition", "schedule", "morning/2", "--at", "now")
    syndicate("edition", "pause", "morning/2")
    assert "nothing to send" in syndicate("deliver").output  # paused: held past its time
    syndicate("edition", "resume", "morning/2")
    syndicate("deliver")
    timeline = syndicate("subscriber", "show", "reader2@example.com").output
    assert "reader2@example.com: bounced" in timeline
    assert "delivered" in timeline and "morning/1" in timeline
    assert "failed" in timeline and "550 5.1.1" in timeline and "bounce" in timeline
    data = json.loads(syndicate("subscriber", "show", "reader2@example.com", "--json").output)
    assert [e["what"] for e in data["timeline"]][-2:] == ["failed", "bounce"] or \
        [e["what"] for e in data["timeline"]][-2:] == ["bounce", "failed"]

    # The reader fixed their mailbox and asked to come back: the editor restores the address.
    assert "confirmed again; gets morning" in syndicate("subscriber", "restore", "reader2@example.com",
                                                        "--reason", "reader asked by phone").output
    assert "restored" in syndicate("subscriber", "show", "reader2@example.com").output
    refused = syndicate("subscriber", "restore", "reader0@example.com", "--reason", "x", ok=False)
    assert "nothing to restore" in str(refused.exception or refused.output)

    syndicate("edition", "cut", "morning", "--next")  # nothing new: skipped and said so
    listed = json.loads(syndicate("edition", "list", "--json").output)
    assert [e["status"] for e in listed][0] == "skipped"


def test_editor_mistakes_get_clear_errors(syndicate):
    syndicate("newsletter", "add", "morning", "--name", "M", "--from-address", "m@example.com")
    bad = syndicate("newsletter", "edit", "morning", "--subject", "{{ top.title", ok=False)
    assert bad.exit_code != 0 and "subject template" in str(bad.exception or bad.output)
    missing = syndicate("edition", "show", "morning/9", ok=False)
    assert "no edition 9" in str(missing.exception or missing.output)
    when = syndicate("edition", "cut", "morning", "--at", "tomorrow morning", ok=False)
    assert "is not a time" in when.output


def test_deliver_sends_an_edition_without_a_worker_on_either_database(database_url, tmp_path, smtp_server,
                                                                      feed_server, sample_feed):
    # No Redis and no SYNDICATE_SEND_RATE: the pacing bucket lives in the database, where PostgreSQL's json
    # type once refused the unlimited rate and every message was deferred.
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
           "SYNDICATE_SMTP_URL": smtp_server.url, "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1",
           "SYNDICATE_BASE_URL": "https://news.example", "SYNDICATE_DATABASE_URL": database_url}
    run = cli_in(env)

    run("db", "upgrade")
    run("feed", "add", feed_server.serve("/feed/", sample_feed, **{"Content-Type": "application/rss+xml"}))
    run("newsletter", "add", "morning", "--name", "Morning Briefing", "--from-address", "news@example.com",
        "--first-fill", "last:10", "--max-age", "0")  # the sample's stories are from 2023
    run("feed", "poll", "--all")
    for i in range(3):
        run("subscriber", "add", f"reader{i}@example.com", "--newsletter", "morning", "--confirmed")
    run("edition", "cut", "morning")
    assert run("deliver").strip().endswith("3 sent")
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == [f"reader{i}@example.com" for i in range(3)]
