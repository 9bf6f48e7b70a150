"""Newsletters: the list with each one's status, schedule and audience; one newsletter's settings, filters,
template and schedule (in plain words and as its next five send times); pause, resume, preparing the next
edition ahead of its time to preview and edit it, and a one-off draft."""

from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, available_timezones

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from sqlalchemy import select

from syndicate import i18n
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.delivery import results
from syndicate.desk import charts
from syndicate.desk.core import (
    Svc,
    api,
    api_editor,
    back,
    confirmation,
    csrf_checked,
    editor,
    editor_zone,
    page,
    pages,
    ticked,
)
from syndicate.errors import InvalidInput
from syndicate.models import Edition, Feed, Newsletter
from syndicate.newsletters import editions, lists, schedules, stored
from syndicate.services import Services

RECENT = 10  # editions listed on a newsletter's page
# Left blank in a form, these are refused (saying which); any other blank field means "none": no reply-to,
# no schedule, every feed, every category, no breaking lane.
REQUIRED = {"slug": "The short name", "name": "The name", "from_address": "The From: address",
            "timezone": "The time zone", "subject_template": "The subject template", "template": "The template",
            "max_items": "Most stories per edition", "max_age_hours": "The oldest story (hours; 0: any age)"}
LISTS = ("categories_include", "categories_exclude", "breaking_categories")


def _summary(newsletter: Newsletter, audience: dict[int, int]) -> dict:
    return dict(slug=newsletter.slug, name=newsletter.name, status=newsletter.status, cron=newsletter.cron,
                timezone=newsletter.timezone, schedule=schedules.explain_schedule(newsletter.cron, newsletter.timezone),
                next_run_at=newsletter.next_run_at, subscribers=audience.get(newsletter.id, 0),
                link=f"/desk/newsletters/{newsletter.slug}")


def _edition(edition: Edition) -> dict:
    return dict(id=edition.id, number=edition.number, kind=edition.kind, status=edition.status,
                subject=edition.subject, scheduled_for=edition.scheduled_for, sent_at=edition.sent_at,
                note=edition.note, link=f"/desk/editions/{edition.id}")


def _list(session) -> list[dict]:
    audience = lists.audience(session)
    return [_summary(n, audience) for n in stored.all_newsletters(session)]


def _detail(session, newsletter: Newsletter) -> dict:
    recent = session.scalars(select(Edition).where(Edition.newsletter_id == newsletter.id)
                             .order_by(Edition.number.desc()).limit(RECENT))
    return _summary(newsletter, lists.audience(session)) | dict(
        from_name=newsletter.from_name, from_address=newsletter.from_address, reply_to=newsletter.reply_to,
        subject_template=newsletter.subject_template, template=newsletter.template, max_items=newsletter.max_items,
        max_age_hours=newsletter.max_age_hours, feed_ids=newsletter.feed_ids,
        categories_include=newsletter.categories_include,
        categories_exclude=newsletter.categories_exclude, breaking_categories=newsletter.breaking_categories,
        first_fill=newsletter.first_fill, count_clicks=newsletter.count_clicks, language=newsletter.language,
        postal_address=newsletter.postal_address,  # its own; empty: SYNDICATE_POSTAL_ADDRESS
        welcome=newsletter.welcome, local_time=newsletter.local_time, welcome_digest=newsletter.welcome_digest,
        # A paused newsletter's: the times it keeps if resumed now.
        next_sends=schedules.upcoming(newsletter, 5) if newsletter.cron else [],
        recent_editions=[_edition(e) for e in recent],
        # Rates (and clicks, where counted) of the last editions that went out, oldest first.
        across=results.across(session, newsletter.id))


def _cleaned(changes: dict, name: str) -> dict:
    """What an editor gave, as update_newsletter takes it: text trimmed, a blank optional field None."""
    cleaned = {}
    for key, value in changes.items():
        value = value.strip() if isinstance(value, str) else value
        if value in ("", None, []):
            if key in REQUIRED:
                raise InvalidInput(f"{REQUIRED[key]} can't be left blank")
            # The From: name is the newsletter's, unless given; no postal address of its own is "" (the default's).
            value = name if key == "from_name" else "" if key == "postal_address" else None
        cleaned[key] = value
    return cleaned


def _create(session, fields: dict) -> Newsletter:
    fields = _cleaned(fields, fields.get("name") or "")
    return lists.add_newsletter(session, **{k: v for k, v in fields.items() if v is not None or k == "cron"})


def _update(session, slug: str, changes: dict) -> Newsletter:
    newsletter = lists.get_newsletter(session, slug)
    changes = _cleaned(changes, changes.get("name") or newsletter.name)
    # Only what changed: saving the form untouched keeps the next run (an overdue one too) where it is.
    changed = {k: v for k, v in changes.items() if v != getattr(newsletter, k)}
    return lists.update_newsletter(session, newsletter, **changed)


def _switch(session, slug: str, action: str, editor_name: str | None = None) -> Newsletter:
    newsletter = lists.get_newsletter(session, slug)
    if action == "pause":
        lists.pause_newsletter(session, newsletter)
    elif action == "resume":
        lists.resume_newsletter(session, newsletter, by=editor_name)
    else:
        raise InvalidInput(f"no newsletter action {action!r}: pause, resume, prepare or archive")
    return newsletter


def _prepare(session, settings: Settings, slug: str) -> Edition:
    """As `syndicate edition cut`: the next regular edition (--next) when the newsletter has a next run,
    else a draft one-off (--draft) to schedule on its own page."""
    newsletter = lists.get_newsletter(session, slug)
    if newsletter.next_run_at is not None:
        return editions.prepare_next(session, newsletter, settings)
    return editions.create_edition(session, newsletter, settings, kind="one-off", status="draft")


def _draft(session, settings: Settings, slug: str) -> Edition:
    """As `syndicate edition cut --draft`: a one-off edition of the stories not sent yet, to edit and schedule
    on its own page; the regular schedule goes on as before."""
    return editions.create_edition(session, lists.get_newsletter(session, slug), settings, kind="one-off",
                                   status="draft")


def _schedule(cron: str, timezone: str) -> dict:
    """A schedule someone is typing: in words and its next five send times, or what's wrong with it."""
    cron, timezone = cron.strip() or None, timezone.strip() or "UTC"
    words = schedules.explain_schedule(cron, timezone)
    # A newsletter never saved: upcoming() reads only its schedule.
    return dict(cron=cron, timezone=timezone, schedule=words,
                next_sends=schedules.upcoming(Newsletter(cron=cron, timezone=timezone), 5) if cron else [])


# ── pages ────────────────────────────────────────────────────────────────────


class CreateForm(BaseModel):
    slug: str = ""
    name: str = ""
    from_address: str = ""
    cron: str = "0 7 * * *"
    timezone: str = "UTC"
    first_fill: str = "none"
    language: str = "en"


class SettingsForm(BaseModel):
    """The settings form as typed: text, kept as it is to show again when something is refused."""
    name: str = ""
    from_name: str = ""
    from_address: str = ""
    reply_to: str = ""
    subject_template: str = ""
    template: str = ""
    cron: str = ""
    timezone: str = ""
    max_items: str = ""
    max_age_hours: str = "72"
    feed_ids: list[int] = []
    categories_include: str = ""
    categories_exclude: str = ""
    breaking_categories: str = ""
    count_clicks: bool = False  # a checkbox: absent when unticked
    language: str = ""  # the select always sends one; a form without it (a script's) leaves the language be
    postal_address: str = ""
    welcome: bool = False  # a checkbox: a welcome mail once a reader confirms
    local_time: bool = False  # a checkbox too
    welcome_digest: bool = False  # a checkbox too

    @classmethod
    def of(cls, newsletter: Newsletter) -> SettingsForm:
        return cls(**{k: ", ".join(getattr(newsletter, k) or []) for k in LISTS},
                   **{k: str(getattr(newsletter, k) or "") for k in ("name", "from_name", "from_address",
                      "reply_to", "subject_template", "template", "cron", "timezone", "max_items", "language",
                      "postal_address")},
                   max_age_hours=str(newsletter.max_age_hours), feed_ids=newsletter.feed_ids or [],
                   count_clicks=newsletter.count_clicks, welcome=newsletter.welcome, local_time=newsletter.local_time,
                   welcome_digest=newsletter.welcome_digest)

    def changes(self) -> dict:
        if not re.fullmatch(r"\s*\d*\s*", self.max_items):
            raise InvalidInput(f"most stories {self.max_items!r} is not a number: give a whole number, 1 to 200")
        if not re.fullmatch(r"\s*\d{0,5}\s*", self.max_age_hours):
            raise InvalidInput(f"the oldest story {self.max_age_hours!r} is not a number of hours: give a whole "
                               "number, e.g. 72 (0: any age)")
        lists = {k: [c.strip() for c in re.split(r"[,\n]", getattr(self, k)) if c.strip()] for k in LISTS}
        unchanged = set() if self.language.strip() else {"language"}
        return self.model_dump(exclude={"max_items", "max_age_hours", *LISTS, *unchanged}) | lists | dict(
            max_items=int(self.max_items) if self.max_items.strip() else None, feed_ids=self.feed_ids or None,
            max_age_hours=int(self.max_age_hours) if self.max_age_hours.strip() else None)


def _list_page(request: Request, svc: Services, name: str, status: int = 200, typed: CreateForm | None = None,
               error: str | None = None) -> HTMLResponse:
    with transaction(svc.Session) as session:
        rows = _list(session)
    # A new newsletter's schedule starts in the editor's own zone.
    form = typed or CreateForm(timezone=editor_zone(request).key)
    return page("newsletters", request, status, editor=name, newsletters=rows, form=form,
                zones=sorted(available_timezones()), languages=_languages(), error=error)


def _languages() -> list[tuple[str, str]]:
    """The languages a newsletter can be in (those with a catalogue), for the form's choice."""
    return [(code, i18n.NAMES.get(code, code)) for code in i18n.languages()]


def _newsletter_page(request: Request, svc: Services, name: str, slug: str, status: int = 200,
                     typed: SettingsForm | None = None, error: str | None = None,
                     notice: str | None = None) -> HTMLResponse:
    with transaction(svc.Session) as session:
        newsletter = lists.get_newsletter(session, slug)
        detail = _detail(session, newsletter)
        form = typed or SettingsForm.of(newsletter)
        feeds = [dict(id=f.id, title=f.title or f.url) for f in session.scalars(select(Feed).order_by(Feed.id))]
    across, names = detail["across"], [f"#{e['number']}" for e in detail["across"]]
    rates_chart = charts.lines(names, {what: [e["rates"][what] for e in across] for what in results.RATES},
                               "Unsubscribes, bounces and complaints as rates of delivered, across the last editions")
    # Clicks apart: a click rate is tens of times a complaint rate, and would flatten the others' lines.
    clicks_chart = charts.lines(names, {"clicks per delivered": [e["click_rate"] for e in across]},
                                "Clicks per message delivered, across the last editions") \
        if any(e["clicks"] is not None for e in across) else ""
    return page("newsletter", request, status, editor=name, newsletter=detail, form=form, feeds=feeds,
                own_zone=ZoneInfo(detail["timezone"]), zones=sorted(available_timezones()), languages=_languages(),
                error=error,
                notice=notice, rates_chart=rates_chart, clicks_chart=clicks_chart, base_url=svc.settings.base_url,
                default_postal_address=svc.settings.postal_address)


@pages.get("/newsletters", response_class=HTMLResponse)
def newsletters_page(request: Request, svc: Svc, name: str = Depends(editor)):
    return _list_page(request, svc, name)


@pages.post("/newsletters", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def create_page(request: Request, svc: Svc, form: Annotated[CreateForm, Form()], name: str = Depends(editor)):
    try:
        with transaction(svc.Session) as session:
            slug = _create(session, form.model_dump()).slug
    except InvalidInput as e:
        return _list_page(request, svc, name, 400, form, str(e))
    return back(f"/desk/newsletters/{slug}")


@pages.get("/newsletters/{slug}", response_class=HTMLResponse)
def newsletter_page(request: Request, slug: str, svc: Svc, name: str = Depends(editor), saved: bool = False):
    return _newsletter_page(request, svc, name, slug, notice="Saved." if saved else None)


@pages.post("/newsletters/{slug}", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def save_page(request: Request, slug: str, svc: Svc, form: Annotated[SettingsForm, Form()],
              name: str = Depends(editor)):
    try:
        with transaction(svc.Session) as session:
            _update(session, slug, form.changes())
    except InvalidInput as e:
        return _newsletter_page(request, svc, name, slug, 400, form, str(e))
    return back(f"/desk/newsletters/{slug}?saved=1")


@pages.post("/newsletters/{slug}/prepare", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def prepare_page(request: Request, slug: str, svc: Svc, name: str = Depends(editor)):
    with transaction(svc.Session) as session:
        made = _edition(_prepare(session, svc.settings, slug))
    if made["status"] == "skipped":  # nothing to preview: say why here rather than open an empty edition
        return _newsletter_page(request, svc, name, slug, notice=f"Nothing to prepare: {made['note']}.")
    return back(made["link"])


# ── archiving and deleting (before the pause/resume route, whose {action} would take these) ─

REMOVALS = {"archive": ("Archive", lists.archive_plan), "delete": ("Delete", lists.delete_plan)}


def _remove(svc: Services, slug: str, action: str, editor_name: str, force: bool = False) -> dict:
    """Archive or delete a newsletter (InvalidInput, saying why, when it can't be); what it took along."""
    with transaction(svc.Session) as session:
        newsletter = lists.get_newsletter(session, slug)
        if action == "archive":
            plan = lists.archive_newsletter(session, newsletter, editor_name)
        else:
            plan = lists.delete_newsletter(session, newsletter, editor_name, force)
    return dict(slug=slug, done=action + "d", consequences=plan.consequences)


def _removal_page(request: Request, svc: Services, slug: str, action: str, name: str,
                  error: str | None = None) -> HTMLResponse:
    verb, planned = REMOVALS[action]
    with transaction(svc.Session) as session:
        plan = planned(session, lists.get_newsletter(session, slug))
    return confirmation(request, name, verb, plan, f"/desk/newsletters/{slug}/{action}", f"/desk/newsletters/{slug}",
                        error)


def _removal_post(request: Request, svc: Services, slug: str, action: str, name: str, force: bool = False):
    try:
        _remove(svc, slug, action, name, force)
    except InvalidInput as e:  # not forced, or it changed since the page was shown: the page again, saying why
        return _removal_page(request, svc, slug, action, name, str(e))
    return back("/desk/newsletters" if action == "delete" else f"/desk/newsletters/{slug}")


@pages.get("/newsletters/{slug}/archive", response_class=HTMLResponse)
def archive_page(request: Request, slug: str, svc: Svc, name: str = Depends(editor)):
    """What archiving the newsletter does, and the button that does it."""
    return _removal_page(request, svc, slug, "archive", name)


@pages.post("/newsletters/{slug}/archive", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def archive_newsletter(request: Request, slug: str, svc: Svc, name: str = Depends(editor)):
    return _removal_post(request, svc, slug, "archive", name)


@pages.get("/newsletters/{slug}/delete", response_class=HTMLResponse)
def delete_page(request: Request, slug: str, svc: Svc, name: str = Depends(editor)):
    """What deleting the newsletter takes with it (and whether it needs forcing), and the button."""
    return _removal_page(request, svc, slug, "delete", name)


@pages.post("/newsletters/{slug}/delete", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def delete_newsletter(request: Request, slug: str, svc: Svc, force: str = Form(""), name: str = Depends(editor)):
    return _removal_post(request, svc, slug, "delete", name, ticked(force))
@pages.post("/newsletters/{slug}/draft", response_class=HTMLResponse, dependencies=[Depends(csrf_checked)])
def draft_page(request: Request, slug: str, svc: Svc, name: str = Depends(editor)):
    with transaction(svc.Session) as session:
        made = _edition(_draft(session, svc.settings, slug))
    if made["status"] == "skipped":
        return _newsletter_page(request, svc, name, slug, notice=f"Nothing for a draft: {made['note']}.")
    return back(made["link"])


@pages.post("/newsletters/{slug}/{action}", dependencies=[Depends(csrf_checked)])
def switch_page(slug: str, action: str, svc: Svc, name: str = Depends(editor)):
    with transaction(svc.Session) as session:
        _switch(session, slug, action, name)
    return back(f"/desk/newsletters/{slug}")


@pages.get("/schedule")
def schedule_preview(cron: str = "", timezone: str = "", name: str = Depends(editor)) -> dict:
    """A schedule as the editor types it, for the words and times under the schedule fields."""
    try:
        return _schedule(cron, timezone) | dict(ok=True, problem=None)
    except InvalidInput as e:
        return dict(ok=False, problem=str(e))


# ── the same, for scripts ────────────────────────────────────────────────────


class NewNewsletter(BaseModel):
    slug: str  # lower-case letters, digits, dashes
    name: str
    from_address: str
    from_name: str | None = None  # default: the name
    reply_to: str | None = None
    cron: str | None = "0 7 * * *"  # null: no regular editions (one-off and breaking only)
    timezone: str = "UTC"
    max_items: int = 20
    max_age_hours: int = 72  # never a story published longer ago; 0: any age
    first_fill: str = "none"  # none | last:N | hours:N
    count_clicks: bool = False  # clicks per story of each edition, never per reader
    language: str = "en"  # what readers get it in: one with translations (en, de, fr)
    welcome: bool = False  # a welcome mail once a reader confirms
    local_time: bool = False  # regular editions at the schedule's wall-clock time in each reader's zone
    welcome_digest: bool = False  # a new reader's first mail carries the latest edition's stories too
    subject_template: str | None = None
    template: str | None = None
    feed_ids: list[int] | None = None
    categories_include: list[str] | None = None
    categories_exclude: list[str] | None = None
    breaking_categories: list[str] | None = None


class NewsletterChanges(BaseModel):
    """Only the fields given change; null clears an optional one (reply_to, cron, the filters)."""
    name: str | None = None
    from_name: str | None = None
    from_address: str | None = None
    reply_to: str | None = None
    subject_template: str | None = None
    template: str | None = None
    cron: str | None = None
    timezone: str | None = None
    max_items: int | None = None
    max_age_hours: int | None = None
    feed_ids: list[int] | None = None
    categories_include: list[str] | None = None
    categories_exclude: list[str] | None = None
    breaking_categories: list[str] | None = None
    count_clicks: bool | None = None
    language: str | None = None
    postal_address: str | None = None  # lines kept; "" or null: SYNDICATE_POSTAL_ADDRESS
    welcome: bool | None = None
    local_time: bool | None = None
    welcome_digest: bool | None = None


@api.get("/newsletters", tags=["newsletters"])
def newsletters_json(svc: Svc, name: str = Depends(api_editor)) -> list[dict]:
    """Every newsletter: status, schedule in words, next send, confirmed subscribers."""
    with transaction(svc.Session) as session:
        return _list(session)


@api.post("/newsletters", tags=["newsletters"], status_code=201)
def create_json(body: NewNewsletter, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Create a newsletter; answers it as GET /newsletters/{slug} does."""
    with transaction(svc.Session) as session:
        fields = body.model_dump(exclude_none=True) | dict(cron=body.cron)
        return _detail(session, _create(session, fields))


@api.get("/newsletters/{slug}", tags=["newsletters"])
def newsletter_json(slug: str, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Settings, filters, the schedule in words and its next five send times (UTC), recent editions."""
    with transaction(svc.Session) as session:
        return _detail(session, lists.get_newsletter(session, slug))


@api.patch("/newsletters/{slug}", tags=["newsletters"])
def update_json(slug: str, body: NewsletterChanges, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Change settings; only the fields given change."""
    with transaction(svc.Session) as session:
        return _detail(session, _update(session, slug, body.model_dump(exclude_unset=True)))


@api.post("/newsletters/{slug}/prepare", tags=["newsletters"])
def prepare_json(slug: str, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Make the next regular edition now, scheduled for the next run, to preview and edit before it goes
    (a newsletter without a next run gets a draft one-off). Answers the edition."""
    with transaction(svc.Session) as session:
        return _edition(_prepare(session, svc.settings, slug))


@api.post("/newsletters/{slug}/archive", tags=["newsletters"])
def archive_json(slug: str, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Retire a newsletter: no more editions (those not sent yet are cancelled), no new readers; its subscribers
    and public archive stay. `consequences` says what happened; `resume` brings it back."""
    return _remove(svc, slug, "archive", name)


@api.delete("/newsletters/{slug}", tags=["newsletters"])
def delete_json(slug: str, svc: Svc, force: bool = False, name: str = Depends(api_editor)) -> dict:
    """Delete a newsletter with its subscriptions, editions and deliveries. One that has sent editions is refused
    (422) unless `force`: archive it instead, which keeps them."""
    return _remove(svc, slug, "delete", name, force)
@api.post("/newsletters/{slug}/draft", tags=["newsletters"])
def draft_json(slug: str, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Make a one-off draft of the stories not sent yet, to edit and schedule; the regular schedule goes on.
    Answers the edition (`skipped`, with a note, when there is nothing new)."""
    with transaction(svc.Session) as session:
        return _edition(_draft(session, svc.settings, slug))


@api.post("/newsletters/{slug}/{action}", tags=["newsletters"])
def switch_json(slug: str, action: str, svc: Svc, name: str = Depends(api_editor)) -> dict:
    """Pause or resume the schedule.

    `pause`: no regular or breaking editions until resumed (those already scheduled keep theirs);
    `resume`: from the next scheduled time on, nothing missed is sent in a rush."""
    with transaction(svc.Session) as session:
        return _detail(session, _switch(session, slug, action, name))


@api.get("/schedule", tags=["newsletters"])
def schedule_json(cron: str = "", timezone: str = "UTC", name: str = Depends(api_editor)) -> dict:
    """A cron expression and time zone in plain words, and its next five send times (UTC); 422 if wrong."""
    return _schedule(cron, timezone)
