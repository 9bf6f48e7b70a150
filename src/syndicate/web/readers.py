"""Readers' pages: subscribe → confirm (by POST: link scanners can't), one-click unsubscribe (RFC 8058),
preferences, and the archive with each edition's web view. HTML, not in the API's /docs."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from syndicate import tokens
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.errors import InvalidInput, NotFound
from syndicate.http import csp
from syndicate.models import MAX_ID, Newsletter, RowId, Subscriber
from syndicate.newsletters import archive, clicks, editions, stored
from syndicate.subscribers import choices, consent, preferences
from syndicate.tasks import hand_over, send_confirmation
from syndicate.web import forms
from syndicate.web.responses import Svc, message, page

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
def subscribe_form(svc: Svc):
    with transaction(svc.Session) as session:
        newsletters = session.scalars(select(Newsletter).where(Newsletter.status == "active")
                                      .order_by(Newsletter.name)).all()
        return subscribe_page(svc.settings, newsletters=newsletters, chosen=[n.slug for n in newsletters][:1],
                              email="", name="")

@router.post("/subscribe", response_class=HTMLResponse)
def subscribe(request: Request, svc: Svc, email: str = Form(""), name: str = Form(""),
              newsletter: list[str] = Form(default=[]), form_token: str = Form("")):
    with transaction(svc.Session) as session:
        chosen = session.scalars(select(Newsletter).where(Newsletter.slug.in_(newsletter))).all()
        try:
            form_checked(svc.settings, request, form_token, "subscribe")
            # The client's address limits confirmation mails per sender too (behind a proxy,
            # `syndicate web` reads it from X-Forwarded-For: uvicorn's proxy_headers).
            signup = consent.subscribe(session, email, [n.id for n in chosen], name=name or None,
                                       source="web", client=request.client.host if request.client else None,
                                       settings=svc.settings)
        except (InvalidInput, forms.FormExpired) as e:
            everything = [n for n in stored.all_newsletters(session) if n.status != "archived"]
            expired = isinstance(e, forms.FormExpired)
            return subscribe_page(svc.settings, 400, newsletters=everything, chosen=newsletter, email=email, name=name,
                                  expired=expired, error=None if expired else str(e))
        subscriber_id, send, awaiting = signup.subscriber.id, signup.send_confirmation, signup.awaiting_confirmation
    if send:
        hand_over(send_confirmation, subscriber_id)  # after commit: the task finds the row
    if not awaiting:
        return message("You're subscribed", "This address already receives the newsletters you chose.")
    if signup.held_back == "client":
        return message("Please try again later", "We've noted your choice, but many confirmation emails have "
                       "gone out to sign-ups from your network in the last hour, so we're holding this one "
                       "back. Please sign up again in an hour to get the confirmation link.")
    if not send:
        return message("Check your inbox", "We've already sent several confirmation emails to this address "
                       "in the last hour; please use the link in one of them.")
    return message("Check your inbox", "We've sent you an email with a link to confirm your subscription.")

@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(token: str, svc: Svc):
    tokens.read_confirm_token(svc.settings.secret_key, token)
    return page("confirm", form_token=new_form_token(svc.settings, "confirm", token), expired=False)

@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(request: Request, token: str, svc: Svc, form_token: str = Form("")):
    tokens.read_confirm_token(svc.settings.secret_key, token)  # a damaged link says so first
    try:
        form_checked(svc.settings, request, form_token, "confirm", token)
    except forms.FormExpired:
        return page("confirm", 400, form_token=new_form_token(svc.settings, "confirm", token), expired=True)
    with transaction(svc.Session) as session:
        subscriber = consent.confirm(session, svc.settings, token)
        suspended = preferences.suspension(session, subscriber)
    if suspended:  # the choice is kept; an editor restores the address
        return message("Your choice is saved", suspended)
    return message("You're subscribed", "Thank you: your subscription is confirmed.")

@router.get("/u/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, svc: Svc):
    subscriber_id, newsletter_id = tokens.read_unsubscribe_token(svc.settings.secret_key, token)
    with transaction(svc.Session) as session:
        subscriber, newsletter = session.get(Subscriber, subscriber_id), session.get(Newsletter, newsletter_id)
        if subscriber is None or newsletter is None:
            raise NotFound("this unsubscribe link belongs to a subscription that no longer exists")
        return page("unsubscribe", subscriber=subscriber, newsletter=newsletter)

@router.post("/u/{token}", response_class=HTMLResponse)
def unsubscribe(token: str, svc: Svc):
    # RFC 8058: the mailbox provider POSTs List-Unsubscribe=One-Click with no cookies.
    # The signed token is the authentication; the answer is 200, never a redirect.
    with transaction(svc.Session) as session:
        subscription = consent.unsubscribe(session, svc.settings, token)
        name = subscription.newsletter.name
    return message("You're unsubscribed", f"You will not receive {name} any more.")

# The reader's preferences. The signed token in the URL comes only in mail to their address and is
# the credential; the form's own token, bound to it, and the Origin check keep other sites from
# pressing the buttons for a reader whose link they learnt. GET changes nothing: link scanners prefetch.
def preferences_page_of(settings: Settings, session, token: str, subscriber_id: int, status: int = 200, /,
                        **context):
    context.setdefault("error", None)
    context.setdefault("kept", None)
    return page("preferences", status, prefs=preferences.preferences(session, subscriber_id),
                form_token=new_form_token(settings, "preferences", token), frequencies=choices.FREQUENCIES, **context)

@router.get("/p/{token}", response_class=HTMLResponse)
def preferences_page(token: str, svc: Svc):
    subscriber_id = tokens.read_preferences_token(svc.settings.secret_key, token)
    with transaction(svc.Session) as session:
        return preferences_page_of(svc.settings, session, token, subscriber_id, saved=None, expired=False)

@router.post("/p/{token}", response_class=HTMLResponse)
def save_preferences(request: Request, token: str, svc: Svc, action: str = Form(""),
                     newsletter: list[str] = Form(default=[]), form_token: str = Form(""),
                     topic: list[str] = Form(default=[]), frequency: list[str] = Form(default=[])):
    subscriber_id = tokens.read_preferences_token(svc.settings.secret_key, token)
    with transaction(svc.Session) as session:
        try:
            form_checked(svc.settings, request, form_token, "preferences", token)
        except forms.FormExpired:
            return preferences_page_of(svc.settings, session, token, subscriber_id, 400, saved=None, expired=True)
        if action == "leave":
            preferences.leave_all(session, subscriber_id)
            saved = "left"
        elif action == "save":  # required: a bare POST must not read as "untick everything"
            try:
                checked = preferences.check_choices(session, subscriber_id, topic, frequency)
            except InvalidInput as e:  # nothing saved; the page shows what was chosen, and what to change
                kept = dict(newsletters=set(newsletter), topics=set(topic),
                            frequency=dict(f.partition(":")[::2] for f in frequency))
                return preferences_page_of(svc.settings, session, token, subscriber_id, 400, saved=None,
                                           expired=False, error=str(e), kept=kept)
            ids = session.scalars(select(Newsletter.id).where(Newsletter.slug.in_(newsletter))).all()
            saved = preferences.set_preferences(session, subscriber_id, list(ids))
            saved.changed = preferences.save_choices(session, subscriber_id, checked)
        else:
            raise InvalidInput("nothing was saved; press one of the buttons on the preferences page")
        return preferences_page_of(svc.settings, session, token, subscriber_id, saved=saved, expired=False)

@router.get("/n/{slug}", response_class=HTMLResponse)
def archive_page(slug: str, svc: Svc):
    with transaction(svc.Session) as session:
        newsletter = archive.newsletter(session, slug)
        sent = [(e, archive.local_date(e, newsletter), archive.subject(e))
                for e in archive.sent_editions(session, newsletter)]
        return page("archive", newsletter=newsletter, sent=sent)

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
        return HTMLResponse(archive.public_html(edition, svc.settings), headers=csp.sandboxed())

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
