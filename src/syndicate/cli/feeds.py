"""`syndicate feed` and `syndicate article`: the feeds read, and the stories they gave."""

from __future__ import annotations

import sys

import click

from syndicate.cli.common import emit, json_option, lazy, opened

feeds = lazy("syndicate.ingest.feeds")
models = lazy("syndicate.models")
stored = lazy("syndicate.ingest.stored")
posts = lazy("syndicate.social.posts")


# ── feeds and articles ───────────────────────────────────────────────────────


@click.group()
def feed() -> None:
    """Feeds to poll."""


@feed.command("add")
@click.argument("url")
@click.pass_context
def feed_add(ctx, url: str) -> None:
    """Add a feed by its URL (RSS or Atom)."""
    with opened(ctx) as (svc, session):
        added = feeds.add_feed(session, url)
        click.echo(f"feed {added.id}: {added.url}")


@feed.command("list")
@json_option
@click.pass_context
def feed_list(ctx, as_json: bool) -> None:
    """Feeds and how their last fetch went."""
    with opened(ctx) as (svc, session):
        rows = [dict(id=f.id, url=f.url, status=f.status, last_fetched_at=f.last_fetched_at,
                     last_success_at=f.last_success_at, last_error=f.last_error, next_fetch_at=f.next_fetch_at,
                     articles=articles)
                for f, articles in stored.feeds_with_article_counts(session)]
    emit(rows, as_json, ["id", "url", "status", "last_success_at", "articles", "last_error"])


@feed.command("poll")
@click.option("--all", "everything", is_flag=True, help="Poll every active feed, not only those due.")
@json_option
@click.pass_context
def feed_poll(ctx, everything: bool, as_json: bool) -> None:
    """Poll feeds now, in this process."""
    with opened(ctx) as (svc, session):
        ids = feeds.active_feed_ids(session) if everything else feeds.due_feed_ids(session, models.utcnow())
    if as_json:
        results = feeds.poll_many(svc.Session, svc.settings, ids)
    else:
        with click.progressbar(length=len(ids), label="Polling", file=sys.stderr) as bar:
            results = feeds.poll_many(svc.Session, svc.settings, ids, progress=lambda _: bar.update(1))
    posts.prepare(svc.Session, svc.settings)  # the posts, their link cards checked, as the tick would
    rows = [dict(id=r.feed_id, url=r.url, status=r.status, new=len(r.new_article_ids), updated=r.updated,
                 error=r.error) for r in results]
    emit(rows, as_json, ["id", "url", "status", "new", "updated", "error"])
    if any(r.error for r in results):
        ctx.exit(1)


@click.group()
def article() -> None:
    """Stored articles."""


@article.command("list")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@click.pass_context
def article_list(ctx, limit: int, as_json: bool) -> None:
    """The newest articles."""
    with opened(ctx) as (svc, session):
        rows = [dict(id=a.id, feed_id=a.feed_id, title=a.title, url=a.url, lead=a.lead, author=a.author,
                     categories=a.categories, image_url=a.image_url, published_at=a.published_at,
                     first_seen_at=a.first_seen_at, updated_at=a.updated_at)
                for a in stored.newest_articles(session, limit)]
    emit(rows, as_json, ["id", "published_at", "title", "url"])
