"""The headers every page is served with: a strict Content-Security-Policy, no MIME sniffing, no referrer
beyond our own pages, no framing.

Scripts run only if they carry this response's nonce (`templating.csp_nonce`, put on the desk's own
`<script>` tags): markup that got into a page some other way, a story's `javascript:` link included, runs
nothing. A route that sets its own policy keeps it: the edition's web view and the desk's preview are the
newsletter's HTML under `SANDBOXED`, an opaque origin with no script at all, so even a hole in the edition
could never reach /desk and its cookie.
"""

from __future__ import annotations

import secrets

from syndicate.templating import csp_nonce

# Pages of ours: our own script (by nonce), styles, forms to ourselves, pictures from anywhere (stories').
PAGE_POLICY = ("default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' https: http: data:; connect-src 'self'; frame-src 'self'; object-src 'none'; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

# The newsletter's own HTML (web view, preview): a sandbox, so no script and no access to our origin.
SANDBOXED = ("default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; font-src https: data:; "
             "base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}; "
             "sandbox allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation")

ALWAYS = {
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
    b"x-frame-options": b"DENY",
}


def sandboxed(framed_by_desk: bool = False) -> dict[str, str]:
    """The headers for the newsletter's own HTML; the desk's preview may be framed by the desk itself."""
    return {
        "Content-Security-Policy": SANDBOXED.format(ancestors="'self'" if framed_by_desk else "'none'"),
        "X-Frame-Options": "SAMEORIGIN" if framed_by_desk else "DENY",
    }


class SecurityHeaders:
    """ASGI middleware: a fresh nonce per request, and the headers above on every answer that has none."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        nonce = secrets.token_urlsafe(18)
        token = csp_nonce.set(nonce)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in ALWAYS.items() if name not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", PAGE_POLICY.format(nonce=nonce).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        finally:
            csp_nonce.reset(token)
