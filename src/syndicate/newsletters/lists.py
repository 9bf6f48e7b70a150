"""The newsletters themselves (a "list" in most mailing tools): add, change, pause and resume one, with
every field checked on the way in, and whom each reaches."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syndicate import i18n, removals, text
from syndicate.errors import InvalidInput, NotFound
from syndicate.models import (
    DEFAULT_SUBJECT,
    Article,
    Delivery,
    Edition,
    Feed,
    Newsletter,
    Subscriber,
    Subscription,
    utcnow,
)
from syndicate.newsletters import editions, rendering, schedules
from syndicate.subscribers.consent import normalise_email

MAX_AGE_HOURS = 8760  # a year: beyond that a limit means nothing
FIRST_FILL = re.compile(r"^(none|last:(\d{1,4})|hours:(\d{1,5}))$")


def articles_since(session: Session, first_fill: str, now: datetime) -> datetime:
    """Where a new newsletter's first edition starts: now, the last N stories, or the last N hours."""
    match = FIRST_FILL.match(first_fill)
    if match is None:
        raise InvalidInput(f"first fill {first_fill!r} is not understood; use none, last:N (the N newest "
                           "stories) or hours:N (stories of the last N hours)")
    if match.group(2):
        nth = session.scalar(select(Article.first_seen_at).order_by(Article.first_seen_at.desc())
                             .offset(int(match.group(2)) - 1).limit(1)) if int(match.group(2)) else None
        return nth or (session.scalar(select(func.min(Article.first_seen_at))) or now)
    if match.group(3):
        return now - timedelta(hours=int(match.group(3)))
    return now


def _categories(values) -> list[str] | None:
    cleaned = sorted({" ".join(str(v).split()) for v in values or [] if str(v).strip()}, key=str.lower)
    return cleaned or None


NEWSLETTER_FIELDS = ("name", "from_name", "from_address", "reply_to", "subject_template", "template", "cron",
                     "timezone", "max_items", "max_age_hours", "feed_ids", "categories_include",
                     "categories_exclude", "breaking_categories", "count_clicks", "language", "postal_address",
                     "welcome", "local_time", "welcome_digest")


def _apply(session: Session, newsletter: Newsletter, changes: dict, now: datetime) -> None:
    """Validate and set newsletter fields; every way in (CLI, web, tests) goes through here."""
    unknown = set(changes) - set(NEWSLETTER_FIELDS)
    assert not unknown, unknown
    for key in ("from_address", "reply_to"):
        if changes.get(key):
            normalise_email(changes[key])
    for key, what in (("name", "name"), ("from_name", "from-name")):
        if key in changes:
            changes[key] = _one_line_name(changes[key], what)
    if "subject_template" in changes:
        rendering.check_subject_template(changes["subject_template"])
    if "template" in changes:
        rendering.check_template(changes["template"])
    if "language" in changes:  # only one with a catalogue: a typo must not send English under a German name
        changes["language"] = i18n.check_language(changes["language"])
    if "count_clicks" in changes and type(changes["count_clicks"]) is not bool:
        raise InvalidInput(f"count clicks is on or off (true or false), not {changes['count_clicks']!r}")
    if "welcome" in changes and type(changes["welcome"]) is not bool:
        raise InvalidInput(f"the welcome mail is on or off (true or false), not {changes['welcome']!r}")
    if "local_time" in changes and type(changes["local_time"]) is not bool:
        raise InvalidInput(f"local time is on or off (true or false), not {changes['local_time']!r}")
    if changes.get("local_time", newsletter.local_time) and not changes.get("cron", newsletter.cron):
        raise InvalidInput("local time applies to regular editions, and this newsletter has no schedule: give a "
                           "cron too, e.g. '0 7 * * *' for 07:00 in each reader's zone (or turn local time off)")
    if "welcome_digest" in changes and type(changes["welcome_digest"]) is not bool:
        raise InvalidInput(f"the welcome digest is on or off (true or false), not {changes['welcome_digest']!r}")
    if "max_items" in changes and not 1 <= int(changes["max_items"]) <= 200:
        raise InvalidInput("max items must be between 1 and 200")
    if "max_age_hours" in changes and not 0 <= int(changes["max_age_hours"]) <= MAX_AGE_HOURS:
        raise InvalidInput(f"the oldest story an edition takes is 1 to {MAX_AGE_HOURS} hours old (0: any age); "
                           f"{changes['max_age_hours']} is not")
    if changes.get("feed_ids"):
        known = set(session.scalars(select(Feed.id).where(Feed.id.in_(changes["feed_ids"]))))
        if missing := sorted(set(changes["feed_ids"]) - known):
            raise InvalidInput(f"no feed with id {missing}; `syndicate feed list` shows them")
    if "postal_address" in changes:
        try:
            changes["postal_address"] = text.postal_address(changes["postal_address"] or "")
        except ValueError as e:
            raise InvalidInput(str(e)) from None
    for key in ("categories_include", "categories_exclude", "breaking_categories"):
        if key in changes:
            changes[key] = _categories(changes[key])
    schedule_changed = {"cron", "timezone"} & set(changes)
    cron = changes.get("cron", newsletter.cron)
    timezone = changes.get("timezone", newsletter.timezone)
    schedules.check_schedule(cron, timezone)
    for key, value in changes.items():
        setattr(newsletter, key, value)
    if schedule_changed or newsletter.next_run_at is None:
        newsletter.next_run_at = schedules.next_run(cron, timezone, now) if newsletter.status == "active" else None


def _one_line_name(value: str | None, what: str) -> str:
    """A newsletter's name and from-name go into every mail's From and List-Id: one line of text, or refused."""
    value = value or ""
    if not value.isprintable():  # CR, LF, tab and the other control and separator characters
        raise InvalidInput(f"a newsletter's {what} must be one line of text, without line breaks, tabs or other "
                           f"control characters ({value!r}); type it again on one line")
    value = " ".join(value.split())
    if not 1 <= len(value) <= 200:
        raise InvalidInput(f"a newsletter's {what} is 1 to 200 characters, e.g. 'The Morning Briefing'")
    return value


def default_subject(language: str | None) -> str:
    """A new newsletter's subject template, in its language: "Top story — and 2 more stories", "… — und 2 weitere
    Artikel". Only a starting point: the editor's own from then on (changing the language later keeps it)."""
    if i18n.known(language) == i18n.SOURCE:
        return DEFAULT_SUBJECT
    ngettext = i18n.translations(language).ngettext
    # Translators: the end of an edition's subject after its top story's headline, "%(num)s" the other stories.
    one, many = (ngettext("and %(num)s more story", "and %(num)s more stories", n).replace("%(num)s", "{{ rest }}")
                 for n in (1, 2))
    return f"{{{{ top.title }}}}{{% if rest == 1 %}} — {one}{{% elif rest %}} — {many}{{% endif %}}"


def add_newsletter(session: Session, *, slug: str, name: str, from_address: str, from_name: str | None = None,
                   cron: str | None = "0 7 * * *", timezone: str = "UTC", max_items: int = 20,
                   first_fill: str = "none", now: datetime | None = None, **options) -> Newsletter:
    now = now or utcnow()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,99}", slug):
        raise InvalidInput(f"{slug!r} can't be a newsletter's short name; use lower-case letters, digits and "
                           "dashes, e.g. morning-briefing")
    if session.scalar(select(Newsletter.id).where(Newsletter.slug == slug)):
        raise InvalidInput(f"a newsletter called {slug!r} already exists")
    newsletter = Newsletter(slug=slug, status="active", first_fill=first_fill, created_at=now,
                            articles_since=articles_since(session, first_fill, now),
                            subject_template=default_subject(options.get("language")), template="edition")
    _apply(session, newsletter, dict(name=name, from_address=from_address, from_name=from_name or name,
                                     cron=cron, timezone=timezone, max_items=max_items, **options), now)
    session.add(newsletter)
    session.flush()
    return newsletter


def update_newsletter(session: Session, newsletter: Newsletter, now: datetime | None = None,
                      **changes) -> Newsletter:
    _apply(session, newsletter, changes, now or utcnow())
    session.flush()
    return newsletter


def pause_newsletter(session: Session, newsletter: Newsletter) -> None:
    """No more regular or breaking editions until resumed; editions already scheduled keep theirs."""
    if newsletter.status == "archived":
        raise InvalidInput(f"newsletter {newsletter.slug} is archived: nothing of it goes out already "
                           f"(`syndicate newsletter resume {newsletter.slug}` brings it back)")
    newsletter.status, newsletter.next_run_at = "paused", None


def resume_newsletter(session: Session, newsletter: Newsletter, now: datetime | None = None,
                      by: str | None = None) -> None:
    """Runs again from the next scheduled time after now: what was missed while paused (or archived) is not
    sent in a rush. An archived one takes sign-ups again too."""
    if newsletter.status == "archived":
        removals.record(session, "newsletter", newsletter.slug, "enabled", by or "unknown",
                        "brought back from the archive: its schedule and sign-ups run again", now)
    newsletter.status = "active"
    newsletter.next_run_at = schedules.next_run(newsletter.cron, newsletter.timezone, now or utcnow())


def get_newsletter(session: Session, slug: str) -> Newsletter:
    newsletter = session.scalar(select(Newsletter).where(Newsletter.slug == slug))
    if newsletter is None:
        raise NotFound(f"no newsletter {slug!r}; `syndicate newsletter list` shows them")
    return newsletter


def audience(session: Session) -> dict[int, int]:
    """Per newsletter id, how many the next edition would go to: confirmed subscribers with an active
    subscription, counted as fan_out picks them. A newsletter nobody gets is missing (0)."""
    rows = session.execute(
        select(Subscription.newsletter_id, func.count()).join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscription.status == "active", Subscriber.status == "confirmed")
        .group_by(Subscription.newsletter_id))
    return dict(rows.all())


# ── archiving and deleting (the CLI, the desk) ───────────────────────────────

UNSENT = ("draft", "scheduled", "paused")  # editions archiving cancels: nothing more of them goes out


def _editions(session: Session, newsletter: Newsletter) -> list[Edition]:
    return list(session.scalars(select(Edition).where(Edition.newsletter_id == newsletter.id)
                                .order_by(Edition.number)))


def _numbers(editions_: list[Edition]) -> str:
    return ", ".join(f"#{e.number}" for e in editions_)


def archive_plan(session: Session, newsletter: Newsletter) -> removals.Plan:
    found = _editions(session, newsletter)
    unsent = [e for e in found if e.status in UNSENT]
    sending = [e for e in found if e.status == "sending"]
    readers = session.scalar(select(func.count()).select_from(Subscription).where(
        Subscription.newsletter_id == newsletter.id, Subscription.status.in_(("active", "pending")))) or 0
    lines = ["no more editions: its schedule and its breaking lane stop"]
    if unsent:
        lines.append(f"{len(unsent)} {'edition' if len(unsent) == 1 else 'editions'} not sent yet "
                     f"({_numbers(unsent)}) {'is' if len(unsent) == 1 else 'are'} cancelled")
    if sending:
        lines.append(f"edition {_numbers(sending)}, going out now, finishes (pause it to stop it)")
    lines += ["sign-ups stop: it leaves the subscribe page, and no one new can be added to it",
              f"its {readers} {'subscription stays' if readers == 1 else 'subscriptions stay'} (nothing is sent on "
              f"them), and its public archive /n/{newsletter.slug} stays",
              f"`syndicate newsletter resume {newsletter.slug}` brings it back"]
    plan = removals.Plan(f"newsletter {newsletter.slug} ({newsletter.name})", lines)
    if newsletter.status == "archived":
        plan.refused = f"newsletter {newsletter.slug} is archived already"
    return plan


def archive_newsletter(session: Session, newsletter: Newsletter, by: str, now: datetime | None = None
                       ) -> removals.Plan:
    """No more editions or readers; what it sent, and who read it, stays."""
    plan = archive_plan(session, newsletter)
    plan.check()
    for edition in _editions(session, newsletter):
        if edition.status in UNSENT:
            editions.cancel(session, edition)
    newsletter.status, newsletter.next_run_at = "archived", None
    removals.record(session, "newsletter", newsletter.slug, "archived", by, plan.detail, now)
    return plan


def delete_plan(session: Session, newsletter: Newsletter) -> removals.Plan:
    found = _editions(session, newsletter)
    went_out = [e for e in found if e.started_at is not None]
    sending = [e for e in found if e.status == "sending"]
    subscriptions = session.scalar(select(func.count()).select_from(Subscription).where(
        Subscription.newsletter_id == newsletter.id)) or 0
    deliveries = session.scalar(select(func.count()).select_from(Delivery).join(Edition).where(
        Edition.newsletter_id == newsletter.id)) or 0
    sent = session.scalar(select(func.count()).select_from(Delivery).join(Edition).where(
        Edition.newsletter_id == newsletter.id, Delivery.status == "sent")) or 0
    lines = [f"its {subscriptions} {'subscription is' if subscriptions == 1 else 'subscriptions are'} deleted "
             "(the readers stay, with their other newsletters)",
             f"its {len(found)} {'edition is' if len(found) == 1 else 'editions are'} deleted ({len(went_out)} went "
             f"out), with their {deliveries} deliveries ({sent} mails sent): readers' timelines lose them",
             f"its public archive /n/{newsletter.slug} and its feed are gone; the unsubscribe links in mails already "
             "sent stop working for it (nothing more is sent from it)",
             "its stories stay, free for the other newsletters"]
    plan = removals.Plan(f"newsletter {newsletter.slug} ({newsletter.name})", lines)
    if sending:
        plan.refused = (f"edition {_numbers(sending)} of {newsletter.slug} is going out now: pause or cancel it first "
                        f"(`syndicate edition cancel {newsletter.slug}/{sending[0].number}`)")
    elif went_out:
        plan.needs_force = (f"newsletter {newsletter.slug} has sent {len(went_out)} "
                            f"{'edition' if len(went_out) == 1 else 'editions'} ({sent} mails): archive it instead "
                            f"(`syndicate newsletter archive {newsletter.slug}`), which keeps them; deleting them "
                            "needs --force (on the desk: the box that says so)")
    return plan


def delete_newsletter(session: Session, newsletter: Newsletter, by: str, force: bool = False,
                      now: datetime | None = None) -> removals.Plan:
    """The newsletter and everything of its own (subscriptions, editions, deliveries; the database cascades)."""
    plan = delete_plan(session, newsletter)
    plan.check(force)
    removals.record(session, "newsletter", newsletter.slug, "deleted", by,
                    ("forced: " if plan.needs_force else "") + plan.detail, now)
    session.delete(newsletter)
    session.flush()
    return plan
