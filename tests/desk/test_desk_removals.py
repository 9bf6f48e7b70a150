"""Removing things on the desk and its API: a feed, a newsletter and a social account each disabled (archived)
or deleted behind a confirmation page that says what happens, refused with why where that would lose history,
and recorded with the editor's name; adding one subscriber and connecting one account, checked as the CLI
checks them, secrets never shown again; the editions list in the navigation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from conftest import configured
from desk_client import add_editor, api_headers, desk_client, dry_run_x_account, fresh_story
from desk_client import signed_in as sign_in
from syndicate import removals
from syndicate.db import transaction
from syndicate.ingest import feeds
from syndicate.models import (
    Article,
    ConfirmationMail,
    Delivery,
    Feed,
    Newsletter,
    Post,
    SocialAccount,
    Subscriber,
    utcnow,
)
from syndicate.newsletters import editions, lists
from syndicate.social import accounts, posts
from syndicate.subscribers import consent


@pytest.fixture
def client(svc):
    add_editor(svc)
    return desk_client()


@pytest.fixture
def bearer(client, svc) -> dict:
    return api_headers(svc)


def newsroom(svc, *, sent: bool = False, feed_filter: bool = False) -> dict:
    """A feed with a story in The Morning Briefing (#1, sent if `sent`), a confirmed reader, and x-main."""
    now = utcnow()
    with transaction(svc.Session) as session:
        feed = feeds.add_feed(session, "https://news.example.com/feed/")
        newsletter = lists.add_newsletter(session, slug="morning", name="The Morning Briefing",
                                          from_address="news@example.com", cron="0 7 * * *",
                                          feed_ids=[feed.id] if feed_filter else None)
        consent.subscribe(session, "reader@example.org", [newsletter.id], confirmed=True)
        dry_run_x_account(session, now, age=timedelta(minutes=5))
        article = fresh_story(session, now)
        article.feed_id = feed.id
        session.flush()
        edition = editions.create_edition(session, newsletter, svc.settings, now=now, status="draft",
                                          articles=[article])
        if sent:
            edition.status, edition.started_at, edition.sent_at = "sent", now, now
        posts.plan(session, svc.settings, now)
        return dict(feed=feed.id, article=article.id, edition=edition.id)


def recorded(svc) -> list[tuple[str, str, str, str]]:
    with transaction(svc.Session) as session:
        return [(r.kind, r.name, r.action, r.by) for r in reversed(removals.recent(session))]


def test_the_navigation_leads_to_the_editions_list_and_the_accounts(client):
    sign_in(client)
    nav = client.get("/desk").text.split("</nav>")[0]
    assert 'href="/desk/editions"' in nav and 'href="/desk/accounts"' in nav and 'href="/desk/removals"' in nav


def test_disabling_a_feed_asks_first_then_stops_fetching_it_and_keeps_its_stories(client, svc):
    made = newsroom(svc)
    token = sign_in(client)
    asked = client.get(f"/desk/feeds/{made['feed']}/disable")
    assert asked.status_code == 200 and "Disable feed 1" in asked.text
    assert "it is not fetched any more" in asked.text and "its 1 story stays" in asked.text
    with transaction(svc.Session) as session:
        assert session.get(Feed, made["feed"]).status == "active"  # asking changed nothing

    assert client.post(f"/desk/feeds/{made['feed']}/disable", data={}).status_code == 403  # no CSRF: refused
    done = client.post(f"/desk/feeds/{made['feed']}/disable", data={"csrf": token})
    assert done.status_code == 303
    with transaction(svc.Session) as session:
        assert session.get(Feed, made["feed"]).status == "disabled"
        assert feeds.due_feed_ids(session, utcnow() + timedelta(days=1)) == []
        assert session.get(Article, made["article"]).feed_id == made["feed"]
    page = client.get("/desk/feeds").text
    assert "Enable" in page and "Disable…" not in page

    assert client.post(f"/desk/feeds/{made['feed']}/enable", data={"csrf": token}).status_code == 303
    with transaction(svc.Session) as session:
        assert session.get(Feed, made["feed"]).status == "active"
    assert recorded(svc) == [("feed", "https://news.example.com/feed/", "disabled", "ada"),
                             ("feed", "https://news.example.com/feed/", "enabled", "ada")]


def test_deleting_a_feed_a_newsletter_filters_on_is_refused_and_otherwise_keeps_its_stories(client, svc):
    made = newsroom(svc, feed_filter=True)
    token = sign_in(client)
    asked = client.get(f"/desk/feeds/{made['feed']}/delete").text
    assert "newsletter morning takes only chosen feeds" in asked and 'id="confirm"' not in asked
    refused = client.post(f"/desk/feeds/{made['feed']}/delete", data={"csrf": token})
    assert refused.status_code == 400 and "disable the feed instead" in refused.text

    with transaction(svc.Session) as session:
        lists.update_newsletter(session, lists.get_newsletter(session, "morning"), feed_ids=None)
    asked = client.get(f"/desk/feeds/{made['feed']}/delete").text
    assert "its 1 story is kept, without a feed" in asked and 'id="confirm"' in asked
    assert client.post(f"/desk/feeds/{made['feed']}/delete", data={"csrf": token}).headers["location"] == "/desk/feeds"
    with transaction(svc.Session) as session:
        assert session.get(Feed, made["feed"]) is None
        assert session.get(Article, made["article"]).feed_id is None
    assert "/desk/removals" in client.get("/desk/feeds").text
    assert "deleted" in client.get("/desk/removals").text


def test_archiving_a_newsletter_cancels_what_wasnt_sent_and_closes_sign_ups(client, svc):
    made = newsroom(svc)
    token = sign_in(client)
    asked = client.get("/desk/newsletters/morning/archive").text
    assert "1 edition not sent yet (#1) is cancelled" in asked and "its public archive /n/morning stays" in asked
    assert client.post("/desk/newsletters/morning/archive", data={"csrf": token}).status_code == 303
    with transaction(svc.Session) as session:
        newsletter = lists.get_newsletter(session, "morning")
        assert (newsletter.status, newsletter.next_run_at) == ("archived", None)
        assert editions.get_edition(session, "morning", 1, public=False).status == "cancelled"
        assert made["edition"]
    page = client.get("/desk/newsletters/morning").text
    assert "Bring it back from the archive" in page and 'id="archived"' in page
    # Gone from the subscribe page and from the desk's add form; a typed one is refused.
    assert "The Morning Briefing" not in desk_client().get("/").text
    assert desk_client().get("/n/morning").status_code == 200  # its public archive stays
    assert 'value="morning"' not in client.get("/desk/subscribers").text.split('id="add"')[1].split("</form>")[0]
    refused = client.post("/desk/subscribers", data={"csrf": token, "email": "new@example.org",
                                                     "newsletter": "morning"})
    assert refused.status_code == 400 and "is archived: it takes no new readers" in refused.text

    assert client.post("/desk/newsletters/morning/resume", data={"csrf": token}).status_code == 303
    assert [r[2] for r in recorded(svc)] == ["archived", "enabled"]


def test_deleting_a_newsletter_that_sent_an_edition_needs_the_box_ticked(client, svc):
    newsroom(svc, sent=True)
    token = sign_in(client)
    asked = client.get("/desk/newsletters/morning/delete").text
    assert 'id="needs-force"' in asked and "archive it instead" in asked
    assert "its 1 subscription is deleted" in asked
    refused = client.post("/desk/newsletters/morning/delete", data={"csrf": token})
    assert refused.status_code == 400 and "needs --force" in refused.text
    with transaction(svc.Session) as session:
        assert session.scalar(select(Newsletter.slug)) == "morning"

    done = client.post("/desk/newsletters/morning/delete", data={"csrf": token, "force": "1"})
    assert done.headers["location"] == "/desk/newsletters"
    with transaction(svc.Session) as session:
        assert session.scalar(select(Newsletter.slug)) is None
        assert session.scalar(select(Subscriber.email)) == "reader@example.org"
    assert recorded(svc)[-1] == ("newsletter", "morning", "deleted", "ada")


def test_disabling_an_account_skips_its_queue_saying_why_and_delete_is_refused_once_it_published(client, svc):
    newsroom(svc)
    token = sign_in(client)
    asked = client.get("/desk/accounts/x-main/disable").text
    assert "its 1 waiting post is skipped" in asked
    assert client.post("/desk/accounts/x-main/disable", data={"csrf": token}).status_code == 303
    with transaction(svc.Session) as session:
        post = session.scalar(select(Post))
        assert post.status == "skipped" and post.error.startswith("not posted: the account x-main was disabled by ada")
        account = accounts.by_name(session, "x-main")
        assert account.status == "disabled"
        post.status, post.posted_at = "posted", utcnow()  # as if it had gone out before
    assert "Enable" in client.get("/desk/accounts").text
    assert "Enable on Accounts" in client.get("/desk").text.split('id="accounts"')[1]  # Today offers no Pause

    asked = client.get("/desk/accounts/x-main/delete").text
    assert "1 post went out on &#39;x-main&#39;" in asked and 'id="confirm"' not in asked
    assert client.post("/desk/accounts/x-main/delete", data={"csrf": token}).status_code == 400
    assert client.post("/desk/accounts/x-main/enable", data={"csrf": token}).status_code == 303
    with transaction(svc.Session) as session:
        assert accounts.by_name(session, "x-main").status == "active"


def test_a_post_the_tick_picked_before_its_account_was_disabled_is_skipped_not_sent(svc):
    newsroom(svc)
    with transaction(svc.Session) as session:
        post = session.scalar(select(Post))
        client, post_id = svc.social_client(post.account), post.id
        accounts.disable(session, post.account, "ada")
        post.status = "pending"  # the tick handed it out a moment before
    done = posts.publish(svc.Session, svc.settings, client, post_id, token="t")
    assert done.status == "skipped" and "was disabled by ada" in done.error


def test_connecting_an_account_checks_it_as_the_cli_does_and_never_shows_the_secret(client, svc):
    token = sign_in(client)
    form = {"csrf": token, "name": "newsroom", "network": "mastodon", "window": "always", "timezone": "UTC",
            "instance": "https://social.example", "mastodon_access_token": ""}
    missing = client.post("/desk/accounts", data=form)
    assert missing.status_code == 400 and "a mastodon account needs access_token" in missing.text
    assert 'value="https://social.example"' in missing.text  # what was typed comes back, secrets don't

    no_server = client.post("/desk/accounts", data=form | {"instance": "", "mastodon_access_token": "sekrit-123"})
    assert no_server.status_code == 400 and "needs its instance" in no_server.text
    assert "sekrit-123" not in no_server.text
    bad_name = client.post("/desk/accounts", data=form | {"name": "News Room", "mastodon_access_token": "sekrit-123"})
    assert bad_name.status_code == 400 and "use lower-case letters" in bad_name.text
    assert "sekrit-123" not in bad_name.text
    assert client.post("/desk/accounts", data=form | {"network": "myspace"}).status_code == 400

    done = client.post("/desk/accounts", data=form | {"mastodon_access_token": "sekrit-123"})
    assert done.status_code == 303 and done.headers["location"].startswith("/desk/accounts?connected=newsroom")
    page = client.get(done.headers["location"]).text
    assert "Connected newsroom" in page and "mastodon (live)" in page and "sekrit-123" not in page
    with transaction(svc.Session) as session:
        row = session.scalar(select(SocialAccount).where(SocialAccount.name == "newsroom"))
        assert "sekrit-123" not in row.credentials
        assert accounts.unseal(svc.settings.secret_key, row.credentials) == {"access_token": "sekrit-123"}

    x_keys = {f"x_{k}": f"{k}-value" for k in accounts.SECRETS["x"]}
    assert client.post("/desk/accounts", data={"csrf": token, "name": "x-news", "network": "x",
                                               **x_keys}).status_code == 303
    assert client.post("/desk/accounts", data={"csrf": token, "name": "sky", "network": "bluesky",
                                               "dry_run": "1"}).status_code == 303
    listed = client.get("/desk/accounts").text
    assert "x (live)" in listed and "bluesky (dry-run)" in listed


def test_adding_a_subscriber_asks_them_to_confirm_unless_consent_is_vouched_for(client, svc):
    newsroom(svc)
    token = sign_in(client)
    bad = client.post("/desk/subscribers", data={"csrf": token, "email": "not an address", "newsletter": "morning"})
    assert bad.status_code == 400 and "is not an email address we can send to" in bad.text
    assert 'value="not an address"' in bad.text
    none = client.post("/desk/subscribers", data={"csrf": token, "email": "a@example.org"})
    assert none.status_code == 400 and "choose at least one newsletter" in none.text

    asked = client.post("/desk/subscribers", data={"csrf": token, "email": "Ann@Example.org", "name": "Ann",
                                                   "newsletter": "morning"})
    assert asked.status_code == 303
    vouched = client.post("/desk/subscribers", data={"csrf": token, "email": "bo@example.org",
                                                     "newsletter": "morning", "vouched": "1"})
    with transaction(svc.Session) as session:
        ann = consent.by_email(session, "ann@example.org")
        assert ann.status == "pending" and ann.name == "Ann"
        assert session.scalar(select(ConfirmationMail.subscriber_id)) == ann.id  # one mail, to Ann only
        bo = consent.by_email(session, "bo@example.org")
        assert bo.status == "confirmed"
    assert vouched.headers["location"] == f"/desk/subscribers/{bo.id}"
    timeline = client.get(f"/desk/subscribers/{bo.id}").text
    assert "consent vouched for by the editor" in timeline and "desk (ada)" in timeline


def test_the_api_removes_and_adds_as_the_pages_do(client, svc, bearer):
    made = newsroom(svc)
    api = desk_client()
    assert api.post(f"/api/v1/feeds/{made['feed']}/disable", headers=bearer).json()["done"] == "disabled"
    assert api.post(f"/api/v1/feeds/{made['feed']}/enable", headers=bearer).json()["status"] == "new"
    assert api.post("/api/v1/newsletters/morning/archive", headers=bearer).json()["done"] == "archived"
    added = api.post("/api/v1/subscribers", headers=bearer, json={"email": "c@example.org", "newsletters": ["morning"]})
    assert added.status_code == 422 and "archived" in added.json()["error"]
    assert api.delete("/api/v1/newsletters/morning", headers=bearer).json()["done"] == "deleted"
    assert api.delete(f"/api/v1/feeds/{made['feed']}", headers=bearer).json()["done"] == "deleted"
    connected = api.post("/api/v1/accounts", headers=bearer, json={
        "name": "masto", "network": "mastodon", "instance": "https://social.example",
        "credentials": {"access_token": "sekrit-456"}})
    assert connected.status_code == 201 and "sekrit-456" not in connected.text
    assert api.post("/api/v1/accounts/x-main/disable", headers=bearer).json()["done"] == "disabled"
    assert api.delete("/api/v1/accounts/masto", headers=bearer).json()["done"] == "deleted"
    assert [r["action"] for r in api.get("/api/v1/removals", headers=bearer).json()] == [
        "deleted", "disabled", "deleted", "deleted", "archived", "enabled", "disabled"]


def test_deletes_leave_the_history_they_promise_on_either_database(database_url, make_settings):
    """The cascades and the detaching are the database's work (foreign keys): SQLite and PostgreSQL alike."""
    svc = configured(make_settings(database_url=database_url))
    made = newsroom(svc, sent=True)
    with transaction(svc.Session) as session:
        session.add(Delivery(edition_id=made["edition"], subscriber_id=session.scalar(select(Subscriber.id)),
                             status="sent", sent_at=utcnow()))
    with transaction(svc.Session) as session:
        feeds.delete_feed(session, feeds.get_feed(session, made["feed"]), "ada")
        lists.delete_newsletter(session, lists.get_newsletter(session, "morning"), "ada", force=True)
        accounts.delete(session, accounts.by_name(session, "x-main"), "ada")
    with transaction(svc.Session) as session:
        assert session.get(Article, made["article"]).feed_id is None  # the story stays, detached
        assert session.scalar(select(Subscriber.email)) == "reader@example.org"
        assert [session.scalar(select(func.count()).select_from(t)) for t in (Delivery, Post, SocialAccount)] == [0] * 3
        assert [(r.kind, r.action) for r in reversed(removals.recent(session))] == [
            ("feed", "deleted"), ("newsletter", "deleted"), ("account", "deleted")]
    svc.close()
