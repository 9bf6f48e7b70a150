"""What every route of the web app answers with: pages, the API's one error shape (RFC 6750 challenges
for tokens), a capped body, and the process's services as a FastAPI dependency (`svc: Svc`)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse

from syndicate import i18n

# The process's services as each route's dependency (`svc: Svc`): one alias for these routes and the desk's,
# defined in desk/core since the desk may not import web, and re-exported here.
from syndicate.desk.core import Svc as Svc
from syndicate.http.api_tokens import NotAuthenticated, OutOfScope
from syndicate.templating import render
from syndicate.web import forms


def page(template: str, status: int = 200, /, *, language: str = i18n.SOURCE, **context) -> HTMLResponse:
    """A reader's page in `language` (English when it has no catalogue), saying so in Content-Language."""
    language = i18n.known(language)
    context.setdefault("form_hours", forms.FORM_HOURS)  # said when a form comes back expired
    # Vary: the sign-up form, preferences and refusals follow Accept-Language, so a cache must keep them apart.
    return HTMLResponse(render(f"web/{template}.html", language=language, **context), status_code=status,
                        headers={"Content-Language": language, "Vary": "Accept-Language"})


def message(title: str, text: str, status: int = 200, link: tuple[str, str] | None = None, *,
            language: str = i18n.SOURCE) -> HTMLResponse:
    """A page that says one thing: `title` and `text` come already in `language` (the caller's own words)."""
    return page("message", status, title=title, message=text, link=link, language=language)


def reader_language(request: Request) -> str:
    """For a page about no one newsletter (the sign-up form, a reader's preferences): the browser's choice."""
    return i18n.negotiate(request.headers.get("accept-language"))


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
