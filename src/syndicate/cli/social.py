"""`syndicate account`, `syndicate post` and `syndicate social`: the teasers and where they go."""

from __future__ import annotations

import json
import os

import click

from syndicate.cli.common import (
    emit,
    json_default,
    json_option,
    lazy,
    local_time,
    opened,
    removing,
    services,
    show,
    yes_option,
)
from syndicate.errors import TransportError

db = lazy("syndicate.db")
posts = lazy("syndicate.social.posts")
pace = lazy("syndicate.social.pace")
retraction = lazy("syndicate.social.retraction")
stored = lazy("syndicate.ingest.stored")

ARTICLE_MISSING = "no article {}; `syndicate article list` shows their ids"


# ── social accounts ──────────────────────────────────────────────────────────


@click.group()
def account() -> None:
    """Social accounts (X, Mastodon, Bluesky): add, test, edit, pause, resume, disable, enable, delete."""


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
                         help="Stories in this category take the breaking lane (repeat the option; '' for none)."),
            click.option("--skip-category", multiple=True,
                         help="Stories in this category are not posted here, e.g. Sponsored (repeat; '' for none)."),
            click.option("--dry-run/--live", default=None,
                         help="Dry run: record the exact requests and planned times, call nothing."),
            click.option("--instance", help="Mastodon: the instance's address, e.g. https://mastodon.social."),
            click.option("--handle", help="Bluesky: the handle, e.g. newsroom.bsky.social."),
            click.option("--service", help="Bluesky: the PDS (default https://bsky.social)."),
            click.option("--visibility", type=click.Choice(["public", "unlisted", "private"]),
                         help="Mastodon: who sees the posts in timelines (default unlisted)."),
            click.option("--language", help="ISO 639-1 language for posts whose story's own is unknown, e.g. en."),
            click.option("--images/--no-images", default=None,
                         help="Post a story's picture with its teaser (default), or never; on X and Mastodon a "
                              "picture takes the place of the link card."),
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
    for option, key in (("breaking_category", "breaking_categories"), ("skip_category", "skip_categories")):
        if values.get(option):  # given: the whole list, as given ('' alone clears it)
            changes[key] = [name for name in values[option] if name.strip()]
    for key in ("dry_run", "images"):
        if values.get(key) is not None:
            changes[key] = values[key]
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

    with opened(ctx) as (svc, session):
        row = accounts.by_name(session, name)
        credentials = _ask_credentials(row.network) if ask_credentials else None
        accounts.edit(session, svc.settings.secret_key, row, _account_settings(values, row.settings), credentials)
    click.echo(f"account {name!r} updated")


@account.command("list")
@json_option
@click.pass_context
def account_list(ctx, as_json: bool) -> None:
    """Accounts, their mode and status (paused, and why)."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        rows = [accounts.describe(a, svc.settings.x is not None) for a in accounts.all_accounts(session)]
    emit(rows, as_json, ["name", "network", "mode", "status", "paused_reason", "parked_until"])


@account.command("show")
@click.argument("name")
@json_option
@click.pass_context
def accountshow(ctx, name: str, as_json: bool) -> None:
    """One account's settings and state (never its credentials)."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        record = accounts.describe(accounts.by_name(session, name), svc.settings.x is not None)
    show(record | {"settings": json.dumps(record["settings"], ensure_ascii=False)} if not as_json else record,
         as_json)


@account.command("test")
@click.argument("name")
@click.pass_context
def account_test(ctx, name: str) -> None:
    """Check the credentials with a harmless call, and read the instance's limits (Mastodon).

    Says exactly what is wrong when it fails; exit status 1 then."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        row = accounts.by_name(session, name)
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
            accounts.edit(session, svc.settings.secret_key, accounts.by_name(session, name),
                          dict(max_characters=rules.limit, url_cost=rules.url_cost, **client.image_limits))
    click.echo(f"{name}: OK — {who}")


@account.command("pause")
@click.argument("name")
@click.option("--reason", default="paused by an editor", show_default=True)
@click.pass_context
def account_pause(ctx, name: str, reason: str) -> None:
    """Stop posting on one account (its queue waits)."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        accounts.pause(accounts.by_name(session, name), reason)
    click.echo(f"account {name!r} paused: {reason}")


@account.command("resume")
@click.argument("name")
@click.pass_context
def account_resume(ctx, name: str) -> None:
    """Post again; the waiting queue drains at the account's pace, never in a burst."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        accounts.resume(accounts.by_name(session, name))
    click.echo(f"account {name!r} resumed")


@account.command("disable")
@click.argument("name")
@yes_option
@click.pass_context
def account_disable(ctx, name: str, yes: bool) -> None:
    """Post nothing more on an account: its waiting posts are skipped (each says why), nothing new is planned.
    What it published stays, and withdrawing a story still takes it back. `enable` brings it back."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        plan = accounts.disable_plan(session, accounts.by_name(session, name))
    removing(plan, "Disable", yes)
    with opened(ctx) as (svc, session):
        accounts.disable(session, accounts.by_name(session, name), "cli")
    click.echo(f"account {name!r} disabled")


@account.command("enable")
@click.argument("name")
@click.pass_context
def account_enable(ctx, name: str) -> None:
    """Post on a disabled account again: stories first seen from now on (not those that came meanwhile)."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        accounts.enable(session, accounts.by_name(session, name), "cli")
    click.echo(f"account {name!r} enabled")


@account.command("delete")
@click.argument("name")
@yes_option
@click.pass_context
def account_delete(ctx, name: str, yes: bool) -> None:
    """Delete an account that never published, with its unpublished posts. One that published is refused
    (its posts' rows are the record of what went out, and what withdrawing a story takes back): disable it."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        plan = accounts.delete_plan(session, accounts.by_name(session, name))
    removing(plan, "Delete", yes)
    with opened(ctx) as (svc, session):
        accounts.delete(session, accounts.by_name(session, name), "cli")
    click.echo(f"account {name!r} deleted")


# ── posts ────────────────────────────────────────────────────────────────────


@click.group()
def post() -> None:
    """Social posts (teasers): the queue; preview, edit, schedule, hold, release, cancel, re-share, retract."""


@post.command("list")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["pending", "held", "sending", "posted", "ambiguous", "failed", "skipped",
                                 "cancelled", "retracted"]), help="Only these (repeat).")
@click.option("--account", "account_name", help="Only this account.")
@click.option("--limit", type=int, default=100, show_default=True)
@json_option
@click.pass_context
def post_list(ctx, statuses, account_name, limit: int, as_json: bool) -> None:
    """Posts, newest first; waiting ones with the time pacing expects them to go."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        account = accounts.by_name(session, account_name) if account_name else None
        rows = posts.newest(session, limit, statuses, account)
        expected = {p.id: at for a in {r.account for r in rows} for p, at in pace.projected(session, a)}
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
    with opened(ctx) as (svc, session):
        article = stored.article_by_id(session, article_id, ARTICLE_MISSING.format(article_id))
        target = accounts.by_name(session, account_name) if account_name else SocialAccount(
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


def _post_action(name: str, doc: str, action: str):
    @post.command(name, help=doc)
    @click.argument("post_id", type=int)
    @click.pass_context
    def command(ctx, post_id: int) -> None:
        svc = services(ctx)
        with db.transaction(svc.Session) as session:
            row = posts.by_id(session, post_id)
            getattr(posts, action)(row)  # by name: the posts module loads when a command runs
            status = row.status
        click.echo(f"post {post_id}: {status}" + (" (breaking lane)" if name == "breaking" else ""))
    return command


_post_action("hold", "Keep a waiting post from going until released.", "hold")
_post_action("release", "Let a held post go again, at the account's pace.", "release")
_post_action("cancel", "Never post this one.", "cancel")
_post_action("breaking", "Move a waiting post to the breaking lane: it goes first.", "make_breaking")


@post.command("retract")
@click.argument("post_id", type=int)
@click.pass_context
def post_retract(ctx, post_id: int) -> None:
    """Take a post back: delete it on its network, recorded on the post with who ("cli") and when.

    A post that hasn't gone out is cancelled instead; one X only called a duplicate (ambiguous) has no id to
    delete by, so it is recorded and you delete it by hand. Exit status 1 while it is still up or needs your hand."""
    svc = services(ctx)
    done = retraction.retract(svc.Session, svc.social_client, post_id, by="cli")
    click.echo(said(done))
    if not done.settled:
        ctx.exit(1)


def said(retraction) -> str:
    """One post's retraction on a line: `post 7 (x-main, x): retracted: deleted from X: https://…`."""
    return f"post {retraction.post_id} ({retraction.account}, {retraction.network}): {retraction.outcome}: " \
           f"{retraction.message}"


@post.command("edit")
@click.argument("post_id", type=int)
@click.option("--text", required=True, help="The teaser as it should go out (it must keep the link).")
@click.pass_context
def post_edit(ctx, post_id: int, text: str) -> None:
    """Replace a waiting post's teaser; refused with the count when it is over the network's limit."""
    with opened(ctx) as (svc, session):
        measured = posts.edit_text(posts.by_id(session, post_id), text)
    click.echo(f"post {post_id}: teaser replaced ({measured.length}/{measured.limit})")


@post.command("schedule")
@click.argument("post_id", type=int)
@click.option("--at", "at_text", required=True,
              help="When, e.g. '2026-12-01 07:30' in the account's zone, or with an offset.")
@click.pass_context
def post_schedule(ctx, post_id: int, at_text: str) -> None:
    """Post not before a given time (the account's gap and cap still apply, its window doesn't)."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        row = posts.by_id(session, post_id)
        at = local_time(at_text, accounts.settings_of(row.account).timezone)
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

    with opened(ctx) as (svc, session):
        target = accounts.by_name(session, account_name)
        article = stored.article_by_id(session, article_id, ARTICLE_MISSING.format(article_id))
        at = local_time(at_text, accounts.settings_of(target).timezone) if at_text else None
        row = posts.reshare(session, article, target, at, env_x=svc.settings.x is not None)
        post_id = row.id
    click.echo(f"post {post_id}: re-share of article {article_id} on {account_name} queued")


# ── the kill switch ──────────────────────────────────────────────────────────


@click.group()
def social() -> None:
    """Every account at once: the kill switch."""


@social.command("pause")
@click.option("--reason", default="paused by an editor", show_default=True)
@click.pass_context
def social_pause(ctx, reason: str) -> None:
    """Stop all posting on every account now (queues keep filling; nothing goes out)."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        accounts.pause_social(session, reason)
    click.echo(f"all social posting paused: {reason}")


@social.command("resume")
@click.pass_context
def social_resume(ctx) -> None:
    """Post again; each account's backlog drains at its own pace (old stories skipped), never in a flood."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        accounts.resume_social(session)
    click.echo("social posting resumed")


@social.command("status")
@json_option
@click.pass_context
def social_status(ctx, as_json: bool) -> None:
    """The kill switch, and each account's queue."""
    from syndicate.social import accounts

    with opened(ctx) as (svc, session):
        paused = accounts.social_paused(session)
        rows = [accounts.describe(account, svc.settings.x is not None) | dict(
                    waiting=len(waiting), next_post_at=waiting[0][1] if waiting else None)
                for account, waiting in pace.queues(session)]
        record = dict(posting="paused" if paused else "on", reason=paused.reason if paused else None,
                      since=paused.changed_at if paused else None, accounts=rows)
    if as_json:
        click.echo(json.dumps(record, default=json_default, ensure_ascii=False, indent=2))
        return
    click.echo(f"social posting: {record['posting']}" + (f" ({record['reason']})" if paused else ""))
    emit(rows, False, ["name", "network", "mode", "status", "waiting", "next_post_at", "paused_reason"])
