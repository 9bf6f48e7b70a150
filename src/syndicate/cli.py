"""The `syndicate` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import click
from sqlalchemy import func, select

from syndicate import __version__, api_tokens, db, deliveries, editions, feeds, posts, subscribers
from syndicate.config import Settings
from syndicate.errors import SyndicateError
from syndicate.models import Article, Edition, Feed, Newsletter, Post, Subscriber, utcnow
from syndicate.services import Services


def services(ctx: click.Context, migrate: bool = False, check: bool = True) -> Services:
    """Settings are read when a command needs them, so `--help` works with any environment."""
    from syndicate.tasks import configure

    root = ctx.find_root()
    svc = root.meta.get("services")
    if svc is None:
        svc = configure(Settings.from_env(root.meta.get("env")))
        root.meta["services"] = svc
    if migrate:
        db.upgrade(svc.engine)
    elif check and db.current_revision(svc.engine) is None:
        raise SyndicateError("the database has no tables yet: run `syndicate db upgrade` first")
    return svc


def emit(rows: list[dict], as_json: bool, columns: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(rows, default=_json_default, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("(none)")
        return
    widths = {c: min(60, max(len(c), *(len(_cell(r[c])) for r in rows))) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(_cell(row[c])[: widths[c]].ljust(widths[c]) for c in columns))


def _cell(value) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return "" if value is None else str(value)


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syndicate")
def main() -> None:
    """Newsletter digests and social teasers from your site's feeds.

    Settings come from SYNDICATE_* environment variables; with none set,
    everything runs on this machine (SQLite, an embedded broker, the outbox folder).
    """


# ── the main jobs ────────────────────────────────────────────────────────────


@main.command()
@click.option("--outbox", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the mails, post payloads and previews (default: syndicate-data/outbox).")
@click.pass_context
def demo(ctx, outbox: Path | None) -> None:
    """Run the whole pipeline once on a bundled sample feed, with no services at all."""
    from syndicate import demo as demo_run

    started = time.monotonic()
    if outbox is not None:
        env = dict(os.environ, SYNDICATE_OUTBOX=str(outbox.absolute()))
        ctx.find_root().meta["env"] = env
    svc = services(ctx, migrate=True)
    report = demo_run.run(svc, progress=_progress)
    out = svc.settings.outbox
    click.echo(f"Feed:       {demo_run.FEED_URL} (bundled sample): "
               f"{report.articles_new} new articles, {report.articles_known} already known")
    click.echo(f"Edition:    {report.edition}")
    earlier_mails = f" ({report.mails_already} delivered by earlier runs, not sent again)"
    earlier_posts = f"; {report.posts_already} made by earlier runs, not made again"
    click.echo(f"Mail:       {len(report.mails)} sent to {out / 'mail'}"
               + (earlier_mails if report.mails_already else ""))
    click.echo(f"Posts:      {len(report.posts)} teasers written to {out / 'posts'} (dry-run: the demo never posts)"
               + (earlier_posts if report.posts_already else ""))
    for post in report.posts[:2]:
        click.echo("            ┆ " + post.text.replace("\n", "\n            ┆ "))
    if report.preview:
        click.echo(f"Preview:    {report.preview.as_uri()}")
    if not report.mails and not report.posts:
        click.echo("Nothing new, so nothing was sent: every mail and post went out exactly once.")
    click.echo(f"Done in {time.monotonic() - started:.1f} s. Data: {svc.settings.data_dir}")


def _progress(items, label):
    with click.progressbar(items, label=label, file=sys.stderr) as bar:
        yield from bar


@main.command()
@click.option("--host", default=None, help="Web app address (default: SYNDICATE_WEB_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Web app port (default: SYNDICATE_WEB_PORT or 8000).")
@click.option("--concurrency", type=int, default=2, show_default=True, help="Worker processes.")
@click.pass_context
def run(ctx, host: str | None, port: int | None, concurrency: int) -> None:
    """Serve everything on this machine: Celery worker, beat scheduler and the web app.

    The same processes as a distributed install, supervised here: if one dies the
    others are stopped too; SIGTERM or Ctrl-C stops them all.
    """
    svc = services(ctx, migrate=True)
    settings = svc.settings
    celery = [sys.executable, "-m", "celery", "-A", "syndicate.tasks"]
    commands = {
        "worker": celery + ["worker", "-Q", "ingest,mail,social", "--concurrency", str(concurrency),
                            "--loglevel", "INFO", "-n", "syndicate@%h"],
        "beat": celery + ["beat", "--loglevel", "INFO", "--schedule", str(settings.data_dir / "celerybeat-schedule")],
        "web": [sys.executable, "-m", "syndicate", "web", "--host", host or settings.web_host,
                "--port", str(port or settings.web_port)],
    }
    click.echo(f"broker: {'embedded, ' if settings.embedded_broker else ''}{settings.broker_url}")
    click.echo(f"mail:   {'outbox ' + str(settings.outbox / 'mail') if settings.smtp is None else settings.smtp.host}")
    click.echo(f"X:      {'dry-run (no SYNDICATE_X_* credentials)' if settings.dry_run_social else 'live'}")
    click.echo(f"web:    http://{host or settings.web_host}:{port or settings.web_port}/")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    children = {name: subprocess.Popen(command) for name, command in commands.items()}
    died = None
    while not stop.wait(0.5):
        died = next((name for name, child in children.items() if child.poll() is not None), None)
        if died:
            break
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    if died:
        raise SyndicateError(f"the {died} process exited with code {children[died].returncode}; "
                             "everything was stopped (its log is above)")


@main.command()
@click.option("--host", default=None, help="Address to listen on.")
@click.option("--port", type=int, default=None, help="Port to listen on.")
@click.pass_context
def web(ctx, host: str | None, port: int | None) -> None:
    """Serve only the web app (workers and beat run elsewhere)."""
    import uvicorn

    settings = services(ctx).settings
    uvicorn.run("syndicate.web:app", host=host or settings.web_host, port=port or settings.web_port,
                log_level="info", proxy_headers=True)


# ── database ─────────────────────────────────────────────────────────────────


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.pass_context
def db_upgrade(ctx) -> None:
    """Apply every migration not yet applied."""
    svc = services(ctx, migrate=True)
    click.echo(f"database at revision {db.current_revision(svc.engine)}")


@db_group.command("current")
@click.pass_context
def db_current(ctx) -> None:
    """Print the applied revision."""
    svc = services(ctx, check=False)
    click.echo(db.current_revision(svc.engine) or "empty (run `syndicate db upgrade`)")


# ── feeds and articles ───────────────────────────────────────────────────────


@main.group()
def feed() -> None:
    """Feeds to poll."""


@feed.command("add")
@click.argument("url")
@click.pass_context
def feed_add(ctx, url: str) -> None:
    """Add a feed by its URL (RSS or Atom)."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        added = feeds.add_feed(session, url)
        click.echo(f"feed {added.id}: {added.url}")


@feed.command("list")
@json_option
@click.pass_context
def feed_list(ctx, as_json: bool) -> None:
    """Feeds and how their last fetch went."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        # One count per feed in one query: loading each feed's articles only to count them was slow.
        counts = dict(session.execute(select(Article.feed_id, func.count()).group_by(Article.feed_id)).all())
        rows = [dict(id=f.id, url=f.url, status=f.status, last_fetched_at=f.last_fetched_at,
                     last_success_at=f.last_success_at, last_error=f.last_error, next_fetch_at=f.next_fetch_at,
                     articles=counts.get(f.id, 0))
                for f in session.scalars(select(Feed).order_by(Feed.id))]
    emit(rows, as_json, ["id", "url", "status", "last_success_at", "articles", "last_error"])


@feed.command("poll")
@click.option("--all", "everything", is_flag=True, help="Poll every active feed, not only those due.")
@json_option
@click.pass_context
def feed_poll(ctx, everything: bool, as_json: bool) -> None:
    """Poll feeds now, in this process."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        query = select(Feed.id).where(Feed.status == "active")
        ids = list(session.scalars(query)) if everything else feeds.due_feed_ids(session, utcnow())
    if as_json:
        results = feeds.poll_many(svc.Session, svc.settings, ids)
    else:
        with click.progressbar(length=len(ids), label="Polling", file=sys.stderr) as bar:
            results = feeds.poll_many(svc.Session, svc.settings, ids, progress=lambda _: bar.update(1))
    with db.transaction(svc.Session) as session:
        posts.ensure_default_account(session)
        posts.plan(session, svc.settings)
    rows = [dict(id=r.feed_id, url=r.url, status=r.status, new=len(r.new_article_ids), updated=r.updated,
                 error=r.error) for r in results]
    emit(rows, as_json, ["id", "url", "status", "new", "updated", "error"])
    if any(r.error for r in results):
        ctx.exit(1)


@main.group()
def article() -> None:
    """Stored articles."""


@article.command("list")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@click.pass_context
def article_list(ctx, limit: int, as_json: bool) -> None:
    """The newest articles."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        rows = [dict(id=a.id, feed_id=a.feed_id, title=a.title, url=a.url, lead=a.lead, author=a.author,
                     categories=a.categories, image_url=a.image_url, published_at=a.published_at,
                     first_seen_at=a.first_seen_at, updated_at=a.updated_at)
                for a in session.scalars(select(Article).order_by(Article.first_seen_at.desc(), Article.id.desc())
                                         .limit(limit))]
    emit(rows, as_json, ["id", "published_at", "title", "url"])


# ── newsletters, editions, subscribers ───────────────────────────────────────


@main.group()
def newsletter() -> None:
    """Newsletters and their schedules."""


@newsletter.command("add")
@click.argument("slug")
@click.option("--name", required=True)
@click.option("--from-address", required=True, help="The From: address, e.g. news@example.com.")
@click.option("--from-name", help="The From: name (default: the newsletter's name).")
@click.option("--cron", default="0 7 * * *", show_default=True, help="When it goes out, in --timezone.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone, e.g. Europe/Berlin.")
@click.option("--max-items", type=int, default=20, show_default=True)
@click.pass_context
def newsletter_add(ctx, slug, name, from_address, from_name, cron, timezone, max_items) -> None:
    """Create a newsletter."""
    svc = services(ctx)
    subscribers.normalise_email(from_address)
    with db.transaction(svc.Session) as session:
        created = editions.add_newsletter(session, slug=slug, name=name, from_address=from_address,
                                          from_name=from_name, cron=cron, timezone=timezone, max_items=max_items)
        click.echo(f"newsletter {created.slug}: next edition at {created.next_run_at.isoformat()}")


@newsletter.command("list")
@json_option
@click.pass_context
def newsletter_list(ctx, as_json: bool) -> None:
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        rows = [dict(slug=n.slug, name=n.name, cron=n.cron, timezone=n.timezone, status=n.status,
                     next_run_at=n.next_run_at, from_address=n.from_address)
                for n in session.scalars(select(Newsletter).order_by(Newsletter.slug))]
    emit(rows, as_json, ["slug", "name", "cron", "timezone", "status", "next_run_at"])


@main.group()
def edition() -> None:
    """Editions: cut, list."""


@edition.command("cut")
@click.argument("slug")
@click.pass_context
def edition_cut(ctx, slug: str) -> None:
    """Cut an edition of SLUG now and hand it to the workers (`syndicate deliver` sends it in this process)."""
    from syndicate.tasks import deliver_batch

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        cut = editions.cut(session, editions.get_newsletter(session, slug), svc.settings)
        number, status, note = cut.edition.number, cut.edition.status, cut.edition.note
    for edition_id, lo, hi in cut.batches:
        deliver_batch.delay(edition_id, lo, hi)
    click.echo(f"edition #{number}: {status}" + (f" ({note})" if note else f", {len(cut.batches)} batches queued"))


@edition.command("list")
@click.option("--newsletter", "slug", help="Only this newsletter.")
@json_option
@click.pass_context
def edition_list(ctx, slug: str | None, as_json: bool) -> None:
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        query = select(Edition).join(Newsletter).order_by(Edition.id.desc())
        if slug:
            query = query.where(Newsletter.slug == slug)
        rows = [dict(id=e.id, newsletter=e.newsletter.slug, number=e.number, status=e.status, subject=e.subject,
                     cut_at=e.cut_at, note=e.note, **{"deliveries": deliveries.counts(session, e.id)})
                for e in session.scalars(query)]
    emit(rows, as_json, ["id", "newsletter", "number", "status", "cut_at", "subject", "deliveries"])


@main.command()
@click.pass_context
def deliver(ctx) -> None:
    """Send every delivery that is due, in this process (no worker needed)."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        deliveries.requeue(session, svc.settings, utcnow())  # retries that are due become pending
        batches = deliveries.pending_batches(session, svc.settings.batch_size)
    totals: dict[str, int] = {}
    for edition_id, lo, hi in _progress(batches, "Delivering"):
        result = deliveries.send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi,
                                       token=f"cli-{os.getpid()}-{edition_id}-{lo}")
        for status, n in result.counts.items():
            totals[status] = totals.get(status, 0) + n
    with db.transaction(svc.Session) as session:
        deliveries.requeue(session, svc.settings, utcnow())
    click.echo(", ".join(f"{n} {status}" for status, n in sorted(totals.items())) or "nothing to send")


@main.group()
def subscriber() -> None:
    """Subscribers."""


@subscriber.command("add")
@click.argument("email")
@click.option("--newsletter", "slugs", multiple=True, required=True, help="Newsletter slug (repeatable).")
@click.option("--name")
@click.option("--confirmed", is_flag=True, help="Skip double opt-in (you have their consent already).")
@click.pass_context
def subscriber_add(ctx, email, slugs, name, confirmed) -> None:
    from syndicate.tasks import send_confirmation

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        ids = [editions.get_newsletter(session, slug).id for slug in slugs]
        signup = subscribers.subscribe(session, email, ids, name=name, confirmed=confirmed)
        subscriber_id, status, send = signup.subscriber.id, signup.subscriber.status, signup.send_confirmation
    if send:
        send_confirmation.delay(subscriber_id)
    click.echo(f"subscriber {subscriber_id}: {status}" + (" (confirmation mail queued)" if send else ""))


@subscriber.command("list")
@json_option
@click.pass_context
def subscriber_list(ctx, as_json: bool) -> None:
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        rows = [dict(id=s.id, email=s.email, name=s.name, status=s.status, created_at=s.created_at,
                     newsletters=[sub.newsletter.slug for sub in s.subscriptions if sub.status == "active"])
                for s in session.scalars(select(Subscriber).order_by(Subscriber.id))]
    emit(rows, as_json, ["id", "email", "status", "newsletters"])


# ── posts ────────────────────────────────────────────────────────────────────


@main.group()
def post() -> None:
    """Social posts (teasers)."""


@post.command("list")
@json_option
@click.pass_context
def post_list(ctx, as_json: bool) -> None:
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        rows = [dict(id=p.id, article_id=p.article_id, account=p.account.name, status=p.status, dry_run=p.dry_run,
                     text=p.text, remote_url=p.remote_url, error=p.error, posted_at=p.posted_at)
                for p in session.scalars(select(Post).order_by(Post.id.desc()))]
    emit(rows, as_json, ["id", "account", "status", "posted_at", "text"])


# ── API tokens ───────────────────────────────────────────────────────────────


@main.group()
def token() -> None:
    """API tokens a CMS uses to push stories (POST /api/articles)."""


@token.command("create")
@click.argument("name")
@click.pass_context
def token_create(ctx, name: str) -> None:
    """Create a token for NAME and print it, once.

    NAME says who uses it, e.g. `wordpress`. Only a hash of the token is stored.
    """
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        row, secret = api_tokens.create_token(session, name)
    # The token alone on stdout, so `TOKEN=$(syndicate token create wordpress)` works; the note on stderr.
    click.echo(secret)
    click.echo(f"token {row.name!r} created. Copy it now: the token itself is not stored and cannot be shown again.\n"
               f"Send it as `Authorization: Bearer <token>` with POST {svc.settings.base_url}/api/articles",
               err=True)


@token.command("list")
@json_option
@click.pass_context
def token_list(ctx, as_json: bool) -> None:
    """Tokens and when they were last used (never the tokens themselves)."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        rows = [dict(name=t.name, status="revoked" if t.revoked_at else "active", created_at=t.created_at,
                     last_used_at=t.last_used_at, revoked_at=t.revoked_at)
                for t in api_tokens.list_tokens(session)]
    emit(rows, as_json, ["name", "status", "created_at", "last_used_at", "revoked_at"])


@token.command("revoke")
@click.argument("name")
@click.pass_context
def token_revoke(ctx, name: str) -> None:
    """Refuse NAME's token from now on."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        row = api_tokens.revoke(session, name)
    click.echo(f"token {row.name!r} revoked: pushes with it are refused from now on")


def cli() -> None:
    """The console script: errors of ours become one line that says what to do."""
    try:
        code = main(standalone_mode=False)
        if isinstance(code, int):
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except SyndicateError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


