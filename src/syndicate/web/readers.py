"""Readers' pages: subscribe → confirm (by POST: link scanners can't), one-click unsubscribe (RFC 8058),
preferences, and the archive with each edition's web view. HTML, not in the API's /docs.

A page about one newsletter (confirm, unsubscribe, archive, web view) is in that newsletter's language; one
about several (the sign-up form, preferences) in the language the browser asks for (Accept-Language)."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from syndicate import i18n, tokens
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.delivery import waves
from syndicate.errors import InvalidInput, NotFound
from syndicate.http import csp
from syndicate.models import MAX_ID, Newsletter, RowId, Subscriber, Subscription, utcnow
from syndicate.newsletters import archive, clicks, editions, stored
from syndicate.subscribers import choices, consent, preferences, rights, zones
from syndicate.tasks import hand_over, send_confirmation
from syndicate.web import forms
from syndicate.web.responses import Svc, message, page, reader_language

router = APIRouter(include_in_schema=False)


def form_checked(settings: Settings, request: Request, given: str, purpose: str, bound_to: str = "") -> None:
    """A reader's form POST came from our own page, recently: FormRefused or FormExpired otherwise."""
    forms.check_origin(settings.base_url, request.headers.get("origin"), request.headers.get("referer"))
    forms.check_token(settings.secret_key, given, purpose, bound_to)


def new_form_token(settings: Settings, purpose: str, bound_to: str = "") -> str:
    return forms.token(settings.secret_key, purpose, bound_to)


def subscribe_page(settings: Settings, status: int = 200, /, *, error: str | None = None, expired: bool = False,
                   **context) -> HTMLResponse:
    return page("subscribe", status, form_token=new_form_token(settings, "subscribe"), error=error,
                expired=expired, **context)

@router.get("/", response_class=HTMLResponse)
def subscribe_form(request: Request, svc: Svc):
    with transaction(svc.Session) as session:
        newsletters = session.scalars(select(Newsletter).where(Newsletter.status == "active")
                                      .order_by(Newsletter.name)).all()
        # Nothing ticked: a box ticked for the reader is no consent (GDPR recital 32).
        return subscribe_page(svc.settings, newsletters=newsletters, chosen=[], email="", name="",
                              language=reader_language(request))

@router.post("/subscribe", response_class=HTMLResponse)
def subscribe(request: Request, svc: Svc, email: str = Form(""), name: str = Form(""),
              newsletter: list[str] = Form(default=[]), form_token: str = Form(""), timezone: str = Form("")):
    language = reader_language(request)
    _ = i18n.translations(language).gettext
    with transaction(svc.Session) as session:
        chosen = session.scalars(select(Newsletter).where(Newsletter.slug.in_(newsletter))).all()
        try:
            form_checked(svc.settings, request, form_token, "subscribe")
            # The client's address limits confirmation mails per sender too (behind a proxy,
            # `syndicate web` reads it from X-Forwarded-For: uvicorn's proxy_headers).
            signup = consent.subscribe(session, email, [n.id for n in chosen], name=name or None,
                                       source="web", client=request.client.host if request.client else None,
                                       settings=svc.settings, timezone=zones.guessed(timezone))
        except (InvalidInput, forms.FormExpired) as e:
            everything = [n for n in stored.all_newsletters(session) if n.status != "archived"]
            expired = isinstance(e, forms.FormExpired)
            error = None if expired else signup_refused(e, language, email, chosen)
            return subscribe_page(svc.settings, 400, newsletters=everything, chosen=newsletter, email=email, name=name,
                                  expired=expired, error=error, language=language)
        subscriber_id, send, awaiting = signup.subscriber.id, signup.send_confirmation, signup.awaiting_confirmation
    if send:
        hand_over(send_confirmation, subscriber_id)  # after commit: the task finds the row
    if not awaiting:
        return message(_("You're subscribed"), _("This address already receives the newsletters you chose."),
                       language=language)
    if signup.held_back == "client":
        return message(_("Please try again later"), _(
            "We've noted your choice, but many confirmation emails have gone out to sign-ups from your network in "
            "the last hour, so we're holding this one back. Please sign up again in an hour to get the "
            "confirmation link."), language=language)
    if not send:
        return message(_("Check your inbox"), _(
            "We've already sent several confirmation emails to this address in the last hour; please use the "
            "link in one of them."), language=language)
    return message(_("Check your inbox"), _("We've sent you an email with a link to confirm your subscription."),
                   language=language)

def confirmation_language(svc, request: Request, subscriber_id: int) -> str:
    """The confirmation mail's language (its newsletter's), else the browser's: the page goes on from the mail."""
    with transaction(svc.Session) as session:
        return consent.confirmation_language(session, subscriber_id) or reader_language(request)

def signup_refused(e: InvalidInput, language: str, email: str, chosen: list[Newsletter]) -> str:
    """Why the sign-up form was refused, in the reader's language: the domain says it in English (with the
    address checker's own words, kept for English readers); the form's usual refusals are said again here."""
    if language == i18n.SOURCE:
        return str(e)
    _ = i18n.translations(language).gettext
    if not chosen:
        return _("Choose at least one newsletter.")
    try:
        consent.normalise_email(email)
    except InvalidInput:
        return _("%(email)s is not an email address we can send to: check it and try again.") % {"email": email}
    if archived := [n.name for n in chosen if n.status == "archived"]:
        return _("%(newsletters)s takes no new readers.") % {"newsletters": ", ".join(archived)}
    return str(e)

def confirm_page_of(svc, token: str, status: int = 200, /, *, expired: bool, language: str) -> HTMLResponse:
    """The confirmation page names the address and what it signs up for: the reader knows what they agree to."""
    settings = svc.settings
    subscriber_id = tokens.read_confirm_token(settings.secret_key, token)
    with transaction(svc.Session) as session:
        subscriber = consent.by_id(session, subscriber_id, "this confirmation link belongs to an address that no "
                                   "longer exists; sign up again on the sign-up page")
        waiting = [s.newsletter.name for s in subscriber.subscriptions if s.status == "pending"]
        return page("confirm", status, form_token=new_form_token(settings, "confirm", token), expired=expired,
                    email=subscriber.email, newsletters=sorted(waiting), language=language)


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(request: Request, token: str, svc: Svc):
    subscriber_id = tokens.read_confirm_token(svc.settings.secret_key, token)
    return confirm_page_of(svc, token, expired=False, language=confirmation_language(svc, request, subscriber_id))

@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(request: Request, token: str, svc: Svc, form_token: str = Form("")):
    subscriber_id = tokens.read_confirm_token(svc.settings.secret_key, token)  # a damaged link says so first
    language = confirmation_language(svc, request, subscriber_id)  # before confirming: nothing waits after
    _ = i18n.translations(language).gettext
    try:
        form_checked(svc.settings, request, form_token, "confirm", token)
    except forms.FormExpired:
        return confirm_page_of(svc, token, 400, expired=True, language=language)
    with transaction(svc.Session) as session:
        subscriber = consent.confirm(session, svc.settings, token)
        suspended = preferences.suspension(session, subscriber)
        welcome = consent.mails_waiting(session, subscriber.id)
    if welcome:
        hand_over(send_confirmation, subscriber.id)  # the welcome mails, after commit
    if suspended:  # the choice is kept; an editor restores the address
        return message(_("Your choice is saved"), suspended, language=language)
    return message(_("You're subscribed"), _("Thank you: your subscription is confirmed."), language=language)

@router.get("/u/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, svc: Svc):
    subscriber_id, newsletter_id = tokens.read_unsubscribe_token(svc.settings.secret_key, token)
    with transaction(svc.Session) as session:
        subscriber, newsletter = session.get(Subscriber, subscriber_id), session.get(Newsletter, newsletter_id)
        if subscriber is None or newsletter is None:
            raise NotFound("this unsubscribe link belongs to a subscription that no longer exists")
        subscription = session.scalar(select(Subscription).where(Subscription.subscriber_id == subscriber_id,
                                                                 Subscription.newsletter_id == newsletter_id))
        if subscription is not None and subscription.status == "unsubscribed":  # the done page, with its Undo
            return unsubscribed_page(svc.settings, token, subscription)
        return page("unsubscribe", subscriber=subscriber, newsletter=newsletter, language=newsletter.language)

@router.post("/u/{token}", response_class=HTMLResponse)
def unsubscribe(token: str, svc: Svc):
    # RFC 8058: the mailbox provider POSTs List-Unsubscribe=One-Click with no cookies.
    # The signed token is the authentication; the answer is 200, never a redirect.
    with transaction(svc.Session) as session:
        subscription = consent.unsubscribe(session, svc.settings, token)
        return unsubscribed_page(svc.settings, token, subscription)


def unsubscribed_page(settings: Settings, token: str, subscription, status: int = 200, /, **context) -> HTMLResponse:
    """Done, with an Undo for UNDO_DAYS after leaving (a POST with the same link's token, and the form's own)."""
    left = subscription.unsubscribed_at
    undo = left is not None and left > utcnow() - timedelta(days=consent.UNDO_DAYS)
    context.setdefault("expired", False)
    return page("unsubscribed", status, newsletter=subscription.newsletter, email=subscription.subscriber.email,
                undo=undo, undo_until=left + timedelta(days=consent.UNDO_DAYS) if left else None,
                undo_days=consent.UNDO_DAYS, form_token=new_form_token(settings, "undo", token), token=token,
                language=subscription.newsletter.language, **context)


@router.post("/u/{token}/undo", response_class=HTMLResponse)
def undo_unsubscribe(request: Request, token: str, svc: Svc, form_token: str = Form("")):
    tokens.read_unsubscribe_token(svc.settings.secret_key, token)  # a damaged link says so first
    with transaction(svc.Session) as session:
        try:
            form_checked(svc.settings, request, form_token, "undo", token)
        except forms.FormExpired:
            subscription = consent.by_unsubscribe_token(session, svc.settings, token)
            return unsubscribed_page(svc.settings, token, subscription, 400, expired=True)
        subscriber_id, newsletter_id = tokens.read_unsubscribe_token(svc.settings.secret_key, token)
        language = session.scalar(select(Newsletter.language).where(Newsletter.id == newsletter_id)) or i18n.SOURCE
        _ = i18n.translations(language).gettext
        try:
            subscription = consent.undo_unsubscribe(session, svc.settings, token)
        except InvalidInput as e:
            return message(_("This can't be undone here"), str(e), 400, link=("/", _("Sign up again")),
                           language=language)
        name = subscription.newsletter.name
    return message(_("Welcome back"), _("You're subscribed to %(newsletter)s again.") % {"newsletter": name},
                   language=language)

# The reader's preferences. The signed token in the URL comes only in mail to their address and is
# the credential; the form's own token, bound to it, and the Origin check keep other sites from
# pressing the buttons for a reader whose link they learnt. GET changes nothing: link scanners prefetch.
def preferences_page_of(settings: Settings, session, token: str, subscriber_id: int, status: int = 200, /,
                        **context):
    context.setdefault("error", None)
    context.setdefault("kept", None)
    return page("preferences", status, prefs=preferences.preferences(session, subscriber_id),
                form_token=new_form_token(settings, "preferences", token), data_url=f"/p/{token}/data.json",
                zones=zones.names(), frequencies=choices.FREQUENCIES, **context)

@router.get("/p/{token}", response_class=HTMLResponse)
def preferences_page(request: Request, token: str, svc: Svc):
    subscriber_id = tokens.read_preferences_token(svc.settings.secret_key, token)
    with transaction(svc.Session) as session:
        return preferences_page_of(svc.settings, session, token, subscriber_id, saved=None, expired=False,
                                   language=reader_language(request))

@router.post("/p/{token}", response_class=HTMLResponse)
def save_preferences(request: Request, token: str, svc: Svc, action: str = Form(""),
                     newsletter: list[str] = Form(default=[]), form_token: str = Form(""),
                     timezone: str | None = Form(None), topic: list[str] = Form(default=[]),
                     frequency: list[str] = Form(default=[])):
    subscriber_id = tokens.read_preferences_token(svc.settings.secret_key, token)
    language = reader_language(request)
    with transaction(svc.Session) as session:
        try:
            form_checked(svc.settings, request, form_token, "preferences", token)
        except forms.FormExpired:
            return preferences_page_of(svc.settings, session, token, subscriber_id, 400, saved=None, expired=True,
                                       language=language)
        if action == "leave":
            preferences.leave_all(session, subscriber_id)
            saved = "left"
        elif action == "erase":
            subscriber = consent.by_id(session, subscriber_id, "this preferences link belongs to an address that "
                                       "no longer exists")
            asked = consent.ask_erasure(session, subscriber)
            email = subscriber.email
        elif action == "save":  # required: a bare POST must not read as "untick everything"
            try:
                checked = preferences.check_choices(session, subscriber_id, topic, frequency)
            except InvalidInput as e:  # nothing saved; the page shows what was chosen, and what to change
                kept = dict(newsletters=set(newsletter), topics=set(topic),
                            frequency=dict(f.partition(":")[::2] for f in frequency))
                return preferences_page_of(svc.settings, session, token, subscriber_id, 400, saved=None,
                                           expired=False, error=str(e), kept=kept)
            ids = session.scalars(select(Newsletter.id).where(Newsletter.slug.in_(newsletter))).all()
            if timezone is not None and preferences.set_zone(session, subscriber_id, timezone):
                session.flush()  # a refused zone saved nothing; a new one moves the mail waiting for its wave
                waves.rezone(session, subscriber_id, utcnow())
            saved = preferences.set_preferences(session, subscriber_id, list(ids))
            saved.changed = preferences.save_choices(session, subscriber_id, checked)
        else:
            raise InvalidInput("nothing was saved; press one of the buttons on the preferences page")
        if action != "erase":
            return preferences_page_of(svc.settings, session, token, subscriber_id, saved=saved, expired=False,
                                       language=language)
    _ = i18n.translations(language).gettext
    if asked:
        hand_over(send_confirmation, subscriber_id)  # after commit: the task finds the row
    return message(_("Check your inbox"), _(
        "We've sent an email to %(email)s with a link that deletes your data; it works for %(hours)s hours. "
        "Nothing is deleted until you press the button on the page it opens.")
        % {"email": email, "hours": tokens.ERASE_LINK_HOURS}
        + ("" if asked else " " + _("(One was sent in the last hour already: please use that one.)")),
        language=language)

# Everything held about the reader, as JSON. The preferences link is the reader's own secret already, and a
# GET only reads: nothing here changes.
@router.get("/p/{token}/data.json")
def my_data(token: str, svc: Svc):
    subscriber_id = tokens.read_preferences_token(svc.settings.secret_key, token)
    with transaction(svc.Session) as session:
        subscriber = consent.by_id(session, subscriber_id, "this preferences link belongs to an address that no "
                                   "longer exists")
        data = rights.export(session, subscriber)
    return Response(json.dumps(data, ensure_ascii=False, indent=2), media_type="application/json",
                    headers={"Content-Disposition": 'attachment; filename="my-newsletter-data.json"',
                             "Cache-Control": "no-store"})

# The link in the "delete my data" mail. GET shows the button only (mail scanners open links); the POST,
# from our own page with its form token bound to the link, erases.
@router.get("/erase/{token}", response_class=HTMLResponse)
def erase_page(request: Request, token: str, svc: Svc):
    return erase_page_of(svc, token, expired=False, language=reader_language(request))


def erase_page_of(svc, token: str, status: int = 200, /, *, expired: bool, language: str) -> HTMLResponse:
    subscriber_id = tokens.read_erase_token(svc.settings.secret_key, token)
    _ = i18n.translations(language).gettext
    with transaction(svc.Session) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            return message(_("Nothing left to delete"), _("We hold no data about this address any more."),
                           language=language)
        return page("erase", status, email=subscriber.email, expired=expired,
                    form_token=new_form_token(svc.settings, "erase", token), language=language)


@router.post("/erase/{token}", response_class=HTMLResponse)
def erase(request: Request, token: str, svc: Svc, form_token: str = Form("")):
    subscriber_id = tokens.read_erase_token(svc.settings.secret_key, token)
    language = reader_language(request)
    _ = i18n.translations(language).gettext
    try:
        form_checked(svc.settings, request, form_token, "erase", token)
    except forms.FormExpired:
        return erase_page_of(svc, token, 400, expired=True, language=language)
    with transaction(svc.Session) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is not None:
            rights.erase(session, subscriber, "reader")
    return message(_("Your data is deleted"), _(
        "We have deleted your address, your subscriptions and your history with us. No newsletter will come to "
        "you any more, and no list we import can add the address back; only signing up again yourself can."),
        language=language)

@router.get("/n/{slug}", response_class=HTMLResponse)
def archive_page(slug: str, svc: Svc):
    with transaction(svc.Session) as session:
        newsletter = archive.newsletter(session, slug)
        sent = [(e, archive.local_date(e, newsletter), archive.subject(e))
                for e in archive.sent_editions(session, newsletter)]
        return page("archive", newsletter=newsletter, sent=sent, language=newsletter.language)

# Before the web view, whose {number} would claim "feed.atom".
@router.get("/n/{slug}/feed.atom")
def archive_feed(slug: str, svc: Svc):
    with transaction(svc.Session) as session:
        newsletter = archive.newsletter(session, slug)
        sent = archive.sent_editions(session, newsletter, archive.FEED_ENTRIES)
        return Response(archive.atom(newsletter, sent, svc.settings), media_type="application/atom+xml")

@router.get("/n/{slug}/{number}", response_class=HTMLResponse)
def web_view(slug: str, number: RowId, svc: Svc):
    with transaction(svc.Session) as session:
        edition = editions.get_edition(session, slug, number)
        # The newsletter's HTML, sandboxed: an opaque origin with no script, whatever got into it.
        return HTMLResponse(archive.public_html(edition, svc.settings), headers=csp.sandboxed() | {
            "Content-Language": i18n.known(edition.newsletter.language)})

# A story link of an edition that counts clicks: one more on that link's counter, then the story. Only a GET
# counts (HEAD is a link checker asking whether it works), once per client and link in RecentClicks' window;
# nothing about the reader is stored. 302, never cached: every click comes back here.
@router.api_route("/r/{edition_id}/{link}", methods=["GET", "HEAD"])
def counted_link(request: Request, edition_id: str, link: str, svc: Svc):
    if not (edition_id.isdigit() and 0 < int(edition_id) <= MAX_ID):
        raise NotFound(clicks.NOT_OURS)
    with transaction(svc.Session) as session:
        url, counts = clicks.target(session, svc.settings, int(edition_id), link)
        number = int(link.partition(".")[0])
        client = request.client.host if request.client else ""
        if counts and request.method == "GET" and request.app.state.recent_clicks.first(client, int(edition_id),
                                                                                        number):
            clicks.count(session, int(edition_id), number)
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
