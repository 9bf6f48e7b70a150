"""`syndicate feed` and `syndicate article`: the feeds read, and the stories they gave."""

from __future__ import annotations

import json
import sys

import click

from syndicate.cli.common import counting, emit, json_option, lazy, opened, removing, services, yes_option
from syndicate.cli.social import ARTICLE_MISSING, said

feeds = lazy("syndicate.ingest.feeds")
models = lazy("syndicate.models")
stored = lazy("syndicate.ingest.stored")
posts = lazy("syndicate.social.posts")
lists = lazy("syndicate.newsletters.lists")
sending = lazy("syndicate.delivery.sending")
retraction = lazy("syndicate.social.retraction")


# ── feeds and articles ───────────────────────────────────────────────────────


@click.group()
def feed() -> None:
    """Feeds to poll."""


@feed.command("add")
@click.argument("url")
@click.option("--no-check", is_flag=True, help="Add it without fetching it first (a feed not up yet).")
@click.pass_context
def feed_add(ctx, url: str, no_check: bool) -> None:
    """Add a feed by its URL (RSS or Atom). It is fetched once first, as its polls will be: an address that
    answers 404, isn't a feed, is too slow or is on a private network is refused, saying why."""
    checked = None
    if not no_check:
        checked = feeds.check_feed(url, services(ctx).settings)  # no transaction open while the web answers
    with opened(ctx) as (svc, session):
        known = feeds.find_feed(session, checked.url if checked else url) is not None
        added = feeds.add_feed(session, checked.url if checked else url)
        feed_id, feed_url = added.id, added.url
    if known:
        click.echo(f"feed {feed_id}: {feed_url} was added already")
    elif checked is None:
        click.echo(f"feed {feed_id}: {feed_url} added unchecked; first poll at the next tick "
                   "(`syndicate feed list` shows how it went)")
    else:
        title = f"{checked.title!r}" if checked.title else "untitled"
        items = f"{checked.items} item{'' if checked.items == 1 else 's'}"
        click.echo(f"feed {feed_id}: added {title} — {items}; first poll at the next tick "
                   "(`syndicate feed poll` polls now)")


@feed.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--check", is_flag=True,
              help="Fetch each feed once first (8 at a time) and leave out those that fail, saying why.")
@json_option
@click.pass_context
def feed_import(ctx, file, check: bool, as_json: bool) -> None:
    """Add the feeds of an OPML file (FILE, or - for standard input), as feed readers export them (Feedly,
    Inoreader, NetNewsWire…); feeds in folders too. A bad address or a repeat is listed by its line and the
    rest is added; a feed added before is left as it is.

    Without --check nothing is fetched now: a list from a reader where the feeds worked is polled at the next
    tick anyway, and `syndicate feed list` shows any that fail. The exit code is 1 when a feed was refused."""
    from syndicate.ingest import opml

    data = file.read(opml.MAX_BYTES + 1)  # no more: read_opml refuses a file past its cap
    checked = None
    if check:
        outlines = opml.read_opml(data)
        with counting("checking", "feeds", shown=not as_json) as progress:
            checked = opml.check_outlines(outlines, services(ctx).settings, progress)
    with opened(ctx) as (svc, session):
        report = opml.import_opml(session, data, checked=checked)
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(f"{len(report.added)} added, {len(report.known)} known already, {len(report.refused)} refused"
                   + ("; first polls at the next tick" if report.added else ""))
        for line, url, reason in sorted(report.known + report.refused):
            click.echo(f"line {line}: {url}: {reason}")
    if report.refused:
        ctx.exit(1)


@feed.command("export")
@click.argument("file", type=click.File("w", encoding="utf-8", atomic=True), default="-")
@click.pass_context
def feed_export(ctx, file) -> None:
    """Write the active feeds as OPML 2.0 to FILE (or standard output), for a feed reader to import."""
    from syndicate.ingest import opml

    with opened(ctx) as (svc, session):
        count = opml.export_opml(session, file)
    if file.name != "<stdout>":
        click.echo(f"{count} feeds written to {file.name}", err=True)


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


@feed.command("disable")
@click.argument("feed_id", type=int)
@yes_option
@click.pass_context
def feed_disable(ctx, feed_id: int, yes: bool) -> None:
    """Stop fetching a feed; its stories stay (those not sent yet still go out). `enable` brings it back."""
    with opened(ctx) as (svc, session):
        plan = feeds.disable_plan(session, feeds.get_feed(session, feed_id))
    removing(plan, "Disable", yes)
    with opened(ctx) as (svc, session):
        feeds.disable_feed(session, feeds.get_feed(session, feed_id), "cli")
    click.echo(f"feed {feed_id}: disabled")


@feed.command("enable")
@click.argument("feed_id", type=int)
@click.pass_context
def feed_enable(ctx, feed_id: int) -> None:
    """Fetch a disabled feed again, now and at every turn (a feed whose site said "gone", too)."""
    with opened(ctx) as (svc, session):
        feeds.enable_feed(session, feeds.get_feed(session, feed_id), "cli")
    click.echo(f"feed {feed_id}: active, fetched at the next tick")


@feed.command("delete")
@click.argument("feed_id", type=int)
@yes_option
@click.pass_context
def feed_delete(ctx, feed_id: int, yes: bool) -> None:
    """Forget a feed. Its stories are kept, without a feed, so the editions and posts that carried them keep
    their content; refused while a newsletter takes only chosen feeds and this is one of them."""
    with opened(ctx) as (svc, session):
        plan = feeds.delete_plan(session, feeds.get_feed(session, feed_id))
    removing(plan, "Delete", yes)
    with opened(ctx) as (svc, session):
        feeds.delete_feed(session, feeds.get_feed(session, feed_id), "cli")
    click.echo(f"feed {feed_id}: deleted")


@click.group()
def article() -> None:
    """Stored articles: list and search them, send one as breaking news now, or withdraw one (retract)."""


@article.command("list")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--search", default="", help="Only articles with this text in the title or the link (any case).")
@json_option
@click.pass_context
def article_list(ctx, limit: int, search: str, as_json: bool) -> None:
    """The newest articles (their ids are what `edition add --story` and `article breaking` take)."""
    with opened(ctx) as (svc, session):
        rows = [dict(id=a.id, feed_id=a.feed_id, title=a.title, url=a.url, lead=a.lead, author=a.author,
                     categories=a.categories, image_url=a.image_url, image_alt=a.image_alt, language=a.language,
                     published_at=a.published_at, first_seen_at=a.first_seen_at, updated_at=a.updated_at,
                     withdrawn_at=a.withdrawn_at, withdrawn_by=a.withdrawn_by)
                for a in stored.newest_articles(session, limit, q=search)]
    emit(rows, as_json, ["id", "published_at", "title", "url"])


@article.command("breaking")
@click.argument("article_id", type=click.IntRange(1))
@click.option("--newsletter", "slug", required=True, help="The newsletter whose readers get it, e.g. morning.")
@click.option("--yes", is_flag=True, help="Send it without asking first.")
@click.pass_context
def article_breaking(ctx, article_id: int, slug: str, yes: bool) -> None:
    """Send a story now, on its own, to every reader of a newsletter: a breaking edition, whatever the
    newsletter's filters say. Waiting in an edition of it yet to go, the story is taken out of that one; if it
    went out in this newsletter already, nothing is sent."""
    from syndicate.cli.newsletters import queue  # the delivery tasks load only when this runs

    with opened(ctx) as (svc, session):
        title = stored.article_by_id(session, article_id, ARTICLE_MISSING.format(article_id)).title
        name = lists.get_newsletter(session, slug).name
    if not yes:
        click.confirm(f"Send article {article_id} ({title!r}) now to every reader of {name}?", abort=True)
    with opened(ctx) as (svc, session):
        cut, moved = sending.send_breaking(session, lists.get_newsletter(session, slug), article_id, svc.settings)
        summary = f"edition {slug}/{cut.edition.number} (id {cut.edition.id}): breaking, {cut.edition.status}"
    queue(cut.batches)
    for line in moved:
        click.echo(f"edition {line}")
    click.echo(summary + f", {len(cut.batches)} batches queued")


@article.command("retract")
@click.argument("article_id", type=int)
@click.option("--yes", is_flag=True, help="Withdraw it without asking first.")
@click.pass_context
def article_retract(ctx, article_id: int, yes: bool) -> None:
    """Withdraw a story: every post of it taken back on every account (one network failing stops none of
    the others), the story off the public archive and its Atom feed (a short notice shows instead) and out
    of the editions yet to go. Mails already sent can't be recalled: it says which editions carried it.

    Run it again to retry the posts that are still up. Exit status 1 while one is, or needs your hand."""
    with opened(ctx) as (svc, session):
        title = stored.article_by_id(session, article_id, ARTICLE_MISSING.format(article_id)).title
    if not yes:
        click.confirm(f"Withdraw article {article_id} ({title!r}) and take back every post of it?", abort=True)
    done = retraction.withdraw(svc.Session, svc.settings, svc.social_client, article_id, by="cli")
    if done.already:
        click.echo(f"article {article_id} was withdrawn already (by {done.withdrawn_by}, "
                   f"{done.withdrawn_at:%Y-%m-%d %H:%M} UTC); its posts are tried again")
    else:
        click.echo(f"article {article_id} withdrawn: off the public archive and its Atom feed, never posted or put "
                   "in an edition again")
    for line in done.unsent:
        click.echo(f"edition {line}")
    for taken in done.retractions:
        click.echo(said(taken))
    if not done.retractions:
        click.echo("no post of it to take back")
    click.echo(mails(done.mailed))
    if not all(r.settled for r in done.retractions):
        ctx.exit(1)


def mails(mailed: list[dict]) -> str:
    """What can't be taken back: the mails that carried the story."""
    if not mailed:
        return "No edition that carried it was mailed: there is no mail to recall."
    lines = ["Mails already sent can't be recalled. It went out in:"]
    for e in mailed:
        readers = f"{e['readers']:,} reader{'s' if e['readers'] != 1 else ''}"
        line = f"  {e['newsletter']} #{e['number']} ({e['status']}, to {readers}"
        line += f", {e['sent_at']:%Y-%m-%d %H:%M} UTC)" if e["sent_at"] else ")"
        if e["status"] == "sending":
            line += (f" — still going out: `syndicate edition pause {e['slug']}/{e['number']}` stops it before the "
                     "readers who haven't got it")
        elif e["status"] == "paused":
            line += " — paused: resumed, it would carry the story to the readers who haven't got it"
        lines.append(line)
    return "\n".join(lines)
