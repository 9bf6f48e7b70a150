"""Removing things from the CLI: a feed disabled, enabled and deleted, a newsletter archived and deleted, a
social account disabled, enabled and deleted; each says first what it takes along, asks (or takes --yes),
refuses with why where its dependants would lose their history, and is recorded."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from conftest import configured
from syndicate import removals, tasks
from syndicate.cli.main import main
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.errors import SyndicateError
from syndicate.models import Article, Post, Subscriber
from syndicate.social import posts


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
            "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_BASE_URL": "https://news.example"}


@pytest.fixture
def syndicate(env, feed_server, sample_feed):
    """`syndicate …` in this process, on a newsroom with the sample feed (feed 1) and a dry-run X account."""
    runner = CliRunner()

    def run(*args: str, ok: bool = True, input: str | None = None):
        result = runner.invoke(main, list(args), env=env, input=input)
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    def refused(*args: str) -> str:
        """What the console script says on stderr (`error: …`, exit status 2) when it refuses."""
        result = runner.invoke(main, list(args), env=env)
        assert isinstance(result.exception, SyndicateError), (result.output, result.exception)
        return str(result.exception)

    run.refused = refused

    run("db", "upgrade")
    run("feed", "add", feed_server.serve("/feed/", sample_feed))
    run("account", "add", "x-desk", "--network", "x", "--dry-run", "--window", "always", "--max-age", "0")
    run("newsletter", "add", "morning", "--name", "The Morning Briefing", "--from-address", "news@example.com",
        "--first-fill", "last:50", "--max-age", "0")  # the sample feed's stories are from 2023
    run("subscriber", "add", "reader@example.org", "--newsletter", "morning", "--confirmed")
    return run


def services_of(env):
    return configured(Settings.from_env(env))


def recorded(env) -> list[tuple[str, str, str, str]]:
    svc = services_of(env)
    with transaction(svc.Session) as session:
        rows = [(r.kind, r.name, r.action, r.by) for r in reversed(removals.recent(session))]
    svc.close()
    return rows


def test_a_disabled_feed_is_not_fetched_its_stories_stay_and_enable_brings_it_back(syndicate, env, feed_server):
    syndicate("feed", "poll", "--all")
    stories = len(json.loads(syndicate("article", "list", "--json").output))
    assert stories == 4

    asked = syndicate("feed", "disable", "1", input="n\n", ok=False)
    assert asked.exit_code == 1 and "Disable feed 1" in asked.output and "its 4 stories stay" in asked.output
    assert json.loads(syndicate("feed", "list", "--json").output)[0]["status"] == "active"  # nothing done

    assert "feed 1: disabled" in syndicate("feed", "disable", "1", input="y\n").output
    fetched = len(feed_server.requests)
    syndicate("feed", "poll", "--all")
    assert len(feed_server.requests) == fetched  # not fetched
    assert len(json.loads(syndicate("article", "list", "--json").output)) == stories
    assert "disabled already" in syndicate.refused("feed", "disable", "1", "--yes")

    syndicate("feed", "enable", "1")
    syndicate("feed", "poll", "--all")
    assert len(feed_server.requests) == fetched + 1
    assert recorded(env) == [("feed", feed_server.base + "/feed/", "disabled", "cli"),
                             ("feed", feed_server.base + "/feed/", "enabled", "cli")]


def test_deleting_a_feed_keeps_its_stories_and_sent_editions_whole(syndicate, env):
    syndicate("feed", "poll", "--all")
    syndicate("edition", "cut", "morning")
    syndicate("deliver")
    sent = json.loads(syndicate("edition", "list", "--json").output)[0]
    assert sent["status"] == "sent"
    syndicate("newsletter", "edit", "morning", "--feed", "1")

    refused = syndicate.refused("feed", "delete", "1", "--yes")
    assert "newsletter morning takes only chosen feeds" in refused and "feed disable 1" in refused

    syndicate("newsletter", "edit", "morning", "--all-feeds")
    done = syndicate("feed", "delete", "1", "--yes").output
    assert "its 4 stories are kept, without a feed: 4 went out in editions" in done
    assert json.loads(syndicate("feed", "list", "--json").output) == []
    assert {a["feed_id"] for a in json.loads(syndicate("article", "list", "--json").output)} == {None}
    shown = json.loads(syndicate("edition", "show", str(sent["id"]), "--json").output)
    assert len(shown["stories"]) == 4 and shown["html_bytes"] > 1000
    assert recorded(env)[-1][2] == "deleted"


def test_archiving_a_newsletter_stops_its_editions_and_sign_ups_and_keeps_its_readers(syndicate, env, tmp_path):
    syndicate("feed", "poll", "--all")
    syndicate("edition", "cut", "morning", "--draft")
    out = syndicate("newsletter", "archive", "morning", "--yes").output
    assert "1 edition not sent yet (#1) is cancelled" in out and "its 1 subscription stays" in out
    assert "newsletter morning: archived" in out
    listed = json.loads(syndicate("newsletter", "list", "--json").output)[0]
    assert (listed["status"], listed["next_run_at"]) == ("archived", None)
    assert json.loads(syndicate("edition", "list", "--json").output)[0]["status"] == "cancelled"

    refused = syndicate.refused("subscriber", "add", "new@example.org", "--newsletter", "morning")
    assert "The Morning Briefing is archived: it takes no new readers" in refused
    assert json.loads(syndicate("subscriber", "show", "reader@example.org", "--json").output)[
        "subscriptions"][0]["status"] == "active"
    assert "is archived" in syndicate.refused("newsletter", "pause", "morning")

    # A CSV import can't add readers to it either: not as the file's newsletter, nor in a row's own cell.
    syndicate("newsletter", "add", "weekly", "--name", "The Weekly", "--from-address", "news@example.com")
    (tmp_path / "readers.csv").write_text("email,newsletters\nann@example.org,morning\nbo@example.org,weekly\n")
    chosen = syndicate.refused("subscriber", "import", str(tmp_path / "readers.csv"), "--newsletter", "morning")
    assert "newsletter morning is archived: it takes no new readers" in chosen
    syndicate("subscriber", "import", str(tmp_path / "readers.csv"), "--report", str(tmp_path / "report.csv"),
              ok=False)  # exit status 1: a row was refused
    report = (tmp_path / "report.csv").read_text()
    assert "'morning' is archived: it takes no new readers" in report and "bo@example.org" not in report

    assert "active" in syndicate("newsletter", "resume", "morning").output
    syndicate("subscriber", "add", "new@example.org", "--newsletter", "morning")
    assert [r[2] for r in recorded(env)] == ["archived", "enabled"]


def test_deleting_a_newsletter_that_sent_editions_needs_force_and_says_what_goes(syndicate, env):
    syndicate("feed", "poll", "--all")
    syndicate("edition", "cut", "morning")
    syndicate("deliver")

    refused = syndicate.refused("newsletter", "delete", "morning", "--yes")
    assert "has sent 1 edition (1 mails): archive it instead" in refused and "--force" in refused
    asked = syndicate("newsletter", "delete", "morning", "--force", input="n\n", ok=False)
    assert asked.exit_code == 1 and "its 1 subscription is deleted" in asked.output
    assert "with their 1 deliveries (1 mails sent)" in asked.output
    assert len(json.loads(syndicate("newsletter", "list", "--json").output)) == 1

    syndicate("newsletter", "delete", "morning", "--force", "--yes")
    assert json.loads(syndicate("newsletter", "list", "--json").output) == []
    assert json.loads(syndicate("edition", "list", "--json").output) == []
    svc = services_of(env)
    with transaction(svc.Session) as session:  # the reader stays; the stories are free for other newsletters
        assert session.scalar(select(Subscriber.email)) == "reader@example.org"
        assert len(session.scalars(select(Article)).all()) == 4
        kind, name, action, detail = session.execute(select(removals.Removal.kind, removals.Removal.name,
                                                            removals.Removal.action, removals.Removal.detail)).one()
    svc.close()
    assert (kind, name, action) == ("newsletter", "morning", "deleted") and detail.startswith("forced: ")


def test_a_disabled_account_posts_nothing_and_its_queue_is_skipped_saying_why(syndicate, env):
    syndicate("feed", "poll", "--all")
    waiting = json.loads(syndicate("post", "list", "--status", "pending", "--json").output)
    assert len(waiting) == 4
    out = syndicate("account", "disable", "x-desk", "--yes").output
    assert "its 4 waiting posts are skipped" in out

    skipped = json.loads(syndicate("post", "list", "--status", "skipped", "--json").output)
    assert len(skipped) == 4
    assert all(p["error"].startswith("not posted: the account x-desk was disabled by cli") for p in skipped)
    svc = configured(Settings.from_env(env), eager=True)
    tasks.social_tick()  # the tick: nothing goes
    svc.close()
    assert json.loads(syndicate("post", "list", "--status", "posted", "--json").output) == []
    assert "account enable x-desk" in syndicate.refused("account", "resume", "x-desk")

    syndicate("account", "enable", "x-desk")
    syndicate("feed", "poll", "--all")  # no new stories: nothing of the old ones is planned again
    assert json.loads(syndicate("post", "list", "--status", "pending", "--json").output) == []


def test_deleting_an_account_that_published_is_refused_and_one_that_didnt_goes(syndicate, env):
    syndicate("account", "add", "spare", "--network", "mastodon", "--dry-run")
    syndicate("feed", "poll", "--all")
    svc = services_of(env)
    with transaction(svc.Session) as session:
        post = session.scalars(select(Post).join(Post.account).where(Post.account.has(name="x-desk"))).first()
        client, post_id = svc.social_client(post.account), post.id
    assert posts.publish(svc.Session, svc.settings, client, post_id, token="t").status == "posted"
    svc.close()

    refused = syndicate.refused("account", "delete", "x-desk", "--yes")
    assert "1 post went out on 'x-desk'" in refused and "account disable x-desk" in refused

    spare = syndicate("account", "delete", "spare", "--yes").output
    assert "its 4 unpublished posts are deleted" in spare
    syndicate("account", "disable", "x-desk", "--yes")
    names = [a["name"] for a in json.loads(syndicate("account", "list", "--json").output)]
    assert names == ["x-desk"]
    assert [r[2] for r in recorded(env)] == ["deleted", "disabled"]


def test_deleting_the_last_account_doesnt_bring_back_the_default_one(syndicate):
    syndicate("account", "delete", "x-desk", "--yes")
    syndicate("feed", "poll", "--all")  # plans posts: with no account at all, a default "x" was made
    assert json.loads(syndicate("account", "list", "--json").output) == []
