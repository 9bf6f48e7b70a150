"""The main jobs: the demo, everything on one machine (`run`), the web app, the database, a delivery run
in this process, and the send pace."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from syndicate.cli.common import emit, json_option, lazy, progress, services
from syndicate.config import check_trusted_proxies, check_web_host, describe_base_url
from syndicate.errors import SyndicateError

db = lazy("syndicate.db")
deliveries = lazy("syndicate.delivery.deliveries")
sending = lazy("syndicate.delivery.sending")
models = lazy("syndicate.models")
newsletters_stored = lazy("syndicate.newsletters.stored")


# ── the main jobs ────────────────────────────────────────────────────────────


DEMO_DATA = "syndicate-demo"


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help=f"Folder for the demo's database, key and outbox (default: SYNDICATE_DATA_DIR if set, else "
                   f"./{DEMO_DATA}, never the ./syndicate-data that `syndicate run` uses).")
@click.option("--outbox", type=click.Path(file_okay=False, path_type=Path),
              help=f"Folder for the mails, post payloads and previews (default: {DEMO_DATA}/outbox).")
@click.pass_context
def demo(ctx, data_dir: Path | None, outbox: Path | None) -> None:
    """Run the whole pipeline once on a bundled sample feed, with no services at all."""
    from syndicate.cli import demo as demo_run

    started = time.monotonic()
    # The demo leaves a 07:00 newsletter, a sample feed and three made-up readers: in a folder of its own,
    # unless told where, so that `syndicate run` here next starts empty instead of mailing them.
    env = dict(ctx.find_root().meta.get("env") or os.environ)
    chosen = data_dir is None and not any(env.get(name, "").strip()
                                          for name in ("SYNDICATE_DATA_DIR", "SYNDICATE_DATABASE_URL"))
    if data_dir is not None or chosen:
        env["SYNDICATE_DATA_DIR"] = str((data_dir or Path(DEMO_DATA)).absolute())
    if outbox is not None:
        env["SYNDICATE_OUTBOX"] = str(outbox.absolute())
    ctx.find_root().meta["env"] = env
    svc = services(ctx, migrate=True)
    report = demo_run.run(svc, progress=progress)
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
    if chosen:
        click.echo(f"            the demo's own folder: `syndicate run` here starts without its newsletter and "
                   f"readers. Remove it with: rm -rf {shlex.quote(str(svc.settings.data_dir))}")


@click.command()
@click.option("--host", default=None, help="Web app address (default: SYNDICATE_WEB_HOST or 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Web app port (default: SYNDICATE_WEB_PORT or 8000). Mailed links use it too, unless "
                   "SYNDICATE_BASE_URL is set.")
@click.option("--concurrency", type=int, default=2, show_default=True, help="Worker processes.")
@click.pass_context
def run(ctx, host: str | None, port: int | None, concurrency: int) -> None:
    """Serve everything on this machine: Celery worker, beat scheduler and the web app.

    The same processes as a distributed install, supervised here: if one dies the
    others are stopped too; SIGTERM or Ctrl-C stops them all.
    """
    # Every child reads its settings from this environment: the worker that mails a confirmation link must
    # know the port the web app serves on (SYNDICATE_BASE_URL unset: links follow --host/--port).
    env = _listening(ctx, host, port)
    svc = services(ctx, migrate=True)
    settings = svc.settings
    celery = [sys.executable, "-m", "celery", "-A", "syndicate.tasks"]
    commands = {
        "worker": celery + ["worker", "-Q", "ingest,mail,social", "--concurrency", str(concurrency),
                            "--loglevel", "INFO", "-n", "syndicate@%h"],
        "beat": celery + ["beat", "--loglevel", "INFO", "--schedule", str(settings.data_dir / "celerybeat-schedule")],
        "web": [sys.executable, "-m", "syndicate", "web", "--host", settings.web_host,
                "--port", str(settings.web_port)],
    }
    click.echo(f"broker: {'embedded, ' if settings.embedded_broker else ''}{settings.broker_url}")
    click.echo(f"mail:   {'outbox ' + str(settings.outbox / 'mail') if settings.smtp is None else settings.smtp.host}")
    click.echo(f"X:      {'dry-run (no SYNDICATE_X_* credentials)' if settings.dry_run_social else 'live'}")
    if settings.inbound_imap:
        click.echo(f"inbound: polling {settings.inbound_imap.host}/{settings.inbound_imap.folder} every "
                   f"{settings.inbound_poll_interval} s")
    elif settings.inbound_mail:
        click.echo("inbound: from the MTA (`syndicate inbound serve` or `process`)")
    for line in describe_base_url(settings, settings.web_host, settings.web_port):
        click.echo(line)
    with db.transaction(svc.Session) as session:
        if missing := newsletters_stored.without_postal_address(session, settings):
            click.echo("warning: " + newsletters_stored.postal_address_warning(missing), err=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    children = {name: subprocess.Popen(command, env=env) for name, command in commands.items()}
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


def _listening(ctx, host: str | None, port: int | None) -> dict[str, str]:
    """This command's environment with --host/--port as SYNDICATE_WEB_HOST/PORT, so the settings (links, and
    the origin the sign-up form must come from, while SYNDICATE_BASE_URL is unset) follow where it serves."""
    env = dict(ctx.find_root().meta.get("env") or os.environ)
    if host is not None:
        env["SYNDICATE_WEB_HOST"] = check_web_host(host, "--host")
    if port is not None:
        env["SYNDICATE_WEB_PORT"] = str(port)
    ctx.find_root().meta["env"] = env
    return env


@click.command()
@click.option("--host", default=None, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port to listen on.")
@click.option("--forwarded-allow-ips", "trusted", default=None, metavar="ADDRESSES",
              help="The reverse proxies (addresses or networks, comma-separated, * for any) whose "
                   "X-Forwarded-For names the visitor (default: SYNDICATE_TRUSTED_PROXIES, else none).")
@click.pass_context
def web(ctx, host: str | None, port: int | None, trusted: str | None) -> None:
    """Serve only the web app (workers and beat run elsewhere)."""
    import uvicorn

    if trusted is not None:
        trusted = check_trusted_proxies(trusted, "--forwarded-allow-ips")
    _listening(ctx, host, port)
    settings = services(ctx).settings
    for line in describe_base_url(settings, settings.web_host, settings.web_port)[1:]:
        click.echo(line)  # the pages' links and the sign-up form's origin; workers read their own settings
    trusted = settings.trusted_proxies if trusted is None else trusted
    # X-Forwarded-For is believed only from the listed proxies, and from nobody unless some are listed:
    # else any visitor could send one and get a fresh sign-up limit each time.
    uvicorn.run("syndicate.web.app:app", host=settings.web_host, port=settings.web_port,
                log_level="info", proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None)


# ── database ─────────────────────────────────────────────────────────────────


@click.group("db")
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


@click.command()
@click.pass_context
def deliver(ctx) -> None:
    """Start what is due and send it, in this process (no worker needed)."""
    from syndicate.delivery.batches import send_batch  # the stage loads when the command runs

    svc = services(ctx)
    sending.run_due(svc.Session, svc.settings, models.utcnow())  # starts what is due, revives what is stuck
    with db.transaction(svc.Session) as session:
        # Every pending row, including batches queued for workers that haven't run: claims are
        # conditional, so whichever of us and a worker comes second finds nothing to send.
        batches = deliveries.pending_batches(session, svc.settings.batch_size)
    totals: dict[str, int] = {}
    for edition_id, lo, hi in progress(batches, "Delivering"):
        result = send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi,
                            token=f"cli-{os.getpid()}-{edition_id}-{lo}", pacer=svc.pacer)
        for status, n in result.counts.items():
            totals[status] = totals.get(status, 0) + n
    with db.transaction(svc.Session) as session:
        deliveries.requeue(session, svc.settings, models.utcnow())
    click.echo(", ".join(f"{n} {status}" for status, n in sorted(totals.items())) or "nothing to send")


@click.command()
@json_option
@click.pass_context
def pace(ctx, as_json: bool) -> None:
    """The sending pace now, shared by every worker: all mail's (SYNDICATE_SEND_RATE, halved by a 421 for
    the whole session), and each receiving domain slowed by its own 4.7.x deferrals. A domain not
    listed goes at the pace of all mail."""
    emit(services(ctx).pacer.paces(), as_json, ["to", "per_second", "slowed_since", "deferrals", "full_at"])
