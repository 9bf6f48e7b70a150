"""What operators and their scrapers read: /healthz (every outside service, checked side by side) and
/metrics (Prometheus), each with more detail for a token of the scope metrics:read."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from syndicate.db import transaction
from syndicate.http import api_tokens
from syndicate.http.answers import OUT_OF_SCOPE, UNAUTHENTICATED
from syndicate.http.api_tokens import NotAuthenticated
from syndicate.web import health, metrics
from syndicate.web.responses import Svc, bearer_token, unauthorized

router = APIRouter()

@router.get("/healthz", summary="Database, broker and mail server reachable?", responses={
    200: {"description": "All of them answer."}, 503: {"description": "Some don't: the body names them."},
    **UNAUTHENTICATED, **OUT_OF_SCOPE})
def healthz(request: Request, svc: Svc):
    """Database, broker and mail server, checked side by side: 200 when all answer, 503 naming those
    that don't; within a few seconds either way. What each check saw (hosts, ports, errors) comes only
    with a metrics:read token as a Bearer (`syndicate token create NAME --scope metrics:read`); a failure's
    detail is also logged."""
    token, detailed = bearer_token(request), False
    if token is not None:  # the scraper's token, as for /metrics
        try:
            with transaction(svc.Session) as session:
                api_tokens.authenticate(session, token, "metrics:read")
            detailed = True
        except NotAuthenticated as e:
            return unauthorized(e, True)
        except SQLAlchemyError:  # the database is down: no token can be checked; the log has the details
            pass
    healthy, body = request.app.state.health(svc.settings, svc.engine)  # cached a few seconds, per app
    return JSONResponse(body if detailed else health.public(body), status_code=200 if healthy else 503)

@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {}}, "description": "The Prometheus text format."},
    **UNAUTHENTICATED, **OUT_OF_SCOPE})
def prometheus(request: Request, svc: Svc):
    """Prometheus text format; send a token with metrics:read
    (`syndicate token create prometheus --scope metrics:read`) as a Bearer."""
    try:
        with transaction(svc.Session) as session:
            api_tokens.authenticate(session, bearer_token(request), "metrics:read")
            body = metrics.render(session, svc.settings)
    except NotAuthenticated as e:
        return unauthorized(e, bearer_token(request) is not None)
    body += metrics.render_pace(svc.pacer)
    return Response(body, media_type=metrics.CONTENT_TYPE)
