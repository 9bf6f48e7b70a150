"""The APIs machines call: a CMS pushing a story the moment it publishes (POST /api/articles), the mail
provider reporting bounces and complaints (POST /api/events/bounces), and a dashboard reading what an edition
did (GET /api/editions/{id}/results). Each authenticates with a token of its scope; no cookie, so no CSRF to
guard against."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from syndicate.db import transaction
from syndicate.delivery import results
from syndicate.errors import InvalidInput
from syndicate.http import answers, api_tokens
from syndicate.http.answers import (
    INVALID,
    NOT_FOUND,
    OUT_OF_SCOPE,
    TOO_LARGE,
    UNAUTHENTICATED,
    UNAVAILABLE,
    ApiError,
    answer,
)
from syndicate.http.api_tokens import NotAuthenticated
from syndicate.ingest import push
from syndicate.models import RowId
from syndicate.newsletters import stored
from syndicate.services import Services
from syndicate.subscribers import amazon_sns, bounces
from syndicate.tasks import hand_over, social_tick, tick
from syndicate.web.responses import Svc, api_error, bearer_token, read_capped, unauthorized

router = APIRouter()


# A CMS authenticates with a bearer token it sends itself: no cookie, so no CSRF to guard against.
@router.post("/api/articles", status_code=201, summary="Push a story the moment the CMS publishes it",
          response_model=push.Pushed, responses={
              200: answer("The story was here already: updated, or unchanged.", push.Pushed),
              **UNAUTHENTICATED, **OUT_OF_SCOPE, **TOO_LARGE, **INVALID, **UNAVAILABLE},
          openapi_extra={"requestBody": {
    "required": True, "content": {"application/json": {"schema": push.PushedStory.model_json_schema()}}}})
async def push_article(request: Request, svc: Svc):
    """Store a story the moment the CMS publishes it; the same push again changes nothing."""
    token = bearer_token(request)
    if token is None:
        return unauthorized(NotAuthenticated(
            f"send an API token as `Authorization: Bearer <token>`; {api_tokens.HOW_TO_GET_ONE}"), False)
    body = await read_capped(request, push.MAX_BYTES)
    if body is None:
        return api_error(f"the story is larger than {push.MAX_BYTES // 1_000_000} MB; send its HTML without "
                         "embedded files (data: URLs)", 413)
    return await run_in_threadpool(receive_push, svc, token, body)

def receive_push(svc: Services, token: str, body: bytes) -> JSONResponse:
    try:
        with transaction(svc.Session) as session:
            api_tokens.authenticate(session, token, "articles:push")
    except NotAuthenticated as e:
        return unauthorized(e, True)
    try:
        story = push.parse(body)  # only after the token: strangers learn nothing from our answers
    except InvalidInput as e:
        return api_error(str(e), 422)
    with transaction(svc.Session) as session:
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
@router.post("/api/events/bounces", summary="Bounces and complaints from the mail provider", responses={
    200: {"description": "The events, and what was done with each."}, **UNAUTHENTICATED,
    403: answer("The token hasn't the scope events:bounces (`scope` names it), or an SNS message's signature "
                "doesn't check out.", answers.ScopeMissing | ApiError),
    **TOO_LARGE, **INVALID, 429: answer("This token reported too many events lately: the error says when to "
                                        "send again."),
    502: answer("Amazon SNS couldn't be reached (its signing certificate, or to confirm the subscription): "
                "SNS delivers again later.")},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": bounces.GENERIC_SCHEMA}}}})
async def bounce_events(request: Request, svc: Svc):
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
    return await run_in_threadpool(receive_bounces, svc, token, body, request.headers)

def receive_bounces(svc: Services, token: str, body: bytes, headers) -> JSONResponse:
    try:
        with transaction(svc.Session) as session:
            sender = api_tokens.authenticate(session, token, "events:bounces").id
    except NotAuthenticated as e:
        return bounces_unauthorized(e, True)
    try:
        with transaction(svc.Session) as session:
            result = bounces.handle(session, svc.settings, body, headers, sender=f"token:{sender}")
    except amazon_sns.BadSignature as e:
        return api_error(str(e), 403)
    except amazon_sns.CertificateUnavailable as e:
        return api_error(str(e), 502)  # SNS delivers again later; by then the certificate may come
    except bounces.RateLimited as e:
        return api_error(str(e), 429)
    except bounces.TooManyEvents as e:
        return api_error(str(e), 413)
    except InvalidInput as e:
        return api_error(str(e), 422)
    return JSONResponse(result.as_json(), status_code=502 if result.error else 200)


@router.get("/api/editions/{edition_id}/results", summary="What an edition did: rates and clicks per story",
            responses={200: {"description": "Delivered; unsubscribed, bounced and complained, each with its rate "
                                            "of delivered; clicks in total and per story (`counts_clicks` false: "
                                            "its newsletter didn't count them); messages sent per minute."},
                       **UNAUTHENTICATED, **OUT_OF_SCOPE, **NOT_FOUND, **UNAVAILABLE})
def edition_results(edition_id: RowId, request: Request, svc: Svc):
    """An edition's rates (of the messages delivered) and its clicks per story, counted per link and never
    per reader. Needs a token with the scope stats:read (`syndicate token create NAME --scope stats:read`)."""
    token = bearer_token(request)
    try:
        with transaction(svc.Session) as session:
            api_tokens.authenticate(session, token, "stats:read")
            edition = stored.edition_by_id(session, edition_id, f"no edition {edition_id}; "
                                           "`syndicate edition list` shows them")
            did = results.of_edition(session, edition)
            did |= dict(id=edition.id, newsletter=edition.newsletter.slug, number=edition.number,
                        status=edition.status, started_at=edition.started_at, sent_at=edition.sent_at,
                        sent_per_minute=[dict(minute=m, sent=n) for m, n in did["sent_per_minute"]])
    except NotAuthenticated as e:
        return unauthorized(e, token is not None)
    return JSONResponse(jsonable_encoder(did))
