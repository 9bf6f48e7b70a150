"""The links' tokens are made by syndicate's own signer and read by itsdangerous: the same bytes either way."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer

from syndicate import tokens
from syndicate.errors import InvalidInput

SECRETS = ["bench-fanout", "clé secrète ü 🔑", "x" * 200]
ids = st.integers(min_value=0, max_value=10**20)
# Long runs of one digit: the JSON compresses, and itsdangerous then sends it zlib-compressed ("." first).
repetitive = st.builds(lambda digit, n: int(str(digit) * n), st.integers(1, 9), st.integers(1, 30))


def reference(secret_key: str, purpose: str, value) -> str:
    return URLSafeSerializer(secret_key, salt=f"syndicate.{purpose}").dumps(value)


@pytest.mark.parametrize("secret_key", SECRETS)
@given(subscriber_id=ids | repetitive, newsletter_id=ids | repetitive)
def test_an_unsubscribe_token_is_what_itsdangerous_makes_and_reads_back(secret_key, subscriber_id, newsletter_id):
    token = tokens.unsubscribe_token(secret_key, subscriber_id, newsletter_id)
    assert token == reference(secret_key, "unsubscribe", [subscriber_id, newsletter_id])
    assert tokens.read_unsubscribe_token(secret_key, token) == (subscriber_id, newsletter_id)


@pytest.mark.parametrize("secret_key", SECRETS)
@given(subscriber_id=ids | repetitive)
def test_preference_and_confirmation_tokens_are_what_itsdangerous_makes(secret_key, subscriber_id):
    preferences = tokens.preferences_token(secret_key, subscriber_id)
    confirm = tokens.confirm_token(secret_key, subscriber_id)
    assert preferences == reference(secret_key, "preferences", subscriber_id)
    assert confirm == reference(secret_key, "confirm", subscriber_id)
    assert tokens.read_preferences_token(secret_key, preferences) == subscriber_id
    assert tokens.read_confirm_token(secret_key, confirm) == subscriber_id


def test_both_ways_of_compressing_are_covered_by_the_examples():
    compressed = tokens.unsubscribe_token("k", 11111111111111111111, 1)
    plain = tokens.unsubscribe_token("k", 123456, 7)
    assert compressed.startswith(".") and not plain.startswith(".")


def test_a_token_of_one_purpose_does_not_pass_for_another():
    token = tokens.preferences_token("k", 42)
    with pytest.raises(InvalidInput, match="confirmation link is damaged"):
        tokens.read_confirm_token("k", token)
    with pytest.raises(InvalidInput, match="preferences link is damaged"):
        tokens.read_preferences_token("another key", token)


@pytest.mark.parametrize("value", [True, 1.0, "1", None])
def test_only_whole_numbers_are_signed(value):
    with pytest.raises(TypeError, match="whole numbers only"):
        tokens.preferences_token("k", value)


# ── return paths ─────────────────────────────────────────────────────────────


def test_a_return_path_names_its_mail_and_only_our_key_makes_one():
    address = tokens.return_path("key", "d", 1234, "bounces.news.example")
    local, _, domain = address.partition("@")
    assert domain == "bounces.news.example" and len(local) <= 64  # RFC 5321's limit for a local part
    assert re.fullmatch(r"bounces\+d1234-[a-z2-7]{16}", local)
    assert tokens.read_return_path("key", address) == ("d", 1234)
    assert tokens.read_return_path("key", f"<{address.upper()}>") == ("d", 1234)  # an MTA that folds case
    assert tokens.read_return_path("another key", address) is None
    assert tokens.read_return_path("key", address.replace("d1234", "d1235")) is None
    assert tokens.read_return_path("key", address.replace("bounces+d", "bounces+x")) is None
    assert tokens.read_return_path("key", "bounces@bounces.news.example") is None
    confirmation = tokens.return_path("key", "c", 7, "news.example")
    assert tokens.read_return_path("key", confirmation) == ("c", 7)
    assert confirmation.split("-")[1] != address.split("-")[1]
