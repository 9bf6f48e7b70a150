"""API tokens: the secrets a CMS pushes stories with, stored only as a hash."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from syndicate import api_tokens
from syndicate.api_tokens import NotAuthenticated
from syndicate.db import transaction
from syndicate.errors import InvalidInput, NotFound
from syndicate.models import ApiToken

# ── helpers ──────────────────────────────────────────────────────────────────


def new_token(svc, name: str = "wordpress") -> str:
    with transaction(svc.Session) as session:
        return api_tokens.create_token(session, name)[1]


@pytest.fixture
def token(svc) -> str:
    return new_token(svc)


# ── tokens ───────────────────────────────────────────────────────────────────


def test_it_stores_only_the_hash_of_a_new_token(svc):
    with transaction(svc.Session) as session:
        row, secret = api_tokens.create_token(session, "wordpress")

    assert secret.startswith("syn_") and len(secret) > 40
    with transaction(svc.Session) as session:
        saved = session.get(ApiToken, row.id)
        assert saved.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in {saved.name, saved.token_hash}
        assert saved.last_used_at is None and saved.revoked_at is None


def test_it_gives_each_token_a_different_secret(svc):
    assert new_token(svc, "one") != new_token(svc, "two")


def test_it_authenticates_a_token_and_records_when_it_was_used(svc, token):
    when = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    with transaction(svc.Session) as session:
        assert api_tokens.authenticate(session, token, now=when).name == "wordpress"
    with transaction(svc.Session) as session:
        assert session.scalar(select(ApiToken.last_used_at)) == when


@pytest.mark.parametrize("given", [None, "", "syn_not-a-token-we-made", "a-token-of-another-service"])
def test_it_refuses_a_missing_or_unknown_token_and_says_how_to_get_one(svc, token, given):
    with transaction(svc.Session) as session, pytest.raises(NotAuthenticated, match="syndicate token create"):
        api_tokens.authenticate(session, given)


def test_it_refuses_a_revoked_token(svc, token):
    with transaction(svc.Session) as session:
        api_tokens.revoke(session, "wordpress")
    with transaction(svc.Session) as session, pytest.raises(NotAuthenticated, match="revoked"):
        api_tokens.authenticate(session, token)


def test_it_refuses_a_second_token_with_a_name_in_use_or_revoked(svc, token):
    with transaction(svc.Session) as session, pytest.raises(InvalidInput, match="wordpress-2"):
        api_tokens.create_token(session, "wordpress")
    with transaction(svc.Session) as session:
        api_tokens.revoke(session, "wordpress")
    with transaction(svc.Session) as session, pytest.raises(InvalidInput, match="revoked"):
        api_tokens.create_token(session, "wordpress")


def test_it_says_which_tokens_exist_when_revoking_an_unknown_one(svc):
    with transaction(svc.Session) as session, pytest.raises(NotFound, match="syndicate token list"):
        api_tokens.revoke(session, "nobody")
