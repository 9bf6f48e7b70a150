"""/docs: the API's Swagger UI, its files served from the fastapi-offline package rather than a CDN, so the
page works offline and on a network that blocks CDNs, and the Content-Security-Policy allows it as it is: our
own origin, and the page's start-up script carrying this response's nonce.

Only the package's files are used (Swagger UI 5, which reads the OpenAPI 3.1 FastAPI writes; swagger-ui-bundle's
4.15 can't), not its page, whose inline script carries no nonce."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse
from markupsafe import escape

from syndicate import __version__
from syndicate.errors import NotFound
from syndicate.templating import csp_nonce

ASSETS = "/docs/assets"
# Only what the page loads: the package holds more (its own index.html, source maps).
FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
STATIC = files("fastapi_offline") / "static"

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def docs():
    nonce = escape(csp_nonce.get())
    return HTMLResponse(f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>syndicate {escape(__version__)} · API</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS}/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js" nonce="{nonce}"></script>
<script nonce="{nonce}">
// validatorUrl null: the spec is not sent to swagger.io's validator (the default), nor anywhere else.
window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null,
  deepLinking: true, presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"}});
</script>
</body>
</html>
""")


@router.get(ASSETS + "/{name}")
def asset(name: str):
    if name not in FILES:
        raise NotFound(f"no {name} here; /docs loads only {', '.join(FILES)}")
    return FileResponse(str(STATIC / name), media_type=FILES[name],
                        headers={"Cache-Control": "public, max-age=86400"})
