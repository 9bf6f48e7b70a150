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
from zoneinfo import ZoneInfo

import click
from sqlalchemy import func, select

from syndicate import __version__, db
from syndicate.config import Settings, check_trusted_proxies
from syndicate.delivery import deliveries, sending
from syndicate.desk import editors
from syndicate.errors import NotFound, SyndicateError, TransportError
from syndicate.http import api_tokens
from syndicate.ingest import feeds
from syndicate.models import Article, Edition, Editor, Feed, Newsletter, Post, Subscriber, utcnow
from syndicate.newsletters import editions
from syndicate.services import Services
from syndicate.social import posts
from syndicate.subscribers import consent


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
    from syndicate.cli import demo as demo_run

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
    if report.posts:
        times = ", ".join(f"{p.planned_at:%H:%M}" for p in report.posts if p.planned_at)
        click.echo(f"            at the account's pace they would go at {times} UTC "
                   "(`syndicate account show x` shows the window and gap)")
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
@click.option("--forwarded-allow-ips", "trusted", default=None, metavar="ADDRESSES",
              help="The reverse proxies (addresses or networks, comma-separated, * for any) whose "
                   "X-Forwarded-For names the visitor (default: SYNDICATE_TRUSTED_PROXIES, else none).")
@click.pass_context
def web(ctx, host: str | None, port: int | None, trusted: str | None) -> None:
    """Serve only the web app (workers and beat run elsewhere)."""
    import uvicorn

    if trusted is not None:
        trusted = check_trusted_proxies(trusted, "--forwarded-allow-ips")
    settings = services(ctx).settings
    trusted = settings.trusted_proxies if trusted is None else trusted
    # X-Forwarded-For is believed only from the listed proxies, and from nobody unless some are listed:
    # else any visitor could send one and get a fresh sign-up limit each time.
    uvicorn.run("syndicate.web.app:app", host=host or settings.web_host, port=port or settings.web_port,
                log_level="info", proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None)


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
    """Newsletters: settings, schedules, filters."""


def newsletter_options(adding: bool):
    """The settings `add` and `edit` share; on `edit` every one is optional and only those given change."""
    def wrap(f):
        options = [
            click.option("--name", required=adding, help="What readers see, e.g. 'Morning Briefing'."),
            click.option("--from-address", required=adding, help="The From: address, e.g. news@example.com."),
            click.option("--from-name", help="The From: name (default: the newsletter's name)."),
            click.option("--reply-to", help="Where replies go, if not the From: address."),
            click.option("--cron", help="When it goes out, in --timezone, e.g. '0 7 * * *' (07:00 daily)"
                         + (" [default: 0 7 * * *]" if adding else "")),
            click.option("--no-schedule", is_flag=True,
                         help="No recurring edition: only one-off and breaking editions."),
            click.option("--timezone", help="IANA time zone of the schedule, e.g. Europe/Berlin [default: UTC]."),
            click.option("--subject", "subject_template",
                         help="Subject template, e.g. '{{ top.title }} and {{ rest }} more stories'."),
            click.option("--template", help="Template folder under email/ (yours in SYNDICATE_TEMPLATE_DIR)."),
            click.option("--max-items", type=click.IntRange(1, 200), help="Most stories per edition [default: 20]."),
            click.option("--feed", "feeds_", type=int, multiple=True, help="Only stories of this feed id (repeat)."),
            click.option("--include-category", multiple=True, help="Only stories in this category (repeat)."),
            click.option("--exclude-category", multiple=True, help="Never stories in this category (repeat)."),
            click.option("--breaking-category", multiple=True,
                         help="A story in this category goes out at once, on its own (repeat)."),
        ]
        if adding:
            options.append(click.option(
                "--first-fill", default="none", show_default=True,
                help="What the first edition holds: none (stories from now on), last:N or hours:N."))
        else:
            options += [
                click.option("--all-feeds", is_flag=True, help="Drop the feed filter."),
                click.option("--all-categories", is_flag=True, help="Drop the category filters."),
                click.option("--no-breaking", is_flag=True, help="Drop the breaking lane."),
            ]
        for option in reversed(options):
            f = option(f)
        return f
    return wrap


def _newsletter_changes(values: dict) -> dict:
    changes = {k: values[k] for k in ("name", "from_address", "from_name", "reply_to", "cron", "timezone",
                                       "subject_template", "template", "max_items") if values.get(k) is not None}
    if values.get("no_schedule"):
        if values.get("cron"):
            raise click.UsageError("--cron and --no-schedule contradict each other; give one")
        changes["cron"] = None
    if values.get("feeds_"):
        changes["feed_ids"] = list(values["feeds_"])
    for key in ("include_category", "exclude_category", "breaking_category"):
        if values.get(key):
            changes[{"include_category": "categories_include", "exclude_category": "categories_exclude",
                     "breaking_category": "breaking_categories"}[key]] = list(values[key])
    if values.get("all_feeds"):
        changes["feed_ids"] = None
    if values.get("all_categories"):
        changes["categories_include"] = changes["categories_exclude"] = None
    if values.get("no_breaking"):
        changes["breaking_categories"] = None
    return changes


def _describe(newsletter: Newsletter) -> dict:
    zone = ZoneInfo(newsletter.timezone)
    return dict(
        slug=newsletter.slug, name=newsletter.name, status=newsletter.status,
        sender=f"{newsletter.from_name} <{newsletter.from_address}>", reply_to=newsletter.reply_to,
        schedule=(f"{newsletter.cron} ({newsletter.timezone})" if newsletter.cron
                  else "none (one-off and breaking only)"),
        next_runs=[t.astimezone(zone).isoformat() for t in editions.upcoming(newsletter)]
        if newsletter.status == "active" else [],
        subject_template=newsletter.subject_template, template=newsletter.template, max_items=newsletter.max_items,
        feeds=newsletter.feed_ids or "all", include_categories=newsletter.categories_include or "all",
        exclude_categories=newsletter.categories_exclude or [],
        breaking_categories=newsletter.breaking_categories or [],
        first_fill=newsletter.first_fill,
    )


def _show(record: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record, default=_json_default, ensure_ascii=False, indent=2))
        return
    width = max(map(len, record))
    for key, value in record.items():
        if isinstance(value, list):
            value = ", ".join(map(_cell, value)) or "—"
        click.echo(f"{key.replace('_', ' ') + ':':<{width + 2}}{_cell(value)}")


@newsletter.command("add")
@click.argument("slug")
@newsletter_options(adding=True)
@click.pass_context
def newsletter_add(ctx, slug, first_fill, **values) -> None:
    """Create a newsletter called SLUG (lower-case letters, digits, dashes)."""
    svc = services(ctx)
    changes = _newsletter_changes(values)
    changes.setdefault("cron", "0 7 * * *")
    changes.setdefault("timezone", "UTC")
    with db.transaction(svc.Session) as session:
        created = editions.add_newsletter(session, slug=slug, first_fill=first_fill, **changes)
        runs = editions.upcoming(created, 1)
        click.echo(f"newsletter {created.slug}: "
                   + (f"next edition at {runs[0].astimezone(ZoneInfo(created.timezone)).isoformat()}" if runs
                      else "no schedule; cut editions with `syndicate edition cut`"))


@newsletter.command("edit")
@click.argument("slug")
@newsletter_options(adding=False)
@click.pass_context
def newsletter_edit(ctx, slug, **values) -> None:
    """Change a newsletter's settings; only the options given change."""
    svc = services(ctx)
    changes = _newsletter_changes(values)
    if not changes:
        raise click.UsageError("nothing to change; see `syndicate newsletter edit --help`")
    with db.transaction(svc.Session) as session:
        editions.update_newsletter(session, editions.get_newsletter(session, slug), **changes)
        _show(_describe(editions.get_newsletter(session, slug)), False)


@newsletter.command("show")
@click.argument("slug")
@json_option
@click.pass_context
def newsletter_show(ctx, slug, as_json) -> None:
    """A newsletter's settings and its next five send times, in its time zone."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        record = _describe(editions.get_newsletter(session, slug))
    _show(record, as_json)


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


@newsletter.command("pause")
@click.argument("slug")
@click.pass_context
def newsletter_pause(ctx, slug) -> None:
    """No regular or breaking editions until resumed (editions already scheduled keep their time)."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        editions.pause_newsletter(session, editions.get_newsletter(session, slug))
    click.echo(f"newsletter {slug}: paused")


@newsletter.command("resume")
@click.argument("slug")
@click.pass_context
def newsletter_resume(ctx, slug) -> None:
    """Run again from the next scheduled time; what was missed while paused is not sent in a rush."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = editions.get_newsletter(session, slug)
        editions.resume_newsletter(session, found)
        runs = editions.upcoming(found, 1)
    click.echo(f"newsletter {slug}: active" + (f", next edition at {runs[0].isoformat()}" if runs else ""))


@main.group()
def edition() -> None:
    """Editions: cut, preview, test, edit, schedule, pause, resume, cancel, resend.

    An edition is named by its id or as SLUG/NUMBER (e.g. morning/12).
    """


def _edition(session, ref: str) -> Edition:
    slug, _, number = ref.rpartition("/")
    if slug and number.isdigit():
        return editions.get_edition(session, slug, int(number), public=False)
    found = session.get(Edition, int(ref)) if ref.isdigit() else None
    if found is None:
        raise NotFound(f"no edition {ref!r}; name it by id or as SLUG/NUMBER (`syndicate edition list`)")
    return found


def _when(text: str, zone: str) -> datetime:
    """ISO 8601; without an offset, the time is read in the newsletter's own zone."""
    try:
        at = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a time; use e.g. '2026-12-01 07:00' (in the newsletter's "
                                 "zone) or 2026-12-01T07:00+01:00") from None
    return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(zone))


def _queue(batches) -> None:
    from syndicate.tasks import deliver_batch

    for edition_id, lo, hi in batches:
        deliver_batch.delay(edition_id, lo, hi)


def _summary(edition: Edition) -> str:
    when = edition.scheduled_for.astimezone(ZoneInfo(edition.newsletter.timezone)) if edition.scheduled_for else None
    text = f"edition {edition.newsletter.slug}/{edition.number} (id {edition.id}): {edition.status}"
    if edition.status == "scheduled" and when:
        text += f" for {when.isoformat()}"
    if edition.note:
        text += f" ({edition.note})"
    return text + "".join(f"\nwarning: {w}" for w in edition.warnings or [])


@edition.command("cut")
@click.argument("slug")
@click.option("--draft", is_flag=True, help="Keep it as a draft to preview and edit; schedule it later.")
@click.option("--at", "at", help="Send it at this time (one-off), e.g. '2026-12-01 07:00' in the newsletter's zone.")
@click.option("--next", "next_run", is_flag=True,
              help="Make the next regular edition now, to preview and edit before its scheduled time.")
@click.pass_context
def edition_cut(ctx, slug: str, draft: bool, at: str | None, next_run: bool) -> None:
    """Make an edition of SLUG from the stories not sent yet; without options it goes out now."""
    if sum(map(bool, (draft, at, next_run))) > 1:
        raise click.UsageError("give at most one of --draft, --at and --next")
    svc = services(ctx)
    batches = []
    with db.transaction(svc.Session) as session:
        newsletter = editions.get_newsletter(session, slug)
        when = _when(at, newsletter.timezone) if at else None  # a typo is refused before anything is made
        if next_run:
            made = editions.prepare_next(session, newsletter, svc.settings)
        elif draft or at:
            made = editions.create_edition(session, newsletter, svc.settings, kind="one-off", status="draft")
            if when and made.status == "draft":
                editions.schedule(session, made, when)
        else:
            cut = sending.cut(session, newsletter, svc.settings, kind="one-off")
            made, batches = cut.edition, cut.batches
        summary = _summary(made)
    _queue(batches)
    click.echo(summary + (f", {len(batches)} batches queued" if batches else ""))


@edition.command("list")
@click.option("--newsletter", "slug", help="Only this newsletter.")
@click.option("--status", multiple=True, help="Only editions with this status (repeat).")
@json_option
@click.pass_context
def edition_list(ctx, slug: str | None, status: tuple[str, ...], as_json: bool) -> None:
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        query = select(Edition).join(Newsletter).order_by(Edition.id.desc())
        if slug:
            query = query.where(Newsletter.slug == slug)
        if status:
            query = query.where(Edition.status.in_(status))
        rows = [dict(id=e.id, newsletter=e.newsletter.slug, number=e.number, kind=e.kind, status=e.status,
                     scheduled_for=e.scheduled_for, subject=e.subject, cut_at=e.cut_at, note=e.note,
                     deliveries=deliveries.counts(session, e.id))
                for e in session.scalars(query)]
    emit(rows, as_json, ["id", "newsletter", "number", "kind", "status", "scheduled_for", "subject", "deliveries"])


@edition.command("show")
@click.argument("ref")
@json_option
@click.pass_context
def edition_show(ctx, ref: str, as_json: bool) -> None:
    """An edition's stories, status, warnings, and what happened: counts by outcome."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = _edition(session, ref)
        record = dict(
            id=found.id, newsletter=found.newsletter.slug, number=found.number, kind=found.kind,
            status=found.status, subject=found.subject, scheduled_for=found.scheduled_for,
            started_at=found.started_at, sent_at=found.sent_at, note=found.note, warnings=found.warnings,
            html_bytes=len(found.html.encode()),
            stories=[f"{item.article_id}: {item.article.title}" for item in found.items],
            counts=deliveries.report(session, found),
        )
    if as_json:
        _show(record, True)
        return
    counts = record.pop("counts")
    _show(record, False)
    click.echo("counts:       " + ", ".join(f"{n} {status}" for status, n in counts.items()))


@edition.command("preview")
@click.argument("ref")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for the files.")
@click.option("--open", "open_", is_flag=True, help="Open the HTML in a browser.")
@click.pass_context
def edition_preview(ctx, ref: str, out: Path | None, open_: bool) -> None:
    """Write the edition's HTML and text as a recipient gets them, and print the paths."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = _edition(session, ref)
        if not found.html:
            raise SyndicateError(f"edition {ref} has no content ({found.status}: {found.note})")
        html, text = editions.write_preview(svc.settings, found, out)
        warnings = found.warnings
    click.echo(html)
    click.echo(text)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if open_:
        click.launch(str(html))


@edition.command("test-send")
@click.argument("ref")
@click.option("--to", "addresses", multiple=True, required=True, help="An address to send the test to (repeat).")
@click.pass_context
def edition_test_send(ctx, ref: str, addresses: tuple[str, ...]) -> None:
    """Send the edition to these addresses now, marked [Test]; no subscriber is counted or changed."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = _edition(session, ref)
        newsletter = found.newsletter  # loaded now: the sending happens after the transaction
    results = deliveries.send_tests(svc.settings, svc.transport, newsletter, found, list(addresses))
    for result in results:
        click.echo(f"{result['address']}: {result['reply']}" if result["accepted"]
                   else f"{result['address']}: refused: {result['reply']}", err=not result["accepted"])
    if not all(result["accepted"] for result in results):
        ctx.exit(1)


@edition.command("edit")
@click.argument("ref")
@click.option("--remove", type=int, multiple=True, help="Take this article id out (repeat).")
@click.option("--order", help="Article ids in the order wanted, comma-separated; the rest follow.")
@click.option("--subject", help="A subject of your own ('' goes back to the newsletter's subject template).")
@click.pass_context
def edition_edit(ctx, ref: str, remove: tuple[int, ...], order: str | None, subject: str | None) -> None:
    """Change an edition that hasn't started sending; the render is redone."""
    try:
        ordered = [int(x) for x in order.replace(" ", "").split(",") if x] if order else None
    except ValueError:
        raise click.BadParameter(f"{order!r}: give article ids separated by commas, e.g. 12,9,15") from None
    if not remove and ordered is None and subject is None:
        raise click.UsageError("nothing to change: give --remove, --order or --subject")
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = editions.edit(session, _edition(session, ref), svc.settings, remove=list(remove), order=ordered,
                              subject=subject)
        click.echo(_summary(found) + f"\nsubject: {found.subject}")
        for item in found.items:
            click.echo(f"  {item.article_id}: {item.article.title}")


@edition.command("schedule")
@click.argument("ref")
@click.option("--at", "at", required=True, help="e.g. '2026-12-01 07:00' (the newsletter's zone) or with an offset.")
@click.pass_context
def edition_schedule(ctx, ref: str, at: str) -> None:
    """Schedule or reschedule an edition that hasn't started sending."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = _edition(session, ref)
        editions.schedule(session, found, _when(at, found.newsletter.timezone))
        click.echo(_summary(found))


@edition.command("pause")
@click.argument("ref")
@click.pass_context
def edition_pause(ctx, ref: str) -> None:
    """Stop sending (or hold a scheduled edition); `resume` carries on with whoever hasn't got it."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = _edition(session, ref)
        editions.pause(session, found)
        click.echo(_summary(found))


@edition.command("resume")
@click.argument("ref")
@click.pass_context
def edition_resume(ctx, ref: str) -> None:
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = _edition(session, ref)
        batches = sending.resume(session, found, svc.settings)
        summary = _summary(found)
    _queue(batches)
    click.echo(summary + (f", {len(batches)} batches queued" if batches else ""))


@edition.command("cancel")
@click.argument("ref")
@click.pass_context
def edition_cancel(ctx, ref: str) -> None:
    """Nothing more of it goes out; stories nobody got are freed for the next edition."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = _edition(session, ref)
        skipped = editions.cancel(session, found)
        click.echo(_summary(found) + (f"; {skipped} recipients won't get it" if skipped else ""))


@edition.command("resend-failed")
@click.argument("ref")
@click.pass_context
def edition_resend_failed(ctx, ref: str) -> None:
    """Send again to the recipients it failed for — only them, and only those still subscribed."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = _edition(session, ref)
        batches, left_out = sending.resend_failed(session, found, svc.settings)
        summary = _summary(found)
    _queue(batches)
    click.echo(f"{summary}: {len(batches)} batches queued"
               + (f"; {left_out} failed recipients left out (unsubscribed, bounced or complained since)"
                  if left_out else ""))


@main.command()
@click.pass_context
def deliver(ctx) -> None:
    """Start what is due and send it, in this process (no worker needed)."""
    svc = services(ctx)
    sending.run_due(svc.Session, svc.settings, utcnow())  # starts what is due, revives what is stuck
    with db.transaction(svc.Session) as session:
        # Every pending row, including batches queued for workers that haven't run: claims are
        # conditional, so whichever of us and a worker comes second finds nothing to send.
        batches = deliveries.pending_batches(session, svc.settings.batch_size)
    totals: dict[str, int] = {}
    for edition_id, lo, hi in _progress(batches, "Delivering"):
        result = deliveries.send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi,
                                       token=f"cli-{os.getpid()}-{edition_id}-{lo}", pacer=svc.pacer)
        for status, n in result.counts.items():
            totals[status] = totals.get(status, 0) + n
    with db.transaction(svc.Session) as session:
        deliveries.requeue(session, svc.settings, utcnow())
    click.echo(", ".join(f"{n} {status}" for status, n in sorted(totals.items())) or "nothing to send")


@main.command()
@json_option
@click.pass_context
def pace(ctx, as_json: bool) -> None:
    """The sending pace now, shared by every worker: all mail's (SYNDICATE_SEND_RATE, halved by a 421 for
    the whole session), and each receiving domain slowed by its own 4.7.x deferrals. A domain not
    listed goes at the pace of all mail."""
    emit(services(ctx).pacer.paces(), as_json, ["to", "per_second", "slowed_since", "deferrals", "full_at"])


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
        signup = consent.subscribe(session, email, ids, name=name, confirmed=confirmed, source="cli",
                                       settings=svc.settings)
        subscriber_id, status, send = signup.subscriber.id, signup.subscriber.status, signup.send_confirmation
    if send:
        send_confirmation.delay(subscriber_id)
    click.echo(f"subscriber {subscriber_id}: {status}" + (" (confirmation mail queued)" if send else ""))


@subscriber.command("show")
@click.argument("email")
@json_option
@click.pass_context
def subscriber_show(ctx, email: str, as_json: bool) -> None:
    """A subscriber's status, subscriptions and timeline: every edition delivered, skipped (why) or
    failed (the server's reply), and what happened to the address."""
    from syndicate.subscribers import timeline

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = session.scalar(select(Subscriber).where(Subscriber.email == consent.normalise_email(email)))
        if found is None:
            raise NotFound(f"no subscriber {email!r}; `syndicate subscriber list` shows them")
        record = dict(email=found.email, name=found.name, status=found.status, since=found.created_at,
                      confirmed_at=found.confirmed_at, subscriptions=timeline.subscriptions(session, found.id),
                      timeline=[e.as_dict() for e in timeline.timeline(session, found.id)])
    if as_json:
        _show(record, True)
        return
    click.echo(f"{record['email']}" + (f" ({record['name']})" if record["name"] else "") + f": {record['status']}, "
               f"since {_cell(record['since'])}")
    for sub in record["subscriptions"]:
        click.echo(f"  {sub['newsletter']}: {sub['status']}")
    click.echo("")
    for entry in record["timeline"]:
        edition_name = f"{entry['newsletter']}/{entry['edition']}" if entry["edition"] else (entry["newsletter"] or "")
        click.echo(f"{_cell(entry['at'])}  {entry['what']:<22} {edition_name:<16} {entry['detail'] or ''}".rstrip())


@subscriber.command("restore")
@click.argument("email")
@click.option("--reason", required=True, help="Why mail may go to it again, e.g. 'reader asked by phone'.")
@click.pass_context
def subscriber_restore(ctx, email: str, reason: str) -> None:
    """Let mail go again to an address that bounced, complained or left everything — only with the
    reader's say-so. The newsletters they left stay left; they rejoin from their preferences page."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        found = session.scalar(select(Subscriber).where(Subscriber.email == consent.normalise_email(email)))
        if found is None:
            raise NotFound(f"no subscriber {email!r}; `syndicate subscriber list` shows them")
        consent.restore(session, found, reason)
        active = [s.newsletter.slug for s in found.subscriptions if s.status == "active"]
    click.echo(f"{found.email}: confirmed again; gets {', '.join(active) or 'no newsletter yet'}")


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


PROBLEMS_SHOWN = 50


@subscriber.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--newsletter", "slugs", multiple=True,
              help="Subscribe them to this newsletter (repeatable). Needed unless the file has a newsletters "
                   "column; a row's non-empty newsletters cell replaces it for that row.")
@click.option("--force", is_flag=True,
              help="Also add back people who unsubscribed, bounced or complained. Only with their renewed "
                   "consent: you must have it from every one of them.")
@click.option("--double-opt-in", is_flag=True,
              help="Don't vouch for consent: new addresses get a confirmation mail and nothing else until they "
                   "confirm.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every row not imported (line,email,reason) to this CSV file.")
@json_option
@click.pass_context
def subscriber_import(ctx, file, slugs: tuple[str, ...], force: bool, double_opt_in: bool,
                      report_path: Path | None, as_json: bool) -> None:
    """Add subscribers from a CSV file (FILE, or - for standard input).

    The header row needs an email column (or e-mail, email address); name and newsletters (slugs
    separated by ; , or spaces) are optional. Commas, semicolons or tabs; UTF-8 (Excel: 'CSV UTF-8').
    New addresses are confirmed at once: you vouch for their consent (or use --double-opt-in).
    Nobody who unsubscribed, bounced or complained is added back without --force, and importing
    the same file twice changes nothing. Bad rows are listed by line and the rest is imported;
    the exit code is then 1.
    """
    from syndicate.subscribers import csv_files
    from syndicate.tasks import send_confirmation

    svc = services(ctx)
    data = file.read()
    with db.transaction(svc.Session) as session:
        ids = [editions.get_newsletter(session, slug).id for slug in slugs]
        report = csv_files.import_csv(session, data, ids, force=force, confirmed=not double_opt_in)
    for subscriber_id in report.to_confirm:  # queued after the commit, so the task finds the row
        send_confirmation.delay(subscriber_id)
    problems = report.problems
    if report_path is not None:
        with report_path.open("w", encoding="utf-8", newline="") as out:
            report.write_problems_csv(out)
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
                   f"{report.resubscribed} resubscribed, {len(report.skipped)} skipped, {len(report.bad)} bad, "
                   f"{len(report.duplicates)} duplicates"
                   + (f"; {len(report.to_confirm)} confirmation mails queued" if report.to_confirm else ""))
        for line, value, reason in problems[:PROBLEMS_SHOWN]:
            click.echo(f"line {line}: {value or '(empty)'}: {reason}")
        if len(problems) > PROBLEMS_SHOWN:
            more = len(problems) - PROBLEMS_SHOWN
            click.echo(f"…and {more} more; " + (f"all are in {report_path}" if report_path
                                                 else "--report PATH writes them all"))
        elif report_path is not None and problems:
            click.echo(f"these rows are also in {report_path}")
        if report.bad:
            click.echo(f"{len(report.bad)} bad rows were left out and the good ones imported: fix those lines and "
                       "import the file again (what is already in stays as it is)", err=True)
    if report.bad:
        ctx.exit(1)


@subscriber.command("export")
@click.option("--newsletter", "slug", help="Only people subscribed to this newsletter (or waiting to confirm).")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["pending", "confirmed", *consent.SUPPRESSED]),
              help="Only subscribers with this status (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (UTF-8 with a byte order mark, so Excel reads accents) instead of stdout.")
@click.pass_context
def subscriber_export(ctx, slug: str | None, statuses: tuple[str, ...], output: Path | None) -> None:
    """Write subscribers as CSV: email,name,status,newsletters,created_at,confirmed_at.

    The file imports back unchanged: nobody in it who left, bounced or complained is added back.
    """
    from syndicate.subscribers import csv_files

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        newsletter_id = editions.get_newsletter(session, slug).id if slug else None
        if output is None:
            csv_files.export_csv(session, sys.stdout, newsletter_id, list(statuses))
            return
        with output.open("w", encoding="utf-8-sig", newline="") as out:
            count = csv_files.export_csv(session, out, newsletter_id, list(statuses))
    click.echo(f"{count} subscribers written to {output}", err=True)


# ── social accounts ──────────────────────────────────────────────────────────


@main.group()
def account() -> None:
    """Social accounts (X, Mastodon, Bluesky): add, test, edit, pause, resume."""


def account_options(adding: bool):
    """Options `add` and `edit` share; on `edit` only those given change."""
    def decorate(f):
        for option in reversed([
            click.option("--timezone", help="IANA zone of the posting window, e.g. Europe/Berlin (default UTC)."),
            click.option("--window", help="Posting window in the account's zone, e.g. 07:00-22:00, or 'always'."),
            click.option("--min-gap", help="Minimum gap between two posts, e.g. 10m (default 10m)."),
            click.option("--daily-cap", type=int, help="Most posts in any 24 hours (default 30)."),
            click.option("--max-age", help="Skip a regular post older than this when its turn comes, e.g. 12h."),
            click.option("--breaking-category", multiple=True,
                         help="Stories in this category take the breaking lane (repeat the option)."),
            click.option("--dry-run/--live", default=None,
                         help="Dry run: record the exact requests and planned times, call nothing."),
            click.option("--instance", help="Mastodon: the instance's address, e.g. https://mastodon.social."),
            click.option("--handle", help="Bluesky: the handle, e.g. newsroom.bsky.social."),
            click.option("--service", help="Bluesky: the PDS (default https://bsky.social)."),
            click.option("--visibility", type=click.Choice(["public", "unlisted", "private"]),
                         help="Mastodon: who sees the posts in timelines (default unlisted)."),
            click.option("--language", help="ISO 639-1 language of the posts, e.g. en."),
            click.option("--hashtag", "hashtag_map", multiple=True,
                         help="CATEGORY=TAG: the hashtag for a category ('CATEGORY=' for none); repeat."),
            click.option("--deny-hashtag", multiple=True, help="A hashtag never to use; repeat."),
            click.option("--max-hashtags", type=int, help="Most hashtags per teaser (default 2; 0 for none)."),
            click.option("--utm-campaign", help="utm_campaign of the links (default syndicate)."),
            click.option("--no-utm", is_flag=True, default=None, help="Links without UTM parameters."),
            click.option("--credentials", "ask_credentials", is_flag=True, default=adding,
                         help="Ask for the network's credentials (on `add` always, unless --dry-run)."),
        ]):
            f = option(f)
        return f
    return decorate


def _account_settings(values: dict, current: dict | None = None) -> dict:
    from syndicate.social.accounts import parse_duration

    changes: dict = {}
    for key in ("timezone", "window", "instance", "handle", "service", "visibility", "language"):
        if values.get(key) is not None:
            changes[key] = values[key]
    for key in ("min_gap", "max_age"):
        if values.get(key) is not None:
            changes[key] = parse_duration(values[key])
    if values.get("daily_cap") is not None:
        changes["daily_cap"] = values["daily_cap"]
    if values.get("breaking_category"):
        changes["breaking_categories"] = list(values["breaking_category"])
    if values.get("dry_run") is not None:
        changes["dry_run"] = values["dry_run"]
    options = dict((current or {}).get("teaser", {}))
    if values.get("hashtag_map"):
        mapping = dict(options.get("hashtag_map", {}))
        for item in values["hashtag_map"]:
            category, sep, tag = item.partition("=")
            if not sep or not category.strip():
                raise click.BadParameter(f"{item!r}: write CATEGORY=TAG (or CATEGORY= for no hashtag)",
                                         param_hint="--hashtag")
            mapping[category.strip()] = tag.strip().lstrip("#")
        options["hashtag_map"] = mapping
    if values.get("deny_hashtag"):
        options["deny"] = sorted(set(options.get("deny", [])) | {t.lstrip("#") for t in values["deny_hashtag"]})
    if values.get("max_hashtags") is not None:
        options["max_hashtags"] = values["max_hashtags"]
    if values.get("utm_campaign") is not None:
        options["utm_campaign"] = values["utm_campaign"]
    if values.get("no_utm"):
        options["utm"] = False
    if options != (current or {}).get("teaser", {}):
        changes["teaser"] = options
    return changes


def _ask_credentials(network: str) -> dict:
    from syndicate.social.accounts import OPTIONAL_SECRETS, SECRETS

    click.echo(f"{network} credentials (input hidden; from SYNDICATE_ACCOUNT_<NAME> variables when set):", err=True)
    values = {}
    for key in SECRETS[network] + OPTIONAL_SECRETS[network]:
        optional = key in OPTIONAL_SECRETS[network]
        values[key] = os.environ.get(f"SYNDICATE_ACCOUNT_{key.upper()}") or click.prompt(
            f"  {key}" + (" (optional, Enter to skip)" if optional else ""), hide_input=True,
            default="" if optional else None, show_default=False, err=True)
    return {k: v for k, v in values.items() if v}


@account.command("add")
@click.argument("name")
@click.option("--network", required=True, type=click.Choice(["x", "mastodon", "bluesky"]))
@account_options(adding=True)
@click.pass_context
def account_add(ctx, name: str, network: str, ask_credentials: bool, **values) -> None:
    """Connect an account called NAME. Credentials are asked for (hidden) and stored encrypted.

    Stories first seen from now on get a teaser on it; `syndicate account test NAME` checks it."""
    from syndicate.social import accounts

    svc = services(ctx)
    settings = _account_settings(values)
    credentials = None if settings.get("dry_run") or not ask_credentials else _ask_credentials(network)
    with db.transaction(svc.Session) as session:
        row = accounts.add(session, svc.settings.secret_key, name, network, settings, credentials)
        mode = "dry-run" if accounts.is_dry_run(row, svc.settings.x is not None) else "live"
    click.echo(f"account {name!r} added ({network}, {mode}); check it with `syndicate account test {name}`")


@account.command("edit")
@click.argument("name")
@account_options(adding=False)
@click.pass_context
def account_edit(ctx, name: str, ask_credentials: bool, **values) -> None:
    """Change an account's settings (only the options given) or, with --credentials, its credentials."""
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        row = accounts.get(session, name)
        credentials = _ask_credentials(row.network) if ask_credentials else None
        accounts.edit(session, svc.settings.secret_key, row, _account_settings(values, row.settings), credentials)
    click.echo(f"account {name!r} updated")


@account.command("list")
@json_option
@click.pass_context
def account_list(ctx, as_json: bool) -> None:
    """Accounts, their mode and status (paused, and why)."""
    from syndicate.models import SocialAccount
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        rows = [accounts.describe(a, svc.settings.x is not None)
                for a in session.scalars(select(SocialAccount).order_by(SocialAccount.name))]
    emit(rows, as_json, ["name", "network", "mode", "status", "paused_reason", "parked_until"])


@account.command("show")
@click.argument("name")
@json_option
@click.pass_context
def account_show(ctx, name: str, as_json: bool) -> None:
    """One account's settings and state (never its credentials)."""
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        record = accounts.describe(accounts.get(session, name), svc.settings.x is not None)
    _show(record | {"settings": json.dumps(record["settings"], ensure_ascii=False)} if not as_json else record,
          as_json)


@account.command("test")
@click.argument("name")
@click.pass_context
def account_test(ctx, name: str) -> None:
    """Check the credentials with a harmless call, and read the instance's limits (Mastodon).

    Says exactly what is wrong when it fails; exit status 1 then."""
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        row = accounts.get(session, name)
        client = svc.social_client(row)
    if client.dry_run:
        click.echo(f"{name}: dry-run (no credentials, or --dry-run): nothing to check; "
                   f"requests are written to {svc.settings.outbox / 'posts'}")
        return
    try:  # no transaction open while the network answers
        who = client.verify()
        rules = client.rules()
    except TransportError as e:
        click.echo(f"{name}: NOT OK — {e}", err=True)
        ctx.exit(1)
    if client.network == "mastodon":
        with db.transaction(svc.Session) as session:
            accounts.edit(session, svc.settings.secret_key, accounts.get(session, name),
                          dict(max_characters=rules.limit, url_cost=rules.url_cost))
    click.echo(f"{name}: OK — {who}")


@account.command("pause")
@click.argument("name")
@click.option("--reason", default="paused by an editor", show_default=True)
@click.pass_context
def account_pause(ctx, name: str, reason: str) -> None:
    """Stop posting on one account (its queue waits)."""
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        accounts.pause(accounts.get(session, name), reason)
    click.echo(f"account {name!r} paused: {reason}")


@account.command("resume")
@click.argument("name")
@click.pass_context
def account_resume(ctx, name: str) -> None:
    """Post again; the waiting queue drains at the account's pace, never in a burst."""
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        accounts.resume(accounts.get(session, name))
    click.echo(f"account {name!r} resumed")


# ── posts ────────────────────────────────────────────────────────────────────


@main.group()
def post() -> None:
    """Social posts (teasers): the queue; preview, edit, schedule, hold, release, cancel, re-share."""


@post.command("list")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["pending", "held", "sending", "posted", "ambiguous", "failed", "skipped",
                                 "cancelled"]), help="Only these (repeat).")
@click.option("--account", "account_name", help="Only this account.")
@click.option("--limit", type=int, default=100, show_default=True)
@json_option
@click.pass_context
def post_list(ctx, statuses, account_name, limit: int, as_json: bool) -> None:
    """Posts, newest first; waiting ones with the time pacing expects them to go."""
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        query = select(Post).order_by(Post.id.desc()).limit(limit)
        if statuses:
            query = query.where(Post.status.in_(statuses))
        if account_name:
            query = query.where(Post.account_id == accounts.get(session, account_name).id)
        rows = session.scalars(query).all()
        expected = {p.id: at for a in {r.account for r in rows} for p, at in posts.projected(session, a)}
        records = [posts.describe(p, expected.get(p.id)) for p in rows]
    emit(records, as_json, ["id", "account", "status", "lane", "planned_at", "posted_at", "length", "text"])


@post.command("preview")
@click.argument("article_id", type=int)
@click.option("--network", type=click.Choice(["x", "mastodon", "bluesky"]), help="With the network's defaults.")
@click.option("--account", "account_name", help="With this account's settings (hashtags, UTM, template).")
@json_option
@click.pass_context
def post_preview(ctx, article_id: int, network: str | None, account_name: str | None, as_json: bool) -> None:
    """The teaser ARTICLE would get, and its length by the network's own count."""
    from syndicate.models import SocialAccount
    from syndicate.social import accounts

    if not (network or account_name):
        raise click.UsageError("give --network or --account")
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        article = session.get(Article, article_id)
        if article is None:
            raise NotFound(f"no article {article_id}; `syndicate article list` shows their ids")
        target = accounts.get(session, account_name) if account_name else SocialAccount(
            name=f"(default {network})", network=network, settings={})
        made = posts.preview(target, article)
    if as_json:
        click.echo(json.dumps(dict(network=made.network, text=made.text, length=made.length, limit=made.limit,
                                   url=made.url, hashtags=list(made.hashtags), dropped=list(made.dropped)),
                              ensure_ascii=False, indent=2))
        return
    click.echo(made.text)
    click.echo(f"\n— {made.length}/{made.limit} by {made.network}'s count"
               + (f"; left out to fit: {', '.join(made.dropped)}" if made.dropped else ""), err=True)


def _post_action(name: str, doc: str, action):
    @post.command(name, help=doc)
    @click.argument("post_id", type=int)
    @click.pass_context
    def command(ctx, post_id: int) -> None:
        svc = services(ctx)
        with db.transaction(svc.Session) as session:
            row = posts.get(session, post_id)
            action(row)
            status = row.status
        click.echo(f"post {post_id}: {status}" + (" (breaking lane)" if name == "breaking" else ""))
    return command


_post_action("hold", "Keep a waiting post from going until released.", posts.hold)
_post_action("release", "Let a held post go again, at the account's pace.", posts.release)
_post_action("cancel", "Never post this one.", posts.cancel)
_post_action("breaking", "Move a waiting post to the breaking lane: it goes first.", posts.make_breaking)


@post.command("edit")
@click.argument("post_id", type=int)
@click.option("--text", required=True, help="The teaser as it should go out (it must keep the link).")
@click.pass_context
def post_edit(ctx, post_id: int, text: str) -> None:
    """Replace a waiting post's teaser; refused with the count when it is over the network's limit."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        measured = posts.edit_text(posts.get(session, post_id), text)
    click.echo(f"post {post_id}: teaser replaced ({measured.length}/{measured.limit})")


@post.command("schedule")
@click.argument("post_id", type=int)
@click.option("--at", "at_text", required=True,
              help="When, e.g. '2026-12-01 07:30' in the account's zone, or with an offset.")
@click.pass_context
def post_schedule(ctx, post_id: int, at_text: str) -> None:
    """Post not before a given time (the account's gap and cap still apply, its window doesn't)."""
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        row = posts.get(session, post_id)
        at = _when(at_text, accounts.settings_of(row.account).timezone)
        posts.schedule(row, at)
    click.echo(f"post {post_id}: scheduled for {at.isoformat()}")


@post.command("reshare")
@click.argument("article_id", type=int)
@click.option("--account", "account_name", required=True)
@click.option("--at", "at_text", help="Not before this time (default: at the account's pace).")
@click.pass_context
def post_reshare(ctx, article_id: int, account_name: str, at_text: str | None) -> None:
    """Post a story again on an account: a new post, on purpose (edits never re-post by themselves)."""
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        target = accounts.get(session, account_name)
        article = session.get(Article, article_id)
        if article is None:
            raise NotFound(f"no article {article_id}; `syndicate article list` shows their ids")
        at = _when(at_text, accounts.settings_of(target).timezone) if at_text else None
        row = posts.reshare(session, article, target, at, env_x=svc.settings.x is not None)
        post_id = row.id
    click.echo(f"post {post_id}: re-share of article {article_id} on {account_name} queued")


# ── the kill switch ──────────────────────────────────────────────────────────


@main.group()
def social() -> None:
    """Every account at once: the kill switch."""


@social.command("pause")
@click.option("--reason", default="paused by an editor", show_default=True)
@click.pass_context
def social_pause(ctx, reason: str) -> None:
    """Stop all posting on every account now (queues keep filling; nothing goes out)."""
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        accounts.pause_social(session, reason)
    click.echo(f"all social posting paused: {reason}")


@social.command("resume")
@click.pass_context
def social_resume(ctx) -> None:
    """Post again; each account's backlog drains at its own pace (old stories skipped), never in a flood."""
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        accounts.resume_social(session)
    click.echo("social posting resumed")


@social.command("status")
@json_option
@click.pass_context
def social_status(ctx, as_json: bool) -> None:
    """The kill switch, and each account's queue."""
    from syndicate.models import SocialAccount
    from syndicate.social import accounts

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        paused = accounts.social_paused(session)
        rows = []
        for row in session.scalars(select(SocialAccount).order_by(SocialAccount.name)):
            waiting = posts.projected(session, row)
            rows.append(accounts.describe(row, svc.settings.x is not None) | dict(
                waiting=len(waiting), next_post_at=waiting[0][1] if waiting else None))
        record = dict(posting="paused" if paused else "on", reason=paused.reason if paused else None,
                      since=paused.changed_at if paused else None, accounts=rows)
    if as_json:
        click.echo(json.dumps(record, default=_json_default, ensure_ascii=False, indent=2))
        return
    click.echo(f"social posting: {record['posting']}" + (f" ({record['reason']})" if paused else ""))
    emit(rows, False, ["name", "network", "mode", "status", "waiting", "next_post_at", "paused_reason"])


# ── editors ──────────────────────────────────────────────────────────────────


@main.group()
def user() -> None:
    """Editors who sign in to the desk (/desk)."""


def _new_password() -> str:
    return os.environ.get("SYNDICATE_USER_PASSWORD") or click.prompt(
        "password (10 characters or more)", hide_input=True, confirmation_prompt=True, err=True)


@user.command("add")
@click.argument("name")
@click.option("--timezone", metavar="ZONE", help="the zone the desk shows their times in, e.g. Europe/Berlin")
@click.pass_context
def user_add(ctx, name: str, timezone: str | None) -> None:
    """Create an editor called NAME; the password is asked for twice (hidden) and stored as an argon2id hash.

    SYNDICATE_USER_PASSWORD gives the password instead, for scripts."""
    svc = services(ctx)
    password = _new_password()
    with db.transaction(svc.Session) as session:
        row = editors.add(session, name, password)
        if timezone:
            editors.set_timezone(row, timezone)
        username = row.username
    click.echo(f"editor {username!r} added: sign in at {svc.settings.base_url}/desk")


@user.command("password")
@click.argument("name")
@click.pass_context
def user_password(ctx, name: str) -> None:
    """Set a new password for NAME; every desk session of theirs ends (they sign in again)."""
    svc = services(ctx)
    password = _new_password()
    with db.transaction(svc.Session) as session:
        editors.set_password(editors.get(session, name), password)
    click.echo(f"editor {name!r}: new password set; their desk sessions are signed out")


@user.command("disable")
@click.argument("name")
@click.pass_context
def user_disable(ctx, name: str) -> None:
    """NAME can't sign in any more; their open sessions end at their next click, their API tokens now."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        editors.get(session, name).disabled_at = utcnow()
    click.echo(f"editor {name!r} disabled")


@user.command("list")
@json_option
@click.pass_context
def user_list(ctx, as_json: bool) -> None:
    """Editors, and when each last signed in."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        rows = [editors.describe(e) for e in session.scalars(select(Editor).order_by(Editor.username))]
    emit(rows, as_json, ["username", "status", "created_at", "last_sign_in_at"])


# ── API tokens ───────────────────────────────────────────────────────────────


@main.group()
def token() -> None:
    """API tokens, each with the scopes it was made for: a CMS's to push stories, a scraper's to read
    metrics, a mail provider's to report bounces; an editor's, for the desk's API (/api/v1)."""


SCOPE_HELP = "what the token may do; repeat for more than one. " + "; ".join(
    f"{scope}: {allows}" for scope, allows in api_tokens.SCOPES.items())
SCOPE_USE = {"articles:push": "POST {base}/api/articles", "metrics:read": "GET {base}/metrics",
             "events:bounces": "POST {base}/api/events/bounces", "desk:api": "the desk's API, {base}/api/v1 "
             "(documented at /docs)"}


@token.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, metavar="SCOPE", help=SCOPE_HELP)
@click.option("--editor", "editor_name", metavar="USER",
              help="an editor's own token, for the desk's API (/api/v1): its scope is desk:api")
@click.pass_context
def token_create(ctx, name: str, scopes: tuple[str, ...], editor_name: str | None) -> None:
    """Create a token for NAME and print it, once.

    NAME says who uses it, e.g. `wordpress`. Only a hash of the token is stored. Give each token only
    the scopes its holder needs, e.g. `syndicate token create wordpress --scope articles:push` or
    `syndicate token create prometheus --scope metrics:read`; a token without --scope (and without
    --editor) is refused, since no one scope fits every use.
    """
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        editor = editors.get(session, editor_name) if editor_name else None
        row, secret = api_tokens.create_token(session, name, editor=editor, scopes=scopes)
        granted = api_tokens.scopes_of(row)
    # The token alone on stdout, so `TOKEN=$(syndicate token create wordpress ...)` works; the note on stderr.
    click.echo(secret)
    uses = "; ".join(f"{scope} for {SCOPE_USE[scope].format(base=svc.settings.base_url)}" for scope in granted)
    click.echo(f"token {row.name!r} created. Copy it now: the token itself is not stored and cannot be shown again.\n"
               f"Send it as `Authorization: Bearer <token>`. Scopes: {uses}", err=True)


@token.command("list")
@json_option
@click.pass_context
def token_list(ctx, as_json: bool) -> None:
    """Tokens, their scopes, and when they were last used (never the tokens themselves)."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        rows = [dict(name=t.name, scopes=api_tokens.scopes_of(t) if as_json else " ".join(api_tokens.scopes_of(t)),
                     status="revoked" if t.revoked_at else "active", created_at=t.created_at,
                     last_used_at=t.last_used_at, revoked_at=t.revoked_at)
                for t in api_tokens.list_tokens(session)]
    emit(rows, as_json, ["name", "scopes", "status", "created_at", "last_used_at", "revoked_at"])


@token.command("revoke")
@click.argument("name")
@click.pass_context
def token_revoke(ctx, name: str) -> None:
    """Refuse NAME's token from now on."""
    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        row = api_tokens.revoke(session, name)
    click.echo(f"token {row.name!r} revoked: it is refused from now on")


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


