"""An editor shapes an edition from the command line: any story found by a search added, an intro, a blurb and
a sponsor written, the result mailed over real SMTP; a story sent as breaking news now; and a prepared
regular edition rescheduled without a second mail for its morning."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, datetime

import pytest
import time_machine


@pytest.fixture
def env(tmp_path, smtp_server) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
            "SYNDICATE_SMTP_URL": smtp_server.url, "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1",
            "SYNDICATE_BASE_URL": "https://news.example"}


@pytest.fixture
def syndicate(console, feed_server, sample_feed):
    """`syndicate …` through the console script; it must succeed unless `ok=False`. A newsroom with the sample
    feed and a newsletter that takes only Local stories, read by two."""

    def run(*args: str, ok: bool = True) -> tuple[int, str, str]:
        code, out, err = console(*args)
        if ok:
            assert code == 0, (out, err)
        return code, out, err

    run("db", "upgrade")
    run("feed", "add", feed_server.serve("/feed/", sample_feed, **{"Content-Type": "application/rss+xml"}))
    run("newsletter", "add", "morning", "--name", "Morning Briefing", "--from-address", "news@example.com",
        "--include-category", "Local", "--first-fill", "last:10", "--max-age", "0")  # the sample's are from 2023
    run("feed", "poll", "--all")
    for reader in ("a@example.com", "b@example.com"):
        run("subscriber", "add", reader, "--newsletter", "morning", "--confirmed")
    return run


def mails(smtp_server) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m.data, policy=email.policy.default) for m in smtp_server.messages]


def article_id(syndicate, words: str) -> int:
    found = json.loads(syndicate("article", "list", "--search", words, "--json")[1])
    assert len(found) == 1, found
    return found[0]["id"]


def test_an_editor_adds_a_searched_story_writes_an_intro_blurb_and_sponsor_and_readers_get_them(
        syndicate, smtp_server):
    assert "morning/1 (id 1): draft" in syndicate("edition", "cut", "morning", "--draft")[1]
    bakery = article_id(syndicate, "SOURDOUGH")  # outside the newsletter's filter: the editor's pick
    assert "Sourdough" in syndicate("article", "list", "--search", "sourdough")[1]

    out = syndicate("edition", "add", "morning/1", "--story", str(bakery))[1]
    assert "Riverside Library" in out and f"  {bakery}: Local Bakery" in out
    out = syndicate("edition", "edit", "morning/1", "--order", str(bakery), "--intro", "Two *picks* today.",
                    "--blurb", f"{bakery}=Worth a **trip**: [the recipe](https://news.example/recipe).",
                    "--sponsor", "Bristol Bikes: a week free", "--sponsor-url", "https://bikes.example/week")[1]
    assert f"  {bakery}: Local Bakery Wins National Award for Sourdough — and Plans a Second Shop (with a blurb)" in out

    # Mistakes are refused, saying what to do; nothing changes.
    code, _, err = syndicate("edition", "edit", "morning/1", "--sponsor-url", "javascript:alert(1)", ok=False)
    assert code == 2 and "is not a web address a story can link to" in err
    code, _, err = syndicate("edition", "edit", "morning/1", "--blurb", "bakery=Nice", ok=False)
    assert code == 2 and "give ARTICLE_ID=TEXT" in err
    code, _, err = syndicate("edition", "add", "morning/1", "--story", "999", ok=False)
    assert code == 2 and "no article 999" in err

    syndicate("edition", "schedule", "morning/1", "--at", "now")
    assert syndicate("deliver")[1].strip().endswith("2 sent")
    text = mails(smtp_server)[0].get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.index("Two picks today.") < text.index("Local Bakery") < text.index("Worth a trip: the recipe "
                                                                                    "<https://news.example/recipe>.")
    assert text.index("Local Bakery") < text.index("Riverside Library") < text.index(
        "SPONSORED\nBristol Bikes: a week free\nhttps://bikes.example/week")
    html = mails(smtp_server)[0].get_body(("html",)).get_content()
    assert "Two <em>picks</em> today." in html and 'href="https://bikes.example/week"' in html

    code, _, err = syndicate("edition", "add", "morning/1", "--story", str(bakery), ok=False)
    assert code == 2 and "what was sent can't change" in err


def test_an_editor_sends_any_story_as_breaking_news_now_once(syndicate, smtp_server, monkeypatch):
    heatwave = article_id(syndicate, "heatwave")  # Weather: this newsletter's filter would never take it
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("n\n"))
    code, out, err = syndicate("article", "breaking", str(heatwave), "--newsletter", "morning", ok=False)
    assert code == 1 and "to every reader of Morning Briefing?" in out and "aborted" in err
    assert syndicate("deliver")[1].strip() == "nothing to send"

    out = syndicate("article", "breaking", str(heatwave), "--newsletter", "morning", "--yes")[1]
    assert "edition morning/1 (id 1): breaking, sending, 1 batches queued" in out
    assert syndicate("deliver")[1].strip().endswith("2 sent")
    assert {m["Subject"] for m in mails(smtp_server)} == {"Heatwave Pushes Power Grid to Record Demand Across Texas"}

    code, _, err = syndicate("article", "breaking", str(heatwave), "--newsletter", "morning", "--yes", ok=False)
    assert code == 2 and "is in morning/1 (sent) already" in err
    code, _, err = syndicate("article", "breaking", str(heatwave), "--newsletter", "evening", "--yes", ok=False)
    assert code == 2 and "evening" in err

    # A story waiting in a prepared edition leaves it for its breaking one; the rest of it stays.
    syndicate("feed", "poll", "--all")
    syndicate("edition", "cut", "morning", "--draft")
    library = article_id(syndicate, "library")
    bakery = article_id(syndicate, "bakery")
    syndicate("edition", "add", "morning/2", "--story", str(bakery))
    out = syndicate("article", "breaking", str(library), "--newsletter", "morning", "--yes")[1]
    assert "edition morning/2: taken out of it, the rest of it goes as planned" in out
    shown = json.loads(syndicate("edition", "show", "morning/2", "--json")[1])
    assert [s.split(":")[0] for s in shown["stories"]] == [str(bakery)]


def test_a_prepared_regular_edition_rescheduled_makes_the_only_mail_of_its_morning(syndicate, smtp_server):
    with time_machine.travel(datetime(2026, 12, 1, 9, tzinfo=UTC), tick=False) as clock:
        syndicate("newsletter", "add", "daily", "--name", "Daily", "--from-address", "news@example.com",
                  "--cron", "0 7 * * *", "--timezone", "UTC", "--first-fill", "last:10", "--max-items", "2",
                  "--max-age", "0")
        syndicate("subscriber", "add", "a@example.com", "--newsletter", "daily", "--confirmed")
        assert "scheduled for 2026-12-02T07:00:00+00:00" in syndicate("edition", "cut", "daily", "--next")[1]
        out = syndicate("edition", "schedule", "daily/1", "--at", "2026-12-02 08:30")[1]
        assert "scheduled for 2026-12-02T08:30:00+00:00" in out
        listed = json.loads(syndicate("edition", "list", "--newsletter", "daily", "--json")[1])
        assert [(e["kind"], e["status"]) for e in listed] == [("regular", "scheduled")]

        clock.move_to(datetime(2026, 12, 2, 7, 0, 30, tzinfo=UTC))  # the slot: its edition waits for 08:30
        assert syndicate("deliver")[1].strip() == "nothing to send"
        clock.move_to(datetime(2026, 12, 2, 8, 30, 30, tzinfo=UTC))
        assert syndicate("deliver")[1].strip().endswith("1 sent")
        listed = json.loads(syndicate("edition", "list", "--newsletter", "daily", "--json")[1])
    # The other two stories wait for the next morning, not a second mail this one.
    assert [(e["kind"], e["status"]) for e in listed] == [("regular", "sent")]
    assert len(mails(smtp_server)) == 1
