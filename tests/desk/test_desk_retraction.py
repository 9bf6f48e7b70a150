"""Taking back on the desk and its API: a posted teaser's Retract button (CSRF, a confirmation first, the editor's
name on the row), the story page's Withdraw story, and the same for scripts; X through tweepy talking to
`responses`, or the dry run's outbox."""

from __future__ import annotations

import json
import re

import pytest
import responses
from sqlalchemy import select

from desk_client import add_editor, api_headers, desk_client, dry_run_x_account, fresh_story
from desk_client import signed_in as sign_in
from syndicate.db import transaction
from syndicate.models import Article, Post, utcnow
from syndicate.newsletters import editions, lists
from syndicate.social import accounts, posts

TWEETS = "https://api.twitter.com/2/tweets"


@pytest.fixture
def client(svc):
    add_editor(svc)
    return desk_client()


def posted(svc, live: bool = False) -> tuple[int, int]:
    """A fresh story teased on x-main and published (the dry run's outbox, or X through tweepy): (article, post)."""
    now = utcnow()
    with transaction(svc.Session) as session:
        if live:
            account = accounts.add(session, svc.settings.secret_key, "x-main", "x", dict(window="always"),
                                   dict(consumer_key="ck", consumer_secret="cs", access_token="at",
                                        access_token_secret="ats"))
            account.created_at = now.replace(year=now.year - 1)
        else:
            dry_run_x_account(session, now)
        article = fresh_story(session, now)
        session.flush()
        [post_id] = posts.plan(session, svc.settings, now)
        client, article_id = svc.social_client(session.get(Post, post_id).account), article.id
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1234", "text": "…"}})
        assert posts.publish(svc.Session, svc.settings, client, post_id, token="t").status == "posted"
    return article_id, post_id


def row(svc, post_id: int) -> Post:
    with transaction(svc.Session) as session:
        return session.get(Post, post_id)


def test_an_editor_retracts_a_posted_teaser_after_a_confirmation_and_it_carries_her_name(client, svc):
    _, post_id = posted(svc)
    token = sign_in(client)

    page = client.get(f"/desk/posts/{post_id}").text
    form = re.search(r'<form method="post" action="/desk/posts/\d+" id="retract" data-confirm="([^"]+)">', page)
    assert form and "Delete this post from X?" in form.group(1)
    assert '<button class="danger" type="submit" name="action" value="retract">Retract</button>' in page
    assert client.post(f"/desk/posts/{post_id}", data={"action": "retract"}).status_code == 403  # no CSRF token
    assert row(svc, post_id).status == "posted"

    done = client.post(f"/desk/posts/{post_id}", data={"csrf": token, "action": "retract"})

    assert done.status_code == 303 and done.headers["location"] == f"/desk/posts/{post_id}"
    stored = row(svc, post_id)
    assert (stored.status, stored.retracted_by) == ("retracted", "ada") and stored.retracted_at is not None
    written = svc.settings.outbox / "posts" / f"syndicate-post-{post_id}.retract.json"
    assert json.loads(written.read_text())["request"]["method"] == "DELETE"
    after = client.get(f"/desk/posts/{post_id}").text
    assert ">retracted<" in after and "by ada." in after and 'id="retract"' not in after


def test_a_deletion_x_refuses_is_said_on_the_page_and_the_post_stays_up(client, svc):
    _, post_id = posted(svc, live=True)
    token = sign_in(client)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", status=503, json={"title": "Service Unavailable"})
        answer = client.post(f"/desk/posts/{post_id}", data={"csrf": token, "action": "retract"})

    assert answer.status_code == 200
    assert re.search(r'<p class="error" role="alert">X server error: .*it is still up: try again in a few minutes',
                     answer.text)
    assert row(svc, post_id).status == "posted" and 'id="retract"' in answer.text  # the button is there to try again


def test_an_editor_withdraws_a_story_and_hears_about_each_post_and_the_mails(client, svc):
    article_id, post_id = posted(svc, live=True)
    with transaction(svc.Session) as session:
        newsletter = lists.add_newsletter(session, slug="morning", name="The Morning Briefing",
                                          from_address="news@example.com", cron=None)
        editions.create_edition(session, newsletter, svc.settings, status="draft",
                                articles=[session.get(Article, article_id)])
    token = sign_in(client)
    page = client.get(f"/desk/articles/{article_id}").text
    assert re.search(r'<form method="post" action="/desk/articles/\d+/withdraw" id="withdraw" data-confirm="Withdraw',
                     page)
    assert client.post(f"/desk/articles/{article_id}/withdraw", data={}).status_code == 403

    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", json={"data": {"deleted": True}})
        answer = client.post(f"/desk/articles/{article_id}/withdraw", data={"csrf": token})

    assert answer.status_code == 200
    assert '<span class="status failed">withdrawn</span>' in answer.text and "by ada:" in answer.text
    assert f'<a href="/desk/posts/{post_id}">x-main</a> (x): <strong>retracted</strong> — deleted from X' in answer.text
    assert "The Morning Briefing #1 (draft): it held only this story, so it is cancelled" in answer.text
    assert "No edition that carried it was mailed: there is no mail to recall." in answer.text
    assert row(svc, post_id).retracted_by == "ada"
    with transaction(svc.Session) as session:
        assert session.get(Article, article_id).withdrawn_by == "ada"
    again = client.get(f"/desk/articles/{article_id}").text
    assert "Withdraw story</button>" not in again and "Take back its posts still up" not in again  # nothing left


def test_scripts_retract_a_teaser_and_withdraw_a_story_through_the_api(client, svc):
    article_id, post_id = posted(svc)
    with transaction(svc.Session) as session:
        now = utcnow()
        other = Article(identity="other", url="https://news.example.com/other/", title="Ferry timetable changes",
                        lead="", content_hash="e" * 64, categories=[], published_at=now, first_seen_at=now)
        session.add(other)
        session.flush()
        other_id = other.id
        [waiting] = posts.plan(session, svc.settings, now)
    bearer = api_headers(svc)

    retracted = client.post(f"/api/v1/posts/{post_id}", json={"action": "retract"}, headers=bearer).json()
    withdrawn = client.post(f"/api/v1/articles/{other_id}/withdraw", headers=bearer).json()

    assert (retracted["status"], retracted["retracted_by"]) == ("retracted", "ada")
    assert retracted["retraction"]["outcome"] == "retracted"
    assert withdrawn["withdrawn_by"] == "ada" and withdrawn["mailed"] == [] and not withdrawn["already"]
    assert [(r["post_id"], r["outcome"]) for r in withdrawn["retractions"]] == [(waiting, "cancelled")]
    with transaction(svc.Session) as session:
        assert session.scalar(select(Post.status).where(Post.id == waiting)) == "cancelled"
    assert client.post("/api/v1/articles/999/withdraw", headers=bearer).status_code == 404


def test_in_a_browser_the_retract_button_asks_first_and_a_no_deletes_nothing(browser, served, svc):
    from conftest import sign_in_browser, wait_for
    from desk_client import PASSWORD

    add_editor(svc)
    _, post_id = posted(svc)
    page = browser.new_page()
    sign_in_browser(page, served, "ada", PASSWORD, f"/desk/posts/{post_id}")
    asked = []

    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("#retract button")
    wait_for(lambda: asked, 10, "the confirmation")
    assert asked[0].startswith("Delete this post from X?") and row(svc, post_id).status == "posted"

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#retract button")
    page.wait_for_selector("#retracted")
    assert row(svc, post_id).status == "retracted" and "by ada." in page.inner_text("#retracted")
