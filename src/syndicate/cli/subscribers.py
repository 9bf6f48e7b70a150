"""`syndicate subscriber`: readers, one by one or as CSV files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from syndicate.cli.common import cell, counting, emit, json_option, lazy, opened, services, show
from syndicate.ledger import SUBSCRIBER_SUPPRESSED

db = lazy("syndicate.db")
editions = lazy("syndicate.newsletters.editions")
lists = lazy("syndicate.newsletters.lists")
consent = lazy("syndicate.subscribers.consent")
stored = lazy("syndicate.subscribers.stored")
zones = lazy("syndicate.subscribers.zones")

MISSING = "no subscriber {!r}; `syndicate subscriber list` shows them"


@click.group()
def subscriber() -> None:
    """Subscribers."""


@subscriber.command("add")
@click.argument("email")
@click.option("--newsletter", "slugs", multiple=True, required=True, help="Newsletter slug (repeatable).")
@click.option("--name")
@click.option("--confirmed", is_flag=True, help="Skip double opt-in (you have their consent already).")
@click.option("--timezone", help="The reader's IANA time zone, e.g. Australia/Sydney, for newsletters sent at each "
              "reader's local time (a new reader's only; default: each newsletter's own).")
@click.pass_context
def subscriber_add(ctx, email, slugs, name, confirmed, timezone) -> None:
    from syndicate.tasks import send_confirmation

    with opened(ctx) as (svc, session):
        ids = [lists.get_newsletter(session, slug).id for slug in slugs]
        signup = consent.subscribe(session, email, ids, name=name, confirmed=confirmed, source="cli",
                                   settings=svc.settings, timezone=zones.checked(timezone))
        subscriber_id, status, send = signup.subscriber.id, signup.subscriber.status, signup.send_confirmation
    if send:
        send_confirmation.delay(subscriber_id)
    click.echo(f"subscriber {subscriber_id}: {status}" + (" (confirmation mail queued)" if send else ""))


@subscriber.command("show")
@click.argument("email")
@json_option
@click.pass_context
def subscribershow(ctx, email: str, as_json: bool) -> None:
    """A subscriber's status, subscriptions and timeline: every edition delivered, skipped (why) or
    failed (the server's reply), and what happened to the address."""
    from syndicate.subscribers import timeline

    with opened(ctx) as (svc, session):
        found = consent.by_email(session, email, MISSING.format(email))
        record = dict(email=found.email, name=found.name, status=found.status, since=found.created_at,
                      timezone=found.timezone,
                      confirmed_at=found.confirmed_at, subscriptions=timeline.subscriptions(session, found.id),
                      timeline=[e.as_dict() for e in timeline.timeline(session, found.id)])
    if as_json:
        show(record, True)
        return
    click.echo(f"{record['email']}" + (f" ({record['name']})" if record["name"] else "") + f": {record['status']}, "
               f"since {cell(record['since'])}" + (f", reads in {record['timezone']}" if record["timezone"] else ""))
    for sub in record["subscriptions"]:
        click.echo(f"  {sub['newsletter']}: {sub['status']}")
    click.echo("")
    for entry in record["timeline"]:
        edition_name = f"{entry['newsletter']}/{entry['edition']}" if entry["edition"] else (entry["newsletter"] or "")
        click.echo(f"{cell(entry['at'])}  {entry['what']:<22} {edition_name:<16} {entry['detail'] or ''}".rstrip())


@subscriber.command("restore")
@click.argument("email")
@click.option("--reason", required=True, help="Why mail may go to it again, e.g. 'reader asked by phone'.")
@click.pass_context
def subscriber_restore(ctx, email: str, reason: str) -> None:
    """Let mail go again to an address that bounced, complained or left everything — only with the
    reader's say-so. The newsletters they left stay left; they rejoin from their preferences page."""
    with opened(ctx) as (svc, session):
        found = consent.by_email(session, email, MISSING.format(email))
        consent.restore(session, found, reason)
        active = [s.newsletter.slug for s in found.subscriptions if s.status == "active"]
    click.echo(f"{found.email}: confirmed again; gets {', '.join(active) or 'no newsletter yet'}")


@subscriber.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Don't ask: the reader's request is on record.")
@click.pass_context
def subscriber_erase(ctx, email: str, yes: bool) -> None:
    """Erase everything held about EMAIL at the reader's request (GDPR Art. 17): the address, name,
    subscriptions, timeline and the mails about them. Their deliveries stay in the editions' figures,
    naming nobody; a keyed hash of the address stays, so no import adds it back (their own sign-up can)."""
    from syndicate.subscribers import rights

    with opened(ctx) as (svc, session):
        found = consent.by_email(session, email, MISSING.format(email))
        if not yes:
            subscriptions = len(found.subscriptions)
            click.confirm(f"Erase {found.email} ({subscriptions} subscriptions) for good? It can't be undone",
                          abort=True)
        done = rights.erase(session, found, "cli")
    click.echo(f"{found.email} erased: {done.summary()}; the address is kept only as a keyed hash, so no "
               "import adds it back")


@subscriber.command("export-data")
@click.argument("email")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON to this file instead of stdout.")
@click.pass_context
def subscriber_export_data(ctx, email: str, output: Path | None) -> None:
    """Everything held about EMAIL as JSON (GDPR Art. 15 and 20), in the format syndicate-personal-data/1:
    the subscriber, consent, subscriptions, timeline, deliveries and the mails about them."""
    from syndicate.subscribers import rights

    with opened(ctx) as (svc, session):
        data = rights.export(session, consent.by_email(session, email, MISSING.format(email)))
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if output is None:
        click.echo(text)
        return
    output.write_text(text + "\n", encoding="utf-8")
    click.echo(f"everything held about {data['subscriber']['email']} written to {output}", err=True)


@subscriber.command("list")
@json_option
@click.pass_context
def subscriber_list(ctx, as_json: bool) -> None:
    with opened(ctx) as (svc, session):
        rows = [dict(id=s.id, email=s.email, name=s.name, status=s.status, created_at=s.created_at,
                     newsletters=slugs)
                for s, slugs in stored.all_subscribers(session)]
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
    separated by ; , or spaces) are optional; so are topics (the newsletters' categories the reader
    wants, separated by |; * for every story) and frequency (each, daily or weekly), where an empty
    cell keeps what a reader has. Commas, semicolons or tabs; UTF-8 (Excel: 'CSV UTF-8').
    New addresses are confirmed at once: you vouch for their consent (or use --double-opt-in).
    Nobody who unsubscribed, bounced or complained is added back without --force, and importing
    the same file twice changes nothing. Bad rows are listed by line and the rest is imported;
    the exit code is then 1. A file that isn't CSV at all is refused before anything is written;
    the rows then go in 5,000 per transaction, with a progress bar on a terminal: stopped half-way,
    the same file imported again finishes the job.
    """
    from syndicate.subscribers import csv_files

    svc = services(ctx)
    with db.transaction(svc.Session) as session:
        ids = [lists.get_newsletter(session, slug).id for slug in slugs]

    def confirm(subscriber_ids: list[int]) -> None:  # each batch's, queued after its commit
        # Celery and every stage behind the tasks are ~55 MB: loaded only when a mail is to be queued.
        from syndicate.tasks import send_confirmation

        for subscriber_id in subscriber_ids:
            send_confirmation.delay(subscriber_id)

    done = 0

    def counted(rows: int, total: int) -> None:
        nonlocal done
        done = rows
        if bar is not None:
            bar(rows, total)

    if not as_json and sys.stderr.isatty():
        click.echo("checking the file…", err=True)  # the first pass, before the bar has a total
    try:
        with counting("importing", "rows", shown=not as_json) as bar:
            report = csv_files.import_file(svc.Session, file, ids, force=force, confirmed=not double_opt_in,
                                           progress=counted, confirm=confirm)
    except KeyboardInterrupt:
        if done:
            click.echo(f"stopped after {done:,} rows, which are in: import the same file again to finish "
                       "(what is in stays as it is)", err=True)
        raise
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
              type=click.Choice(["pending", "confirmed", *SUBSCRIBER_SUPPRESSED]),
              help="Only subscribers with this status (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (UTF-8 with a byte order mark, so Excel reads accents) instead of stdout.")
@click.pass_context
def subscriber_export(ctx, slug: str | None, statuses: tuple[str, ...], output: Path | None) -> None:
    """Write subscribers as CSV: email,name,status,newsletters,created_at,confirmed_at,topics,frequency.

    The file imports back unchanged: nobody in it who left, bounced or complained is added back.
    """
    from syndicate.subscribers import csv_files

    with opened(ctx) as (svc, session):
        newsletter_id = lists.get_newsletter(session, slug).id if slug else None
        if output is None:
            csv_files.export_csv(session, sys.stdout, newsletter_id, list(statuses))
            return
        with output.open("w", encoding="utf-8-sig", newline="") as out:
            count = csv_files.export_csv(session, out, newsletter_id, list(statuses))
    click.echo(f"{count} subscribers written to {output}", err=True)
