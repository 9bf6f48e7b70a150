"""The public web pages: subscribe → confirm, unsubscribe (RFC 8058 one-click), the edition web view;
the push API a CMS calls when it publishes (POST /api/articles); the editors' desk (/desk, signed in);
/healthz and /metrics for operators.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Form, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from syndicate import __version__, services, tokens
from syndicate.db import transaction
from syndicate.desk import routes as desk
from syndicate.errors import InvalidInput, NotFound
from syndicate.http import answers, api_tokens, csp
from syndicate.http.answers import INVALID, OUT_OF_SCOPE, TOO_LARGE, UNAUTHENTICATED, UNAVAILABLE, ApiError, answer
from syndicate.http.api_tokens import NotAuthenticated, OutOfScope
from syndicate.http.csp import SecurityHeaders
from syndicate.ingest import push
from syndicate.models import Newsletter, RowId, Subscriber
from syndicate.newsletters import archive, editions
from syndicate.subscribers import bounces, consent, sns
from syndicate.tasks import hand_over, send_confirmation, social_tick, tick
from syndicate.templating import render
from syndicate.web import forms, health, metrics

log = logging.getLogger(__name__)
RETRY_AFTER = 60  # seconds, said with a 503 when the database is away


def page(template: str, status: int = 200, /, **context) -> HTMLResponse:
    context.setdefault("form_hours", forms.FORM_HOURS)  # said when a form comes back expired
    return HTMLResponse(render(f"web/{template}.html", **context), status_code=status)


def message(title: str, text: str, status: int = 200, link: tuple[str, str] | None = None) -> HTMLResponse:
    return page("message", status, title=title, message=text, link=link)


def api_error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def unauthorized(e: NotAuthenticated, token_given: bool) -> JSONResponse:
    # RFC 6750: say the scheme, and whether the token itself was the problem.
    challenge = 'Bearer realm="syndicate"' + (', error="invalid_token"' if token_given else "")
    return api_error(str(e), 401, {"WWW-Authenticate": challenge})


def out_of_scope(e: OutOfScope) -> JSONResponse:
    # RFC 6750 section 3.1: a good token without the scope this needs, and which scope that is.
    return JSONResponse({"error": str(e), "scope": e.scope}, status_code=403, headers={
        "WWW-Authenticate": f'Bearer realm="syndicate", error="insufficient_scope", scope="{e.scope}"'})


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():  # a body without Content-Length is counted as it arrives
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class DeskSessions:
    """Starlette's signed-cookie sessions for the desk only (the cookie's path is /desk), keyed by a key
    derived from SYNDICATE_SECRET_KEY; built on first use, since settings are read when needed."""

    def __init__(self, app):
        self.app, self.built = app, {}

    async def __call__(self, scope, receive, send):
        settings = services.current().settings
        key = (settings.secret_key, settings.base_url.startswith("https"))
        if key not in self.built:
            from starlette.middleware.sessions import SessionMiddleware

            self.built[key] = SessionMiddleware(
                self.app, secret_key=tokens.derive(settings.secret_key, "desk sessions"),
                session_cookie=desk.COOKIE, max_age=desk.SESSION_HOURS * 3600, path="/desk", same_site="lax",
                https_only=key[1])
        await self.built[key](scope, receive, send)


def create_app() -> FastAPI:
    app = FastAPI(title="syndicate", docs_url="/docs", redoc_url=None, version=__version__,
                  description="The desk's API (/api/v1) takes an editor's own token, made on the desk's account "
                              "page or with `syndicate token create NAME --editor USER`; a CMS pushes stories to "
                              "/api/articles with a token from `syndicate token create NAME --scope articles:push`. "
                              "A token without the scope a route asks for gets 403 naming it. Reader-facing pages "
                              "(subscribe, confirm, unsubscribe, preferences, archive) are HTML and not listed here.")
    app.add_middleware(DeskSessions)
    app.add_middleware(SecurityHeaders)
    app.include_router(desk.pages)
    app.include_router(desk.api)

    def svc():
        return services.current()

    @app.exception_handler(desk.SignInRequired)
    async def sign_in_first(request: Request, e: desk.SignInRequired):
        if e.wants_json:  # a page's script: it tells the editor, who signs in again
            return api_error("signed out: sign in again", 401)
        return desk.sign_in_redirect(e.path)

    @app.exception_handler(desk.CsrfRefused)
    async def csrf_refused(request: Request, e: desk.CsrfRefused):
        return message("Refused", "This form is out of date or came from another site: go back, reload the "
                       "page and try again.", 403)

    @app.exception_handler(forms.FormRefused)
    async def form_refused(request: Request, e: forms.FormRefused):
        # The form itself is one GET away: the subscribe form is the home page, the others are their URL.
        again = "/" if request.url.path == "/subscribe" else request.url.path
        return message("Refused", "This form was sent from another site, or from a copy of our page we can't "
                       "vouch for, so nothing was done. Open the form again, reload the page and try once more.",
                       403, link=(again, "Open the form again"))

    def form_checked(request: Request, given: str, purpose: str, bound_to: str = "") -> None:
        """A reader's form POST came from our own page, recently: FormRefused or FormExpired otherwise."""
        settings = svc().settings
        forms.check_origin(settings.base_url, request.headers.get("origin"), request.headers.get("referer"))
        forms.check_token(settings.secret_key, given, purpose, bound_to)

    def new_form_token(purpose: str, bound_to: str = "") -> str:
        return forms.token(svc().settings.secret_key, purpose, bound_to)

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")

    @app.exception_handler(StarletteHTTPException)
    async def http_refusal(request: Request, e: StarletteHTTPException):
        # Starlette's and FastAPI's own refusals (no such route, a body that can't be read) in the API's one
        # error shape, as /openapi.json documents it; pages keep the default.
        if not request.url.path.startswith("/api/"):
            return await http_exception_handler(request, e)
        said = str(e.detail)
        if e.status_code == 404:
            said = f"this API has no {request.url.path}: /docs (and /openapi.json) list its routes"
        return api_error(said, e.status_code, e.headers)

    @app.exception_handler(OperationalError)
    async def database_away(request: Request, e: OperationalError):
        # Nothing was stored (the transaction did not commit): say so, and when to try again.
        log.error("database unavailable for %s %s: %s", request.method, request.url.path, e.orig)
        said = "the database can't be reached just now, so nothing was stored; try again in a minute"
        if wants_json(request):
            return api_error(said, 503, {"Retry-After": str(RETRY_AFTER)})
        response = message("Please try again in a minute", f"Sorry: {said}.", 503)
        response.headers["Retry-After"] = str(RETRY_AFTER)
        return response

    @app.exception_handler(InvalidInput)
    async def invalid(request: Request, e: InvalidInput):
        return api_error(str(e), 422) if wants_json(request) else message("That didn't work", str(e), 400)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, e: NotFound):
        return api_error(str(e), 404) if wants_json(request) else message("Not found", str(e), 404)

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, e: NotAuthenticated):  # the desk's API, without a good token
        return unauthorized(e, bearer_token(request) is not None)

    @app.exception_handler(OutOfScope)
    async def insufficient_scope(request: Request, e: OutOfScope):  # a good token, of another kind: every route
        return out_of_scope(e)

    def subscribe_page(status: int = 200, /, *, error: str | None = None, expired: bool = False,
                       **context) -> HTMLResponse:
        return page("subscribe", status, form_token=new_form_token("subscribe"), error=error, expired=expired,
                    **context)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def subscribe_form():
        with transaction(svc().Session) as session:
            newsletters = session.scalars(select(Newsletter).where(Newsletter.status == "active")
                                          .order_by(Newsletter.name)).all()
            return subscribe_page(newsletters=newsletters, chosen=[n.slug for n in newsletters][:1],
                                  email="", name="")

    @app.post("/subscribe", response_class=HTMLResponse, include_in_schema=False)
    def subscribe(request: Request, email: str = Form(""), name: str = Form(""),
                  newsletter: list[str] = Form(default=[]), form_token: str = Form("")):
        with transaction(svc().Session) as session:
            chosen = session.scalars(select(Newsletter).where(Newsletter.slug.in_(newsletter))).all()
            try:
                form_checked(request, form_token, "subscribe")
                # The client's address limits confirmation mails per sender too (behind a proxy,
                # `syndicate web` reads it from X-Forwarded-For: uvicorn's proxy_headers).
                signup = consent.subscribe(session, email, [n.id for n in chosen], name=name or None,
                                               source="web", client=request.client.host if request.client else None,
                                               settings=svc().settings)
            except (InvalidInput, forms.FormExpired) as e:
                everything = session.scalars(select(Newsletter).order_by(Newsletter.name)).all()
                expired = isinstance(e, forms.FormExpired)
                return subscribe_page(400, newsletters=everything, chosen=newsletter, email=email, name=name,
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

    @app.get("/confirm/{token}", response_class=HTMLResponse, include_in_schema=False)
    def confirm_page(token: str):
        tokens.read_confirm_token(svc().settings.secret_key, token)
        return page("confirm", form_token=new_form_token("confirm", token), expired=False)

    @app.post("/confirm/{token}", response_class=HTMLResponse, include_in_schema=False)
    def confirm(request: Request, token: str, form_token: str = Form("")):
        tokens.read_confirm_token(svc().settings.secret_key, token)  # a damaged link says so first
        try:
            form_checked(request, form_token, "confirm", token)
        except forms.FormExpired:
            return page("confirm", 400, form_token=new_form_token("confirm", token), expired=True)
        with transaction(svc().Session) as session:
            subscriber = consent.confirm(session, svc().settings, token)
            suspended = consent.suspension(session, subscriber)
        if suspended:  # the choice is kept; an editor restores the address
            return message("Your choice is saved", suspended)
        return message("You're subscribed", "Thank you: your subscription is confirmed.")

    @app.get("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
    def unsubscribe_page(token: str):
        subscriber_id, newsletter_id = tokens.read_unsubscribe_token(svc().settings.secret_key, token)
        with transaction(svc().Session) as session:
            subscriber, newsletter = session.get(Subscriber, subscriber_id), session.get(Newsletter, newsletter_id)
            if subscriber is None or newsletter is None:
                raise NotFound("this unsubscribe link belongs to a subscription that no longer exists")
            return page("unsubscribe", subscriber=subscriber, newsletter=newsletter)

    @app.post("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
    def unsubscribe(token: str):
        # RFC 8058: the mailbox provider POSTs List-Unsubscribe=One-Click with no cookies.
        # The signed token is the authentication; the answer is 200, never a redirect.
        with transaction(svc().Session) as session:
            subscription = consent.unsubscribe(session, svc().settings, token)
            name = subscription.newsletter.name
        return message("You're unsubscribed", f"You will not receive {name} any more.")

    # The reader's preferences. The signed token in the URL comes only in mail to their address and is
    # the credential; the form's own token, bound to it, and the Origin check keep other sites from
    # pressing the buttons for a reader whose link they learnt. GET changes nothing: link scanners prefetch.
    def preferences_page_of(session, token: str, subscriber_id: int, status: int = 200, /, **context):
        return page("preferences", status, prefs=consent.preferences(session, subscriber_id),
                    form_token=new_form_token("preferences", token), **context)

    @app.get("/p/{token}", response_class=HTMLResponse, include_in_schema=False)
    def preferences_page(token: str):
        subscriber_id = tokens.read_preferences_token(svc().settings.secret_key, token)
        with transaction(svc().Session) as session:
            return preferences_page_of(session, token, subscriber_id, saved=None, expired=False)

    @app.post("/p/{token}", response_class=HTMLResponse, include_in_schema=False)
    def save_preferences(request: Request, token: str, action: str = Form(""),
                         newsletter: list[str] = Form(default=[]), form_token: str = Form("")):
        subscriber_id = tokens.read_preferences_token(svc().settings.secret_key, token)
        with transaction(svc().Session) as session:
            try:
                form_checked(request, form_token, "preferences", token)
            except forms.FormExpired:
                return preferences_page_of(session, token, subscriber_id, 400, saved=None, expired=True)
            if action == "leave":
                consent.leave_all(session, subscriber_id)
                saved = "left"
            elif action == "save":  # required: a bare POST must not read as "untick everything"
                ids = session.scalars(select(Newsletter.id).where(Newsletter.slug.in_(newsletter))).all()
                saved = consent.set_preferences(session, subscriber_id, list(ids))
            else:
                raise InvalidInput("nothing was saved; press one of the buttons on the preferences page")
            return preferences_page_of(session, token, subscriber_id, saved=saved, expired=False)

    @app.get("/n/{slug}", response_class=HTMLResponse, include_in_schema=False)
    def archive_page(slug: str):
        with transaction(svc().Session) as session:
            newsletter = archive.newsletter(session, slug)
            sent = [(e, archive.local_date(e, newsletter)) for e in archive.sent_editions(session, newsletter)]
            return page("archive", newsletter=newsletter, sent=sent)

    # Before the web view, whose {number} would claim "feed.atom".
    @app.get("/n/{slug}/feed.atom", include_in_schema=False)
    def archive_feed(slug: str):
        with transaction(svc().Session) as session:
            newsletter = archive.newsletter(session, slug)
            sent = archive.sent_editions(session, newsletter, archive.FEED_ENTRIES)
            return Response(archive.atom(newsletter, sent, svc().settings), media_type="application/atom+xml")

    @app.get("/n/{slug}/{number}", response_class=HTMLResponse, include_in_schema=False)
    def web_view(slug: str, number: RowId):
        with transaction(svc().Session) as session:
            edition = editions.get_edition(session, slug, number)
            # The newsletter's HTML, sandboxed: an opaque origin with no script, whatever got into it.
            return HTMLResponse(editions.public_html(edition, svc().settings), headers=csp.sandboxed())

    # A CMS authenticates with a bearer token it sends itself: no cookie, so no CSRF to guard against.
    @app.post("/api/articles", status_code=201, summary="Push a story the moment the CMS publishes it",
              response_model=push.Pushed, responses={
                  200: answer("The story was here already: updated, or unchanged.", push.Pushed),
                  **UNAUTHENTICATED, **OUT_OF_SCOPE, **TOO_LARGE, **INVALID, **UNAVAILABLE},
              openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": push.PushedStory.model_json_schema()}}}})
    async def push_article(request: Request):
        """Store a story the moment the CMS publishes it; the same push again changes nothing."""
        token = bearer_token(request)
        if token is None:
            return unauthorized(NotAuthenticated(
                f"send an API token as `Authorization: Bearer <token>`; {api_tokens.HOW_TO_GET_ONE}"), False)
        body = await read_capped(request, push.MAX_BYTES)
        if body is None:
            return api_error(f"the story is larger than {push.MAX_BYTES // 1_000_000} MB; send its HTML without "
                             "embedded files (data: URLs)", 413)
        return await run_in_threadpool(receive_push, token, body)

    def receive_push(token: str, body: bytes) -> JSONResponse:
        try:
            with transaction(svc().Session) as session:
                api_tokens.authenticate(session, token, "articles:push")
        except NotAuthenticated as e:
            return unauthorized(e, True)
        try:
            story = push.parse(body)  # only after the token: strangers learn nothing from our answers
        except InvalidInput as e:
            return api_error(str(e), 422)
        with transaction(svc().Session) as session:
            received = push.receive(session, story)
        if received.status == "created":
            hand_over(social_tick)  # after commit: the teaser goes out now, not at the next tick
            hand_over(tick)  # and a breaking story's edition
        return JSONResponse({"id": received.article_id, "status": received.status},
                            status_code=201 if received.status == "created" else 200)

    def bounces_unauthorized(e: NotAuthenticated, token_given: bool) -> JSONResponse:
        # Basic first: SNS sends its first request without credentials and answers a Basic challenge.
        response = api_error(str(e), 401, {"WWW-Authenticate": 'Basic realm="syndicate"'})
        response.headers.append("WWW-Authenticate",
                                'Bearer realm="syndicate"' + (', error="invalid_token"' if token_given else ""))
        return response

    # Bounces and complaints from the mail provider: Amazon SES through SNS, or any service posting the
    # generic JSON shape. A token with events:bounces is the authentication, as a bearer token or as the
    # HTTP Basic password (SNS can only send Basic: https://sns:TOKEN@host/api/events/bounces); an SNS
    # message must also carry Amazon SNS's signature.
    @app.post("/api/events/bounces", summary="Bounces and complaints from the mail provider", responses={
        200: {"description": "The events, and what was done with each."}, **UNAUTHENTICATED,
        403: answer("The token hasn't the scope events:bounces (`scope` names it), or an SNS message's signature "
                    "doesn't check out.", answers.ScopeMissing | ApiError),
        **TOO_LARGE, **INVALID, 429: answer("This token reported too many events lately: the error says when to "
                                            "send again."),
        502: answer("Amazon SNS couldn't be reached (its signing certificate, or to confirm the subscription): "
                    "SNS delivers again later.")},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": bounces.GENERIC_SCHEMA}}}})
    async def bounce_events(request: Request):
        """Record bounces and complaints; the same notification again changes nothing. Needs a token with the
        scope events:bounces; an Amazon SNS message must carry a good SNS signature (403 if not)."""
        token = bounces.webhook_token(request.headers.get("authorization", ""))
        if token is None:
            return bounces_unauthorized(NotAuthenticated(
                "send an API token as `Authorization: Bearer <token>`, or as the password of HTTP Basic "
                f"(https://sns:TOKEN@host/api/events/bounces); {api_tokens.HOW_TO_GET_ONE}"), False)
        body = await read_capped(request, bounces.MAX_BYTES)
        if body is None:
            return api_error(f"the notification is larger than {bounces.MAX_BYTES // 1024} KB; send fewer "
                             "events per request", 413)
        return await run_in_threadpool(receive_bounces, token, body, request.headers)

    def receive_bounces(token: str, body: bytes, headers) -> JSONResponse:
        try:
            with transaction(svc().Session) as session:
                sender = api_tokens.authenticate(session, token, "events:bounces").id
        except NotAuthenticated as e:
            return bounces_unauthorized(e, True)
        try:
            with transaction(svc().Session) as session:
                result = bounces.handle(session, svc().settings, body, headers, sender=f"token:{sender}")
        except sns.BadSignature as e:
            return api_error(str(e), 403)
        except sns.CertificateUnavailable as e:
            return api_error(str(e), 502)  # SNS delivers again later; by then the certificate may come
        except bounces.RateLimited as e:
            return api_error(str(e), 429)
        except bounces.TooManyEvents as e:
            return api_error(str(e), 413)
        except InvalidInput as e:
            return api_error(str(e), 422)
        return JSONResponse(result.as_json(), status_code=502 if result.error else 200)

    health_report = health.Cached()

    @app.get("/healthz", summary="Database, broker and mail server reachable?", responses={
        200: {"description": "All of them answer."}, 503: {"description": "Some don't: the body names them."},
        **UNAUTHENTICATED, **OUT_OF_SCOPE})
    def healthz(request: Request):
        """Database, broker and mail server, checked side by side: 200 when all answer, 503 naming those
        that don't; within a few seconds either way. What each check saw (hosts, ports, errors) comes only
        with a metrics:read token as a Bearer (`syndicate token create NAME --scope metrics:read`); a failure's
        detail is also logged."""
        token, detailed = bearer_token(request), False
        if token is not None:  # the scraper's token, as for /metrics
            try:
                with transaction(svc().Session) as session:
                    api_tokens.authenticate(session, token, "metrics:read")
                detailed = True
            except NotAuthenticated as e:
                return unauthorized(e, True)
            except SQLAlchemyError:  # the database is down: no token can be checked; the log has the details
                pass
        healthy, body = health_report(svc().settings, svc().engine)
        return JSONResponse(body if detailed else health.public(body), status_code=200 if healthy else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={
        200: {"content": {"text/plain": {}}, "description": "The Prometheus text format."},
        **UNAUTHENTICATED, **OUT_OF_SCOPE})
    def prometheus(request: Request):
        """Prometheus text format; send a token with metrics:read
        (`syndicate token create prometheus --scope metrics:read`) as a Bearer."""
        try:
            with transaction(svc().Session) as session:
                api_tokens.authenticate(session, bearer_token(request), "metrics:read")
                body = metrics.render(session, svc().settings)
        except NotAuthenticated as e:
            return unauthorized(e, bearer_token(request) is not None)
        body += metrics.render_pace(svc().pacer)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


app = create_app()
