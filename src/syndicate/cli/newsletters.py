"""`syndicate newsletter` and `syndicate edition`: what goes out, and when."""

from __future__ import annotations

import getpass
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import click

from syndicate.cli.common import (
    counting,
    emit,
    in_zone,
    json_option,
    lazy,
    local_time,
    opened,
    removing,
    services,
    show,
    yes_option,
)
from syndicate.errors import NotFound, SyndicateError

if TYPE_CHECKING:
    from syndicate.models import Edition, Newsletter

db = lazy("syndicate.db")
deliveries = lazy("syndicate.delivery.deliveries")
results = lazy("syndicate.delivery.results")
sending = lazy("syndicate.delivery.sending")
waves = lazy("syndicate.delivery.waves")
editions = lazy("syndicate.newsletters.editions")
lists = lazy("syndicate.newsletters.lists")
qa = lazy("syndicate.delivery.qa")
rendering = lazy("syndicate.newsletters.rendering")
schedules = lazy("syndicate.newsletters.schedules")
stored = lazy("syndicate.newsletters.stored")


# ── newsletters, editions, subscribers ───────────────────────────────────────


@click.group()
def newsletter() -> None:
    """Newsletters: settings, schedules, filters; pause, archive, delete."""


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
            click.option("--language", help="What readers get it in: the dates, footer, confirmation mail and "
                         "reader pages, e.g. de; one with translations (the error lists them) [default: en]."),
            click.option("--subject", "subject_template",
                         help="Subject template, e.g. \"{{ top.title }}{% if rest %} and "
                         "{{ rest|plural('more story', 'more stories') }}{% endif %}\"."),
            click.option("--template", help="Template folder under email/ (yours in SYNDICATE_TEMPLATE_DIR)."),
            click.option("--max-items", type=click.IntRange(1, 200), help="Most stories per edition [default: 20]."),
            click.option("--max-age", "max_age_hours", type=click.IntRange(0, 8760), metavar="HOURS",
                         help="Never a story published longer ago than this; 0: any age [default: 72]."),
            click.option("--feed", "feeds_", type=int, multiple=True, help="Only stories of this feed id (repeat)."),
            click.option("--include-category", multiple=True, help="Only stories in this category (repeat)."),
            click.option("--exclude-category", multiple=True, help="Never stories in this category (repeat)."),
            click.option("--breaking-category", multiple=True,
                         help="A story in this category goes out at once, on its own (repeat)."),
            click.option("--count-clicks/--no-count-clicks", default=None,
                         help="Count clicks on each story of an edition, in total, never per reader: story links "
                              "go through BASE_URL/r/… (from the next edition rendered)"
                              + (" [default: off]" if adding else "") + "."),
            click.option("--postal-address", metavar="ADDRESS",
                         help="The sender's postal address in the footer of its mails (bulk-mail rules ask for "
                              "one); lines kept, e.g. $'Example News\\n1 Main St\\nSpringfield, IL 62701'; "
                              "'' for the default, SYNDICATE_POSTAL_ADDRESS."),
            click.option("--welcome/--no-welcome", default=None,
                         help="Send a welcome mail once a reader confirms (templates/email/welcome, or your "
                              "email/welcome-SLUG in SYNDICATE_TEMPLATE_DIR)"
                              + (" [default: off]" if adding else "") + "."),
            click.option("--local-time/--no-local-time", default=None,
                         help="Send each regular edition at the schedule's wall-clock time in each reader's own "
                              "zone (07:00 in Sydney, then Berlin, then New York), from one render; a reader "
                              "without a zone reads in --timezone" + (" [default: off]" if adding else "") + "."),
            click.option("--welcome-digest/--no-welcome-digest", default=None,
                         help="A new reader's first mail also carries the latest edition's stories (of their "
                              "topics), once" + (" [default: off]" if adding else "") + "."),
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
                                      "subject_template", "template", "max_items", "max_age_hours",
                                      "count_clicks", "language", "postal_address", "welcome", "local_time",
                                      "welcome_digest")
               if values.get(k) is not None}
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
        language=newsletter.language,
        schedule=(f"{newsletter.cron} ({newsletter.timezone})" if newsletter.cron
                  else "none (one-off and breaking only)"),
        next_runs=[t.astimezone(zone).isoformat() for t in schedules.upcoming(newsletter)]
        if newsletter.status == "active" else [],
        subject_template=newsletter.subject_template, template=newsletter.template, max_items=newsletter.max_items,
        max_age=f"{newsletter.max_age_hours} hours" if newsletter.max_age_hours else "any",
        feeds=newsletter.feed_ids or "all", include_categories=newsletter.categories_include or "all",
        exclude_categories=newsletter.categories_exclude or [],
        breaking_categories=newsletter.breaking_categories or [],
        first_fill=newsletter.first_fill, count_clicks=newsletter.count_clicks, welcome=newsletter.welcome,
        postal_address=newsletter.postal_address or "the default (SYNDICATE_POSTAL_ADDRESS)",
        local_time=newsletter.local_time, welcome_digest=newsletter.welcome_digest,
    )


def _warn_without_postal_address(session, settings) -> None:
    if missing := stored.without_postal_address(session, settings):
        click.echo("warning: " + stored.postal_address_warning(missing), err=True)




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
        created = lists.add_newsletter(session, slug=slug, first_fill=first_fill, **changes)
        runs = schedules.upcoming(created, 1)
        click.echo(f"newsletter {created.slug}: "
                   + (f"next edition at {runs[0].astimezone(ZoneInfo(created.timezone)).isoformat()}" if runs
                      else "no schedule; cut editions with `syndicate edition cut`"))
        _warn_without_postal_address(session, svc.settings)


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
        lists.update_newsletter(session, lists.get_newsletter(session, slug), **changes)
        show(_describe(lists.get_newsletter(session, slug)), False)
        _warn_without_postal_address(session, svc.settings)


@newsletter.command("show")
@click.argument("slug")
@json_option
@click.pass_context
def newslettershow(ctx, slug, as_json) -> None:
    """A newsletter's settings and its next five send times, in its time zone."""
    with opened(ctx) as (svc, session):
        record = _describe(lists.get_newsletter(session, slug))
    show(record, as_json)


@newsletter.command("list")
@json_option
@click.pass_context
def newsletter_list(ctx, as_json: bool) -> None:
    with opened(ctx) as (svc, session):
        rows = [dict(slug=n.slug, name=n.name, cron=n.cron, timezone=n.timezone, status=n.status,
                     next_run_at=in_zone(n.next_run_at, n.timezone), from_address=n.from_address)
                for n in stored.all_newsletters(session, by="slug")]
    emit(rows, as_json, ["slug", "name", "cron", "timezone", "status", "next_run_at"])


@newsletter.command("pause")
@click.argument("slug")
@click.pass_context
def newsletter_pause(ctx, slug) -> None:
    """No regular or breaking editions until resumed (editions already scheduled keep their time)."""
    with opened(ctx) as (svc, session):
        lists.pause_newsletter(session, lists.get_newsletter(session, slug))
    click.echo(f"newsletter {slug}: paused")


@newsletter.command("resume")
@click.argument("slug")
@click.pass_context
def newsletter_resume(ctx, slug) -> None:
    """Run again from the next scheduled time; what was missed while paused is not sent in a rush."""
    with opened(ctx) as (svc, session):
        found = lists.get_newsletter(session, slug)
        lists.resume_newsletter(session, found, by="cli")
        runs = schedules.upcoming(found, 1)
    click.echo(f"newsletter {slug}: active" + (f", next edition at {runs[0].isoformat()}" if runs else ""))


@newsletter.command("archive")
@click.argument("slug")
@yes_option
@click.pass_context
def newsletter_archive(ctx, slug: str, yes: bool) -> None:
    """Retire a newsletter: no more editions (those not sent yet are cancelled) and no new readers; its
    subscribers and its public archive stay. `resume` brings it back."""
    with opened(ctx) as (svc, session):
        plan = lists.archive_plan(session, lists.get_newsletter(session, slug))
    removing(plan, "Archive", yes)
    with opened(ctx) as (svc, session):
        lists.archive_newsletter(session, lists.get_newsletter(session, slug), "cli")
    click.echo(f"newsletter {slug}: archived")


@newsletter.command("delete")
@click.argument("slug")
@click.option("--force", is_flag=True, help="Delete it even though it has sent editions, and them with it.")
@yes_option
@click.pass_context
def newsletter_delete(ctx, slug: str, force: bool, yes: bool) -> None:
    """Delete a newsletter with its subscriptions, editions and deliveries. One that has sent editions is
    refused unless --force: archive it instead, which keeps them."""
    with opened(ctx) as (svc, session):
        plan = lists.delete_plan(session, lists.get_newsletter(session, slug))
    removing(plan, "Delete", yes, force)
    with opened(ctx) as (svc, session):
        lists.delete_newsletter(session, lists.get_newsletter(session, slug), "cli", force)
    click.echo(f"newsletter {slug}: deleted")


@click.group()
def edition() -> None:
    """Editions: cut, preview, test, edit, schedule, pause, resume, cancel, resend.

    An edition is named by its id or as SLUG/NUMBER (e.g. morning/12).
    """


def _edition(session, ref: str) -> Edition:
    slug, _, number = ref.rpartition("/")
    if slug and number.isdigit():
        return editions.get_edition(session, slug, int(number), public=False)
    missing = f"no edition {ref!r}; name it by id or as SLUG/NUMBER (`syndicate edition list`)"
    if not ref.isdigit():
        raise NotFound(missing)
    return stored.edition_by_id(session, int(ref), missing)


def _edition_command(name: str):
    """`syndicate edition NAME REF`: REF an edition's id or SLUG/NUMBER."""
    def register(command):
        return edition.command(name)(click.argument("ref")(click.pass_context(command)))
    return register


@contextmanager
def _opened_edition(ctx, ref: str):
    """As `opened`, with the edition REF names: (services, session, edition)."""
    with opened(ctx) as (svc, session):
        yield svc, session, _edition(session, ref)


def queue(batches) -> None:
    """Hand the batches of an edition that started to the workers (after the commit that made them)."""
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
    checks = edition.checks or {}
    if edition.status != "blocked":  # a blocked edition's note says it already
        text += "".join(f"\nwould block: [{f['check']}] {f['message']}" for f in checks.get("blocking", []))
    text += "".join(f"\nlet pass: [{o['check']}] by {o['by']}: {o['reason']}" for o in edition.overrides or [])
    if edition.left_out_for_age:
        text += (f"\nleft out: {edition.left_out_for_age} stories older than {edition.newsletter.max_age_hours} "
                 "hours")
    return text + "".join(f"\nwarning: {w}" for w in checks.get("warnings", edition.warnings or []))


def _who() -> str:
    """Who overrode a check from the command line: the account that ran it."""
    try:
        return f"{getpass.getuser()} (cli)"
    except (KeyError, OSError):  # no user name in the environment or the password database
        return "cli"


CUT_BAR_FROM = 100_000  # readers: a fan-out this long takes seconds, worth a bar on a terminal


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
    batches, refused = [], None
    with db.transaction(svc.Session) as session:
        newsletter = lists.get_newsletter(session, slug)
        when = local_time(at, newsletter.timezone) if at else None  # a typo is refused before anything is made
        if when:
            schedules.check_time(when)
        if next_run:
            made = editions.prepare_next(session, newsletter, svc.settings)
        elif draft or at:
            made = editions.create_edition(session, newsletter, svc.settings, kind="one-off", status="draft")
        else:
            with counting("fanning out", "deliveries", at_least=CUT_BAR_FROM) as progress:
                cut = sending.cut(session, newsletter, svc.settings, kind="one-off", progress=progress)
            made, batches = cut.edition, cut.batches
        if made.html and made.status in ("draft", "scheduled") and not batches:  # checked at the cut too
            try:
                with session.begin_nested():
                    if when and made.status == "draft":
                        sending.schedule(session, made, svc.settings, when)
                    else:
                        qa.gate(session, svc.settings, made)
            except sending.Blocked as e:  # kept as a draft, to fix or to let pass
                refused = str(e)
                qa.gate(session, svc.settings, made)
        summary = _summary(made)
        blocked = made.status == "blocked" or refused
    queue(batches)
    click.echo(summary + (f", {len(batches)} batches queued" if batches else ""))
    if blocked:
        click.echo(f"not scheduled: {refused}" if refused else "it did not go out: see the note above", err=True)
        ctx.exit(1)


@edition.command("list")
@click.option("--newsletter", "slug", help="Only this newsletter.")
@click.option("--status", multiple=True, help="Only editions with this status (repeat).")
@json_option
@click.pass_context
def edition_list(ctx, slug: str | None, status: tuple[str, ...], as_json: bool) -> None:
    with opened(ctx) as (svc, session):
        found = stored.recent_editions(session, slug, status)
        counts = deliveries.counts_of(session, [e.id for e in found])  # one query for them all
        # Times in each newsletter's own zone, as its schedule is written (labelled: CET, CEST, UTC…).
        rows = [dict(id=e.id, newsletter=e.newsletter.slug, number=e.number, kind=e.kind, status=e.status,
                     scheduled_for=in_zone(e.scheduled_for, e.newsletter.timezone), subject=e.subject,
                     cut_at=in_zone(e.cut_at, e.newsletter.timezone), note=e.note,
                     deliveries={s: n for s, n in counts[e.id].items() if n},
                     blocking=[f["check"] for f in (e.checks or {}).get("blocking", [])],
                     left_out_for_age=e.left_out_for_age)
                for e in found]
    columns = ["id", "newsletter", "number", "kind", "status", "scheduled_for", "subject", "deliveries"]
    if not as_json and any(r["status"] == "blocked" for r in rows):
        columns.append("note")  # why it didn't go out, on the line that says it didn't
    emit(rows, as_json, columns)


@_edition_command("show")
@json_option
def edition_show(ctx, ref: str, as_json: bool) -> None:
    """An edition's stories, status, warnings, and what happened: counts by outcome."""
    with _opened_edition(ctx, ref) as (svc, session, found):
        record = dict(
            id=found.id, newsletter=found.newsletter.slug, number=found.number, kind=found.kind,
            status=found.status, subject=found.subject, scheduled_for=found.scheduled_for,
            started_at=found.started_at, sent_at=found.sent_at, note=found.note,
            blocking=[f"[{f['check']}] {f['message']}" for f in (found.checks or {}).get("blocking", [])],
            let_pass=[f"[{o['check']}] by {o['by']} at {o['at']}: {o['reason']}" for o in found.overrides or []],
            warnings=(found.checks or {}).get("warnings", found.warnings),
            left_out_for_age=found.left_out_for_age, html_bytes=len(found.html.encode()),
            stories=[f"{item.article_id}: {item.article.title}" for item in found.items],
            counts=deliveries.report(session, found),
            waves=waves.summary(session, found),
        )
        did = results.of_edition(session, found)
    if as_json:
        record["results"] = {k: v for k, v in did.items() if k != "sent_per_minute"} | dict(
            sent_per_minute=[dict(minute=m, sent=n) for m, n in did["sent_per_minute"]])
        show(record, True)
        return
    counts, said = record.pop("counts"), record.pop("waves")
    show(record, False)
    click.echo("counts:       " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    if said:  # at each reader's local time
        click.echo("waves:        " + waves.in_words(said))
    click.echo(f"rates:        of {did['delivered']} delivered: " + ", ".join(
        f"{_percent(did['rates'][k])} {k} ({did[k]})" for k in results.RATES))
    if did["counts_clicks"]:
        click.echo(f"clicks:       {did['clicks']}" + (f" ({_percent(did['click_rate'])} of delivered)"
                                                       if did["click_rate"] is not None else ""))
        for link in did["links"]:
            click.echo(f"  {link['number']:>3}. {link['clicks']:>6}  {link['title']}")
    else:
        click.echo("clicks:       not counted (`syndicate newsletter edit SLUG --count-clicks` counts them)")


def _percent(share: float | None) -> str:
    return "—" if share is None else f"{share:.1%}"


@_edition_command("preview")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for the files.")
@click.option("--open", "open_", is_flag=True, help="Open the HTML in a browser.")
def edition_preview(ctx, ref: str, out: Path | None, open_: bool) -> None:
    """Write the edition's HTML and text as a recipient gets them, and print the paths."""
    with _opened_edition(ctx, ref) as (svc, session, found):
        if not found.html:
            raise SyndicateError(f"edition {ref} has no content ({found.status}: {found.note})")
        html, text = rendering.write_preview(svc.settings, found, out)
        warnings = found.warnings
    click.echo(html)
    click.echo(text)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if open_:
        click.launch(str(html))


@_edition_command("test-send")
@click.option("--to", "addresses", multiple=True, required=True, help="An address to send the test to (repeat).")
def edition_test_send(ctx, ref: str, addresses: tuple[str, ...]) -> None:
    """Send the edition to these addresses now, marked [Test]; no subscriber is counted or changed."""
    from syndicate.delivery.copies import send_tests  # the stage loads when the command runs

    with _opened_edition(ctx, ref) as (svc, session, found):
        newsletter = found.newsletter  # loaded now: the sending happens after the transaction
    results = send_tests(svc.settings, svc.transport, newsletter, found, list(addresses))
    for result in results:
        click.echo(f"{result['address']}: {result['reply']}" if result["accepted"]
                   else f"{result['address']}: refused: {result['reply']}", err=not result["accepted"])
    if not all(result["accepted"] for result in results):
        ctx.exit(1)


def _blurb(value: str) -> tuple[int, str]:
    article_id, sep, text = value.partition("=")
    if not sep or not article_id.strip().isdecimal():
        raise click.BadParameter(f"{value[:40]!r}: give ARTICLE_ID=TEXT, e.g. --blurb '812=Worth the long read'",
                                 param_hint="--blurb")
    return int(article_id), text


def _show_edited(found: Edition) -> None:
    click.echo(_summary(found) + f"\nsubject: {found.subject}")
    for item in found.items:
        click.echo(f"  {item.article_id}: {item.article.title}" + (" (with a blurb)" if item.blurb else ""))


@_edition_command("edit")
@click.option("--remove", type=int, multiple=True, help="Take this article id out (repeat).")
@click.option("--order", help="Article ids in the order wanted, comma-separated; the rest follow.")
@click.option("--subject", help="A subject of your own ('' goes back to the newsletter's subject template).")
@click.option("--intro", help="An editor's note above the stories, in Markdown ('' takes it away).")
@click.option("--blurb", "blurbs", multiple=True, metavar="ID=TEXT",
              help="Your words on one story, above its lead, in Markdown (repeat; 'ID=' takes one away).")
@click.option("--sponsor", "sponsor_text", help="A sponsor's line, marked Sponsored, below the stories ('' takes "
                                                "the block away).")
@click.option("--sponsor-url", help="The sponsor's link, a full https:// address ('' for none).")
def edition_edit(ctx, ref: str, remove: tuple[int, ...], order: str | None, subject: str | None,
                 intro: str | None, blurbs: tuple[str, ...], sponsor_text: str | None,
                 sponsor_url: str | None) -> None:
    """Change an edition that hasn't started sending; the render is redone once, with every change."""
    try:
        ordered = [int(x) for x in order.replace(" ", "").split(",") if x] if order else None
    except ValueError:
        raise click.BadParameter(f"{order!r}: give article ids separated by commas, e.g. 12,9,15") from None
    said = dict(_blurb(b) for b in blurbs)
    if not remove and ordered is None and all(v is None for v in (subject, intro, sponsor_text, sponsor_url)) \
            and not said:
        raise click.UsageError("nothing to change: give --remove, --order, --subject, --intro, --blurb, --sponsor "
                               "or --sponsor-url")
    with opened(ctx) as (svc, session):
        found = editions.edit(session, _edition(session, ref), svc.settings, remove=list(remove), order=ordered,
                              subject=subject, intro=intro, blurbs=said, sponsor_text=sponsor_text,
                              sponsor_url=sponsor_url)
        qa.gate(session, svc.settings, found)
        _show_edited(found)


@_edition_command("add")
@click.option("--story", "stories", type=click.IntRange(1), multiple=True, required=True,
              help="An article id to add at the end (repeat); `syndicate article list --search WORDS` finds it.")
def edition_add(ctx, ref: str, stories: tuple[int, ...]) -> None:
    """Add stories to an edition that hasn't started sending, whatever the newsletter's filters say; the render
    is redone. A story in another edition of the newsletter is refused (readers would get it twice)."""
    with opened(ctx) as (svc, session):
        found = editions.edit(session, _edition(session, ref), svc.settings, add=list(stories))
        qa.gate(session, svc.settings, found)
        _show_edited(found)


@_edition_command("schedule")
@click.option("--at", "at", required=True,
              help="e.g. '2026-12-01 07:00' (the newsletter's zone) or with an offset; now: at the next tick.")
@click.option("--override", "checks", multiple=True, metavar="CHECK",
              help="Let this pre-send check pass for this edition (repeat): unsubscribe, size, links, text-links.")
@click.option("--reason", help="Why the check may pass; kept with the edition, with who said so.")
def edition_schedule(ctx, ref: str, at: str, checks: tuple[str, ...], reason: str | None) -> None:
    """Schedule or reschedule an edition that hasn't started sending; the pre-send checks must pass."""
    if checks and not (reason or "").strip():
        raise click.UsageError("--override needs --reason: say why the check may pass (it is kept)")
    with _opened_edition(ctx, ref) as (svc, session, found):
        sending.schedule(session, found, svc.settings, local_time(at, found.newsletter.timezone),
                         override=checks, reason=reason, by=_who())
        click.echo(_summary(found))


@_edition_command("pause")
def edition_pause(ctx, ref: str) -> None:
    """Stop sending (or hold a scheduled edition); `resume` carries on with whoever hasn't got it."""
    with _opened_edition(ctx, ref) as (svc, session, found):
        editions.pause(session, found)
        click.echo(_summary(found))


@_edition_command("resume")
def edition_resume(ctx, ref: str) -> None:
    """Carry on with a paused edition: its readers who haven't got it get it now (or it waits for its time)."""
    with _opened_edition(ctx, ref) as (svc, session, found):
        batches = sending.resume(session, found, svc.settings)
        summary = _summary(found)
    queue(batches)
    click.echo(summary + (f", {len(batches)} batches queued" if batches else ""))


@_edition_command("cancel")
def edition_cancel(ctx, ref: str) -> None:
    """Nothing more of it goes out; stories nobody got are freed for the next edition."""
    with _opened_edition(ctx, ref) as (svc, session, found):
        skipped = editions.cancel(session, found)
        click.echo(_summary(found) + (f"; {skipped} recipients won't get it" if skipped else ""))


@_edition_command("resend-failed")
def edition_resend_failed(ctx, ref: str) -> None:
    """Send again to the recipients it failed for — only them, only those still subscribed, and only those
    whose later mail hasn't carried its stories already."""
    with _opened_edition(ctx, ref) as (svc, session, found):
        batches, left_out = sending.resend_failed(session, found, svc.settings)
        summary = _summary(found)
    queue(batches)
    click.echo(f"{summary}: {len(batches)} batches queued"
               + (f"; {left_out} failed recipients left out (unsubscribed, bounced or complained since, or "
                  "its stories came with a later mail)"
                  if left_out else ""))
