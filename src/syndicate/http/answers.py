"""The answers a JSON API route may give besides its own, as the OpenAPI spec documents them: a script
written against /openapi.json (or generated from it) then knows every status it can meet and the shape of
each, and a fuzzer holds the app to it (tests/web/test_api_fuzz.py).

Every refusal of ours is `{"error": "what is wrong and what to do"}`; a request that doesn't fit the spec
itself (a missing field, a word where a number goes) gets FastAPI's own `{"detail": [...]}`, also 422.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ApiError(BaseModel):
    error: str = Field(description="What is wrong, and what to do about it.")


class ScopeMissing(ApiError):
    scope: str = Field(description="The scope this needs, which the token hasn't.")


class RequestInvalid(BaseModel):
    """FastAPI's answer to a request that doesn't fit the spec, before any code of ours runs."""

    detail: list[dict[str, Any]] = Field(description="Each field that doesn't fit: where (`loc`) and why (`msg`).")


def answer(description: str, model: Any = ApiError) -> dict:
    return {"model": model, "description": description}


UNREADABLE = {400: answer("The body can't be read as what the Content-Type says (JSON that isn't UTF-8, say).")}
UNAUTHENTICATED = {401: answer("No API token, or one that is unknown or revoked: the error says how to get one; "
                               "WWW-Authenticate names the scheme.")}
OUT_OF_SCOPE = {403: answer("The token is good but hasn't the scope this needs; `scope` names it.", ScopeMissing)}
NOT_FOUND = {404: answer("Something the request names (an id, a slug) doesn't exist.")}
INVALID = {422: answer("The request was refused as it is: the error says what to change.",
                       ApiError | RequestInvalid)}
TOO_LARGE = {413: answer("The body is over the size this route takes.")}
UNAVAILABLE = {503: answer("The database can't be reached: nothing was stored. Retry-After says when to try again; "
                           "any other answer means what was sent is stored.")}

# Every route of the desk's API (/api/v1) may answer these.
EDITOR_API = {**UNREADABLE, **UNAUTHENTICATED, **OUT_OF_SCOPE, **NOT_FOUND, **INVALID}
