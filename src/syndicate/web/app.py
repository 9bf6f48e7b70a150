"""The web app, assembled: the readers' pages, the machines' APIs, /healthz and /metrics, and the
editors' desk (/desk, signed in, and its API /api/v1); one error shape for the API, one page for readers."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from syndicate import __version__, i18n, services, tokens
from syndicate.desk import routes as desk
from syndicate.errors import InvalidInput, NotFound
from syndicate.http.api_tokens import NotAuthenticated, OutOfScope
from syndicate.http.csp import SecurityHeaders
from syndicate.newsletters import clicks
from syndicate.web import api, docs, forms, health, probes, readers
from syndicate.web.responses import api_error, bearer_token, message, out_of_scope, reader_language, unauthorized

log = logging.getLogger(__name__)


def page_language(request: Request) -> str:
    """A refusal's page: the desk's in English like the desk, a reader's in the language their browser asks for."""
    return i18n.SOURCE if request.url.path.startswith("/desk") else reader_language(request)
RETRY_AFTER = 60  # seconds, said with a 503 when the database is away


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


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
    # /docs is web.docs: Swagger UI's files from a package, not FastAPI's page that loads them from a CDN.
    app = FastAPI(title="syndicate", docs_url=None, redoc_url=None, version=__version__,
                  description="The desk's API (/api/v1) takes an editor's own token, made on the desk's account "
                              "page or with `syndicate token create NAME --editor USER`; a CMS pushes stories to "
                              "/api/articles with a token from `syndicate token create NAME --scope articles:push`. "
                              "A token without the scope a route asks for gets 403 naming it. Reader-facing pages "
                              "(subscribe, confirm, unsubscribe, preferences, archive) are HTML and not listed here.")
    app.state.health = health.Cached()
    app.state.recent_clicks = clicks.RecentClicks()  # this process's memory only: see there
    app.add_middleware(DeskSessions)
    app.add_middleware(SecurityHeaders)
    for router in (readers.router, api.router, probes.router, docs.router, desk.pages, desk.api):
        app.include_router(router)

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
        language = page_language(request)
        _ = i18n.translations(language).gettext
        return message(_("Refused"), _(
            "This form was sent from another site, or from a copy of our page we can't vouch for, so nothing was "
            "done. Open the form again, reload the page and try once more."),
            403, link=(again, _("Open the form again")), language=language)

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
        if wants_json(request):
            return api_error(str(e), 422)
        language = page_language(request)  # the title in it; what went wrong is said in English for now
        return message(i18n.translations(language).gettext("That didn't work"), str(e), 400, language=language)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, e: NotFound):
        if wants_json(request):
            return api_error(str(e), 404)
        language = page_language(request)
        return message(i18n.translations(language).gettext("Not found"), str(e), 404, language=language)

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, e: NotAuthenticated):  # the desk's API, without a good token
        return unauthorized(e, bearer_token(request) is not None)

    @app.exception_handler(OutOfScope)
    async def insufficient_scope(request: Request, e: OutOfScope):  # a good token, of another kind: every route
        return out_of_scope(e)
    return app


app = create_app()
