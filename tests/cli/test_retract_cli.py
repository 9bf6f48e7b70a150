"""`syndicate post retract` and `syndicate article retract` end to end: accounts added with the CLI, stories
from a local feed, teasers published through the real clients (Mastodon.py talking to `responses`) or the
dry run, then taken back; what a reader was mailed is named, never recalled."""

from __future__ import annotations

import json

import pytest
import responses
from click.testing import CliRunner
from sqlalchemy import select

from conftest import configured
from syndicate.cli.main import main
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.models import Post
from syndicate.social import posts

INSTANCE = "https://social.example"
STATUSES = f"{INSTANCE}/api/v1/statuses"


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
            "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_BASE_URL": "https://news.example",
            "SYNDICATE_ACCOUNT_ACCESS_TOKEN": "masto-secret-token"}


@pytest.fixture
def syndicate(env, feed_server, sample_feed):
    """`syndicate …` in this process; a newsroom with the sample feed, a live Mastodon account and a dry-run X one."""
    runner = CliRunner()

    def run(*args: str, ok: bool = True, input: str | None = None):
        result = runner.invoke(main, list(args), env=env, input=input)
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    run("db", "upgrade")
    run("feed", "add", feed_server.serve("/feed/", sample_feed))
    run("account", "add", "masto", "--network", "mastodon", "--instance", INSTANCE, "--window", "always",
        "--max-age", "0")
    run("account", "add", "x-desk", "--network", "x", "--dry-run", "--window", "always", "--max-age", "0")
    run("feed", "poll", "--all")
    return run




def published(env, account: str, story: int | None = None, status_id: str = "112233") -> int:
    """One post of `account` published as a worker would (its story the first one planned, or `story`):
    Mastodon.py's POST answered by `responses`, or the dry run's outbox. Its id."""
    svc = configured(Settings.from_env(env))
    with transaction(svc.Session) as session:
        query = select(Post).join(Post.account).where(Post.account.has(name=account)).order_by(Post.id)
        post = session.scalars(query.where(Post.article_id == story) if story else query).first()
        client, post_id = svc.social_client(post.account), post.id
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.POST, STATUSES, json={"id": status_id, "url": f"{INSTANCE}/@news/{status_id}"})
        assert posts.publish(svc.Session, svc.settings, client, post_id, token=f"t{post_id}").status == "posted"
    svc.close()
    return post_id


def listed(syndicate, status: str) -> list[dict]:
    return json.loads(syndicate("post", "list", "--status", status, "--json").output)


def test_post_retract_deletes_a_teaser_on_mastodon_and_records_it(syndicate, env):
    post_id = published(env, "masto")

    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{STATUSES}/112233", json={"id": "112233"})
        out = syndicate("post", "retract", str(post_id)).output
        again = syndicate("post", "retract", str(post_id)).output
        assert len(rsps.calls) == 1
        assert rsps.calls[0].request.headers["Authorization"] == "Bearer masto-secret-token"

    assert out == f"post {post_id} (masto, mastodon): retracted: deleted from Mastodon at {INSTANCE}/@news/112233\n"
    assert f"post {post_id} (masto, mastodon): unchanged: taken back already, by cli on " in again
    [row] = listed(syndicate, "retracted")
    assert row["id"] == post_id


def test_post_retract_of_a_waiting_teaser_cancels_it(syndicate):
    waiting = listed(syndicate, "pending")[0]["id"]

    out = syndicate("post", "retract", str(waiting)).output

    assert "cancelled: it had not gone out" in out
    assert waiting in {p["id"] for p in listed(syndicate, "cancelled")}


def test_post_retract_that_leaves_the_post_up_says_why_and_exits_1(syndicate, env, console):
    post_id = published(env, "masto")

    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{STATUSES}/112233", status=503, body="<html>Service Unavailable</html>")
        code, out, err = console("post", "retract", str(post_id))

    assert code == 1 and "Traceback" not in out + err
    assert f"post {post_id} (masto, mastodon): failed: social.example server error (503" in out
    assert "it is still up: try again in a few minutes" in out
    assert listed(syndicate, "posted")[0]["error"].startswith("not taken back: social.example server error")


def test_post_retract_of_no_such_post_is_one_line_that_says_where_to_look(syndicate, console):
    code, out, err = console("post", "retract", "999")

    assert (code, out) == (2, "")
    assert err == "error: no post 999; `syndicate post list` shows them\n"


def test_article_retract_takes_back_every_post_and_names_the_mails_it_went_out_in(syndicate, env):
    syndicate("newsletter", "add", "daily", "--name", "Daily", "--from-address", "news@example.com",
              "--first-fill", "last:10", "--max-age", "0")  # the sample's stories are from 2023
    syndicate("subscriber", "add", "reader@example.org", "--newsletter", "daily", "--confirmed")
    syndicate("edition", "cut", "daily")
    syndicate("deliver")
    masto = published(env, "masto")
    with transaction(configured(Settings.from_env(env)).Session) as session:
        story = session.get(Post, masto).article_id
    dry = published(env, "x-desk", story=story)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{STATUSES}/112233", status=502, body="<html>Bad Gateway</html>")
        first = syndicate("article", "retract", str(story), "--yes", ok=False)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{STATUSES}/112233", json={"id": "112233"})
        second = syndicate("article", "retract", str(story), "--yes")

    assert first.exit_code == 1, first.output
    lines = first.output.splitlines()
    assert lines[0] == (f"article {story} withdrawn: off the public archive and its Atom feed, never posted or put "
                        "in an edition again")
    assert f"post {masto} (masto, mastodon): failed: social.example server error (502" in first.output
    assert f"post {dry} (x-desk, x): retracted: dry run: nothing sent; the deletion X would get is written to " \
           f"{env['SYNDICATE_DATA_DIR']}/outbox/posts" in first.output
    assert "Mails already sent can't be recalled. It went out in:" in first.output
    assert "  Daily #1 (sent, to 1 reader, " in first.output
    assert second.output.startswith(f"article {story} was withdrawn already (by cli, ")
    assert f"post {masto} (masto, mastodon): retracted: deleted from Mastodon" in second.output
    assert f"post {dry} (x-desk, x): unchanged: taken back already" in second.output
    assert "  Daily #1 (sent, to 1 reader, " in second.output
    outbox = env["SYNDICATE_DATA_DIR"] + f"/outbox/posts/syndicate-post-{dry}.retract.json"
    assert json.loads(open(outbox).read())["request"]["method"] == "DELETE"


def test_article_retract_asks_first_and_a_no_changes_nothing(syndicate, env, console):
    post_id = published(env, "masto")
    with transaction(configured(Settings.from_env(env)).Session) as session:
        story = session.get(Post, post_id).article_id

    refused = syndicate("article", "retract", str(story), input="n\n", ok=False)
    code, out, err = console("article", "retract", "999", "--yes")

    assert refused.exit_code == 1 and f"Withdraw article {story} (" in refused.output
    assert "Aborted" in refused.output
    assert post_id in {p["id"] for p in listed(syndicate, "posted")}
    assert (code, err) == (2, "error: no article 999; `syndicate article list` shows their ids\n")


def test_article_retract_of_a_story_in_no_mail_says_there_is_none_to_recall(syndicate):
    story = listed(syndicate, "pending")[0]["article_id"]

    out = syndicate("article", "retract", str(story), "--yes").output

    assert "cancelled: it had not gone out" in out
    assert out.rstrip().endswith("No edition that carried it was mailed: there is no mail to recall.")
