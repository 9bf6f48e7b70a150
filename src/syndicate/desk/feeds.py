"""Feeds and articles: each feed's health, adding one, fetching one now; the recent articles and where each
one went (editions, posts); sending one as breaking news now; withdrawing one."""

from __future__ import annotations

import dataclasses

from fastapi import Depends, Form, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.desk import trail
from syndicate.desk.core import Svc, api, api_editor, back, confirmation, csrf_checked, editor, page, pages
from syndicate.errors import InvalidInput
from syndicate.ingest import feeds
from syndicate.models import MAX_ID, RowId, utcnow
from syndicate.newsletters import lists, stored
from syndicate.services import Services
from syndicate.social import retraction
from syndicate.tasks import deliver_batch, hand_over, poll_feed_batch


def _overview(svc: Services) -> list[dict]:
    with transaction(svc.Session) as session:
        return feeds.overview(session, utcnow())


def _add(svc: Services, url: str) -> dict:
    with transaction(svc.Session) as session:
        feed = feeds.add_feed(session, url)
        record = feeds.health(feed, utcnow())
    # After the commit, so the task finds the row; the editor sees its health without waiting for the beat.
    hand_over(poll_feed_batch, [record["id"]])  # the broker away: the beat polls it when due
    return record


def _poll(svc: Services, feed_id: int) -> dict:
    with transaction(svc.Session) as session:
        feed = feeds.get_feed(session, feed_id)
        if feed.status != "active":
            raise InvalidInput(f"feed {feed_id} is {feed.status}: it is not fetched any more")
        record = feeds.health(feed, utcnow())
    poll_feed_batch.delay([feed_id])  # after the commit, like every task
    return record


def _feed_filter(feed: str) -> int | None:
    """The articles page's feed filter: empty is every feed (a <select>'s "all" sends feed=)."""
    if not feed.strip():
        return None
    if not feed.strip().isdecimal() or not 0 < int(feed) <= MAX_ID:
        raise InvalidInput(f"{feed!r} is not a feed id")
    return int(feed)


def _articles(svc: Services, q: str, feed_id: int | None, page_number: int) -> dict:
    with transaction(svc.Session) as session:
        return trail.recent(session, q, feed_id, page_number)


def _trail(svc: Services, article_id: int) -> dict:
    with transaction(svc.Session) as session:
        return trail.article_trail(session, article_id)


def _newsletters(svc: Services) -> list[dict]:
    with transaction(svc.Session) as session:
        return [dict(slug=n.slug, name=n.name) for n in stored.all_newsletters(session)]


def _breaking(svc: Services, article_id: int, slug: str) -> dict:
    """As `syndicate article breaking`: the story on its own to every reader of the newsletter, now."""
    if not slug.strip():
        raise InvalidInput("choose the newsletter whose readers get it")
    with transaction(svc.Session) as session:
        newsletter = lists.get_newsletter(session, slug.strip())
        cut, moved = sending.send_breaking(session, newsletter, article_id, svc.settings)
        record = dict(newsletter=newsletter.name, slug=newsletter.slug, number=cut.edition.number,
                      status=cut.edition.status, link=f"/desk/editions/{cut.edition.id}", edition_id=cut.edition.id,
                      moved=moved, batches_queued=len(cut.batches))
    for batch in cut.batches:  # after the commit: a worker must find the rows
        hand_over(deliver_batch, *batch)  # the broker away: the tick hands out rows left pending
    return record


def _withdraw(svc: Services, article_id: int, editor_name: str) -> dict:
    """Withdraw the story (its posts taken back over the network, outside any transaction): what happened."""
    done = retraction.withdraw(svc.Session, svc.settings, svc.social_client, article_id, by=editor_name)
    return dataclasses.asdict(done)


# ── pages ────────────────────────────────────────────────────────────────────


@pages.get("/feeds", response_class=HTMLResponse)
def feeds_page(request: Request, svc: Svc, name: str = Depends(editor)):
    return page("feeds", request, editor=name, feeds=_overview(svc), url="", error=None)


@pages.post("/feeds", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def add_feed(request: Request, svc: Svc, url: str = Form(""), name: str = Depends(editor)):
    try:
        added = _add(svc, url)
    except InvalidInput as e:  # the form again, with what was typed
        return page("feeds", request, 400, editor=name, feeds=_overview(svc), url=url, error=str(e))
    return back(f"/desk/feeds#feed-{added['id']}")


@pages.post("/feeds/{feed_id}/poll", dependencies=[Depends(csrf_checked)])
def poll_feed(feed_id: RowId, svc: Svc, name: str = Depends(editor)):
    _poll(svc, feed_id)
    return back(f"/desk/feeds#feed-{feed_id}")


REMOVALS = {"disable": ("Disable", feeds.disable_plan, feeds.disable_feed),
            "delete": ("Delete", feeds.delete_plan, feeds.delete_feed)}


def _remove(svc: Services, feed_id: int, action: str, editor_name: str) -> dict:
    """Disable or delete a feed (InvalidInput, saying why, when it can't be); what it took along."""
    _, _, act = REMOVALS[action]
    with transaction(svc.Session) as session:
        plan = act(session, feeds.get_feed(session, feed_id), editor_name)
    return dict(id=feed_id, done=action + "d", consequences=plan.consequences)


def _enable(svc: Services, feed_id: int, editor_name: str) -> dict:
    with transaction(svc.Session) as session:
        return feeds.health(feeds.enable_feed(session, feeds.get_feed(session, feed_id), editor_name), utcnow())


def _removal_page(request: Request, svc: Services, feed_id: int, action: str, name: str,
                  error: str | None = None) -> HTMLResponse:
    verb, planned, _ = REMOVALS[action]
    with transaction(svc.Session) as session:
        plan = planned(session, feeds.get_feed(session, feed_id))
    return confirmation(request, name, verb, plan, f"/desk/feeds/{feed_id}/{action}", f"/desk/feeds#feed-{feed_id}",
                        error)


def _removal_post(request: Request, svc: Services, feed_id: int, action: str, name: str):
    try:
        _remove(svc, feed_id, action, name)
    except InvalidInput as e:  # it changed since the page was shown: the page again, saying why
        return _removal_page(request, svc, feed_id, action, name, str(e))
    return back("/desk/feeds" if action == "delete" else f"/desk/feeds#feed-{feed_id}")


@pages.get("/feeds/{feed_id}/disable", response_class=HTMLResponse)
def disable_page(request: Request, feed_id: RowId, svc: Svc, name: str = Depends(editor)):
    """What disabling the feed does, and the button that does it."""
    return _removal_page(request, svc, feed_id, "disable", name)


@pages.post("/feeds/{feed_id}/disable", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def disable_feed(request: Request, feed_id: RowId, svc: Svc, name: str = Depends(editor)):
    return _removal_post(request, svc, feed_id, "disable", name)


@pages.get("/feeds/{feed_id}/delete", response_class=HTMLResponse)
def delete_page(request: Request, feed_id: RowId, svc: Svc, name: str = Depends(editor)):
    """What deleting the feed does (or why it can't be), and the button that does it."""
    return _removal_page(request, svc, feed_id, "delete", name)


@pages.post("/feeds/{feed_id}/delete", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def delete_feed(request: Request, feed_id: RowId, svc: Svc, name: str = Depends(editor)):
    return _removal_post(request, svc, feed_id, "delete", name)


@pages.post("/feeds/{feed_id}/enable", dependencies=[Depends(csrf_checked)])
def enable_feed(feed_id: RowId, svc: Svc, name: str = Depends(editor)):
    _enable(svc, feed_id, name)
    hand_over(poll_feed_batch, [feed_id])  # fetched now, as a new feed is
    return back(f"/desk/feeds#feed-{feed_id}")


@pages.get("/articles", response_class=HTMLResponse)
def articles_page(request: Request, svc: Svc, q: str = "", feed: str = "",
                  page_number: int = Query(1, alias="page", ge=1), name: str = Depends(editor)):
    found = _articles(svc, q, _feed_filter(feed), page_number)
    return page("articles", request, editor=name, feeds=_overview(svc), **found)


def _article_page(request: Request, svc: Services, article_id: int, name: str, status: int = 200,
                  **results) -> HTMLResponse:
    context = dict(withdrawal=None, breaking=None, error=None) | results
    return page("article", request, status, editor=name, article=_trail(svc, article_id),
                newsletters=_newsletters(svc), **context)


@pages.get("/articles/{article_id}", response_class=HTMLResponse)
def article_page(request: Request, article_id: RowId, svc: Svc, name: str = Depends(editor)):
    return _article_page(request, svc, article_id, name)


@pages.post("/articles/{article_id}/breaking", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def breaking_article(request: Request, article_id: RowId, svc: Svc, newsletter: str = Form(""),
                     name: str = Depends(editor)):
    """The story's page again, saying which edition carries it now (or why nothing was sent)."""
    try:
        done = _breaking(svc, article_id, newsletter)
    except InvalidInput as e:
        return _article_page(request, svc, article_id, name, 400, error=str(e))
    return _article_page(request, svc, article_id, name, breaking=done)


@pages.post("/articles/{article_id}/withdraw", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def withdraw_article(request: Request, article_id: RowId, svc: Svc, name: str = Depends(editor)):
    """The story's page again, with what became of each post and of the mails (withdrawing twice is harmless,
    so the page may be shown for the POST itself)."""
    return _article_page(request, svc, article_id, name, withdrawal=_withdraw(svc, article_id, name))


# ── the same, for scripts ────────────────────────────────────────────────────


class NewFeed(BaseModel):
    url: str  # an RSS or Atom feed's address, http:// or https://


@api.get("/feeds", tags=["feeds"])
def feeds_json(svc: Svc, name: str = Depends(api_editor)) -> list[dict]:
    """Every feed with its health: ok, failing (`failures` in a row, `last_error`), disabled or new;
    last success, next fetch, and how many articles it brought."""
    return _overview(svc)


@api.post("/feeds", tags=["feeds"])
def add_feed_json(body: NewFeed, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Add a feed by its URL (an existing one is answered as it is) and queue a fetch of it now."""
    return _add(svc, body.url)


@api.post("/feeds/{feed_id}/poll", tags=["feeds"])
def poll_feed_json(feed_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Queue a fetch of one feed now, instead of at its next turn; answers its health before the fetch."""
    return _poll(svc, feed_id)


@api.post("/feeds/{feed_id}/disable", tags=["feeds"])
def disable_feed_json(feed_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Stop fetching a feed; its stories stay (those not sent yet still go out). `consequences` says so in words."""
    return _remove(svc, feed_id, "disable", name)


@api.post("/feeds/{feed_id}/enable", tags=["feeds"])
def enable_feed_json(feed_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Fetch a disabled feed again, from its next turn (now); answers its health."""
    return _enable(svc, feed_id, name)


@api.delete("/feeds/{feed_id}", tags=["feeds"])
def delete_feed_json(feed_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Forget a feed; its stories are kept without a feed, so the editions and posts that carried them keep their
    content. Refused (422) while a newsletter takes only chosen feeds and this is one of them."""
    return _remove(svc, feed_id, "delete", name)


@api.get("/articles", tags=["articles"])
def articles_json(svc: Svc, q: str = "", feed: RowId | None = None, page_number: int = Query(1, alias="page", ge=1),
                  name: str = Depends(api_editor)) -> dict:
    """The newest articles, 50 a page, with how many editions and posts each went into (by status);
    `q` searches titles and links, `feed` keeps one feed's."""
    return _articles(svc, q, feed, page_number)


@api.get("/articles/{article_id}", tags=["articles"])
def article_json(article_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """One article and its trail: the editions that carried it and the posts that teased it."""
    return _trail(svc, article_id)


class Breaking(BaseModel):
    newsletter: str  # the slug of the newsletter whose readers get it


@api.post("/articles/{article_id}/breaking", tags=["articles"])
def breaking_article_json(article_id: RowId, body: Breaking, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Send the story now, on its own, to every reader of a newsletter, whatever its filters say: the breaking
    edition made and started. A story waiting in an edition yet to go leaves it (`moved` says so); one that
    went out in that newsletter already answers 422."""
    return _breaking(svc, article_id, body.newsletter)


@api.post("/articles/{article_id}/withdraw", tags=["articles"])
def withdraw_article_json(article_id: RowId, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Withdraw a story: every post of it taken back (`retractions`, each with its outcome and what to do), off
    the public archive and its Atom feed, out of the editions yet to go (`unsent`). `mailed` names the editions
    that went out with it: mails can't be recalled. Again, it retries the posts still up."""
    return _withdraw(svc, article_id, name)
