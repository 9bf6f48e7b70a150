"""The network clients on their real libraries, HTTP intercepted: tweepy and Mastodon.py talking to
`responses`, atproto talking to `respx`, and a few misbehaving local sockets for what only a real
connection does (a stall, a line dropped after the request went out, a refused connection)."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qs

import httpx
import pytest
import requests
import responses
import respx
import time_machine
from atproto_client.models.string_formats import TID_RE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from syndicate.errors import AccountProblem, DuplicatePost, TransportError
from syndicate.social import networks
from syndicate.social import teaser as teasers
from syndicate.social.clients.base import PostRequest, Published, Retracted, RetractRequest, record_key, tid
from syndicate.social.clients.bluesky import BlueskyClient, blob_cid
from syndicate.social.clients.dry_run import DryRunClient
from syndicate.social.clients.mastodon import MastodonClient
from syndicate.social.clients.x import XClient
from syndicate.social.linkcard import Card
from syndicate.social.networks import BLUESKY, MASTODON, Network, X
from syndicate.social.teaser import Facet, Teaser

URL = "https://truthusa.example/armenia-conducts-joint-military-exercises/"
CREATED = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

TWEETS = "https://api.twitter.com/2/tweets"
ME = "https://api.twitter.com/2/users/me"
DUPLICATE = {"detail": "You are not allowed to create a Tweet with duplicate content.", "status": 403,
             "title": "Forbidden", "type": "about:blank"}
NO_WRITE = {"title": "Forbidden", "status": 403, "type": "https://api.twitter.com/2/problems/oauth1-permissions",
            "detail": "Your client app is not configured with the appropriate oauth1 app permissions for this "
                      "endpoint."}

INSTANCE = "https://mastodon.social"
STATUSES = f"{INSTANCE}/api/v1/statuses"
STATUS = {"id": "112233", "url": "https://mastodon.social/@newsroom/112233", "content": "<p>…</p>",
          "visibility": "unlisted", "created_at": "2030-01-02T03:04:06.000Z"}

PDS = "https://bsky.social/xrpc"
DID = "did:plc:newsroom7abcdefghijklmno"
HANDLE = "newsroom.bsky.social"

# atproto 0.0.73 hands a blob's bytes to httpx as data=, which httpx deprecates; nothing of ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")

T0 = datetime(2026, 5, 5, 7, 0, 12, tzinfo=UTC)  # a frozen clock for what the clients date


# ── helpers ──────────────────────────────────────────────────────────────────


def teaser(network: Network, text: str = f"Armenia conducts joint exercises with the US\n{URL}",
           facets: tuple[Facet, ...] = (), hashtags: tuple[str, ...] = ()) -> Teaser:
    return Teaser(network=network.name, text=text, url=URL, hashtags=hashtags, length=len(text),
                  limit=network.limit, facets=facets, dropped=())


def post(network: Network = X, card: Card | None = None, post_id: int = 7, **kwargs) -> PostRequest:
    return PostRequest(teaser=teaser(network, **kwargs), card=card, post_id=post_id, created_at=CREATED)


def card(image: bytes | None = b"\x89PNG\r\n\x1a\n" + b"\0" * 100, image_type: str | None = "image/png") -> Card:
    return Card(url=URL, title="Armenia conducts joint military exercises with US",
                description="Yerevan hosts the drills, straining ties with Moscow.",
                image_url="https://truthusa.example/lead.png", card_type="summary_large_image",
                image=image, image_type=image_type)


def x_client(**kwargs) -> XClient:
    return XClient("ck", "cs", "at", "ats", **kwargs)


def mastodon_client(**kwargs) -> MastodonClient:
    return MastodonClient(INSTANCE, "mastodon-token", **kwargs)


def refused(url: str) -> requests.ConnectionError:
    """What requests raises when nobody listens: the request never left."""
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.ConnectionError(MaxRetryError(None, url, reason))


@contextmanager
def misbehaving_server(behaviour: str, stall_for: float = 5.0):
    """A local HTTP 'server' that reads the request, then stalls ("stall") or hangs up ("drop").
    A stall ends by hanging up after `stall_for` seconds, so a client without a timeout fails, not hangs."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop, connections = threading.Event(), []

    def serve():
        while not stop.is_set():
            for connection, since in connections:
                if time.monotonic() - since > stall_for:
                    connection.close()
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connections.append((connection, time.monotonic()))
            connection.settimeout(2)
            try:
                connection.recv(65536)  # the request arrived
            except OSError:
                pass
            if behaviour == "drop":
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection, _ in connections:
            connection.close()
        listener.close()


def jwt(expires: datetime, subject: str = DID) -> str:
    """A token atproto can read the expiry of (it never checks the signature: the PDS does)."""
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'ES256K', 'typ': 'at+jwt'})}.{part({'sub': subject, 'exp': int(expires.timestamp())})}.sig"


def session_json(access_expires: timedelta = timedelta(hours=2), tag: str = "1") -> dict:
    now = datetime.now(UTC)
    return {"did": DID, "handle": HANDLE, "active": True, "accessJwt": jwt(now + access_expires) + tag,
            "refreshJwt": jwt(now + timedelta(days=60)) + "r" + tag}


def session_string(access_expires: timedelta = timedelta(hours=2), pds: str = PDS) -> str:
    s = session_json(access_expires)
    return ":::".join([HANDLE, DID, s["accessJwt"], s["refreshJwt"], pds])


def xrpc_error(status: int, error: str, message: str = "", headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": error, "message": message}, headers=headers)


def created(rkey: str) -> dict:
    return {"uri": f"at://{DID}/app.bsky.feed.post/{rkey}", "cid": "bafyreid" + "a" * 51}


@pytest.fixture
def pds():
    """atproto's httpx, intercepted: every route must be declared; nothing reaches the network."""
    with respx.mock(base_url=PDS, assert_all_called=False) as mock:
        yield mock


def bluesky_client(sessions: list | None = None, **kwargs) -> BlueskyClient:
    on_session = sessions.append if sessions is not None else None
    return BlueskyClient(HANDLE, "app-pass-word", on_session=on_session, **kwargs)


def body(call) -> dict:
    return json.loads(call.request.content)


# ── PostRequest and the record key ───────────────────────────────────────────


def test_the_idempotency_key_and_the_record_key_depend_on_the_ledger_row_alone():
    first, again = post(post_id=1234), post(post_id=1234)

    assert first.key == again.key == "syndicate-post-1234"
    assert first.rkey == again.rkey
    assert post(post_id=1235).rkey != first.rkey


def test_a_tid_is_the_time_in_microseconds_and_a_clock_id():
    key = tid(CREATED, 1234 % 1024)

    assert TID_RE.match(key)  # atproto's own check of the format
    assert decoded(key) == (int(CREATED.timestamp()) * 1_000_000 + CREATED.microsecond, 1234 % 1024)
    assert tid(CREATED.replace(tzinfo=None), 210) == key  # a naive time from the database is UTC
    assert tid(CREATED + timedelta(microseconds=1), 0) > key  # later rows sort later, as TIDs must


def decoded(key: str) -> tuple[int, int]:
    """A TID as (microseconds since the epoch, clock id)."""
    number = 0
    for char in key:
        number = number * 32 + "234567abcdefghijklmnopqrstuvwxyz".index(char)
    return number >> 10, number & 0x3FF


def test_the_record_key_is_the_rows_second_with_the_post_id_in_the_microseconds_and_the_clock_id():
    key = record_key(1_234_567_890, CREATED)

    assert TID_RE.match(key)
    assert decoded(key) == (int(CREATED.replace(microsecond=0).timestamp()) * 1_000_000 + 567_890, 1234 % 1024)
    assert record_key(1_234_567_890, CREATED.replace(tzinfo=None)) == key


@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.datetimes(datetime(2024, 1, 1), datetime(2100, 1, 1)))
def test_two_posts_of_one_moment_never_share_a_record_key(first, second, at):
    """Posts planned in one batch are dated alike: ids apart by 1,024 (the old clock id's period) or by
    anything else less than 1,024,000,000 still get keys of their own."""
    if first % 1_024_000_000 != second % 1_024_000_000:
        assert record_key(first, at) != record_key(second, at)
    assert record_key(first, at) == record_key(first, at) and TID_RE.match(record_key(first, at))


def test_record_keys_sort_as_their_posts_were_made():
    assert record_key(1, CREATED) < record_key(1025, CREATED) < record_key(2, CREATED + timedelta(seconds=1))


# ── X ────────────────────────────────────────────────────────────────────────


def test_x_posts_the_teaser_text_with_oauth1_and_a_timeout():
    request = post(X)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1234", "text": request.teaser.text}})
        published = x_client(timeout=7.5).publish(request)
        assert len(rsps.calls) == 1
        sent = rsps.calls[0].request

    assert published == Published("1234", "https://x.com/i/web/status/1234")
    assert json.loads(sent.body) == {"text": request.teaser.text}  # text only: X draws the card, no media
    authorization = sent.headers["Authorization"]
    authorization = authorization.decode() if isinstance(authorization, bytes) else authorization
    assert authorization.startswith("OAuth ") and 'oauth_token="at"' in authorization
    assert sent.req_kwargs["timeout"] == 7.5  # the adapter's default reached the transport


def test_x_posts_with_the_oauth2_user_token_when_one_is_given():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "99", "text": "…"}})
        x_client(bearer_token="oauth2-user-token").publish(post(X))
        sent = rsps.calls[0].request

    assert sent.headers["Authorization"] == "Bearer oauth2-user-token"


def test_the_timeout_adapter_gives_up_on_a_server_that_never_answers():
    client = x_client(timeout=0.3)

    with misbehaving_server("stall") as url:
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            client.api.session.get(url)  # tweepy's own session, the adapter mounted on it

    assert time.monotonic() - started < 3


def test_x_says_when_a_post_used_up_the_daily_limit():
    reset = int(time.time()) + 20_000
    headers = {"x-user-limit-24hour-remaining": "0", "x-user-limit-24hour-reset": str(reset),
               "x-rate-limit-remaining": "99", "x-rate-limit-reset": str(reset - 19_000)}

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "5", "text": "…"}}, headers=headers)
        published = x_client().publish(post(X))

    assert published.limit_reset == datetime.fromtimestamp(reset, UTC)


def test_x_duplicate_content_is_a_duplicate_post():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=403, json=DUPLICATE)
        with pytest.raises(DuplicatePost) as caught:
            x_client().publish(post(X))

    assert caught.value.permanent and "duplicate" in str(caught.value)


def test_x_without_write_permission_is_an_account_problem_that_says_what_to_set():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=403, json=NO_WRITE)
        with pytest.raises(AccountProblem) as caught:
            x_client().publish(post(X))

    assert caught.value.permanent and caught.value.code == 403
    assert "'Read and write'" in str(caught.value) and "regenerate the access token" in str(caught.value)


def test_x_rejecting_the_credentials_is_an_account_problem():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=401,
                 json={"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"})
        with pytest.raises(AccountProblem) as caught:
            x_client().publish(post(X))

    assert caught.value.code == 401 and "reconnect the account" in str(caught.value)


def test_x_rate_limit_waits_for_the_later_of_the_window_and_the_exhausted_daily_limit():
    now = int(time.time())
    headers = {"x-rate-limit-limit": "100", "x-rate-limit-remaining": "0", "x-rate-limit-reset": str(now + 900),
               "x-user-limit-24hour-limit": "17", "x-user-limit-24hour-remaining": "0",
               "x-user-limit-24hour-reset": str(now + 40_000),
               "x-app-limit-24hour-remaining": "1200", "x-app-limit-24hour-reset": str(now + 80_000)}

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=429, json={"title": "Too Many Requests", "detail": "Too Many Requests"},
                 headers=headers)
        with pytest.raises(TransportError) as caught:
            x_client().publish(post(X))

    error = caught.value
    assert (error.permanent, error.code) == (False, 429)
    assert error.retry_at == datetime.fromtimestamp(now + 40_000, UTC)  # the app's 80,000 has some left


def test_x_server_error_is_retried_and_may_have_posted():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=503, json={"title": "Service Unavailable"})
        with pytest.raises(TransportError) as caught:
            x_client().publish(post(X))

    assert (caught.value.permanent, caught.value.code, caught.value.uncertain) == (False, 503, True)


def test_x_unreachable_is_retried_and_certainly_not_posted():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, body=refused(TWEETS))
        with pytest.raises(TransportError) as caught:
            x_client().publish(post(X))

    assert not caught.value.permanent and not caught.value.uncertain
    assert "cannot reach X" in str(caught.value)


@pytest.mark.parametrize("failure", [
    requests.ReadTimeout("HTTPSConnectionPool(host='api.twitter.com', port=443): Read timed out."),
    requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104, "reset by peer"))),
], ids=["read-timeout", "dropped"])
def test_x_without_an_answer_is_retried_and_may_have_posted(failure):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, body=failure)
        with pytest.raises(TransportError) as caught:
            x_client().publish(post(X))

    assert not caught.value.permanent and caught.value.uncertain


def test_x_verify_reads_the_account_and_reports_the_rules():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, ME, json={"data": {"id": "42", "name": "Newsroom", "username": "newsroom"}})
        said = x_client().verify()
        assert len(rsps.calls) == 1

    assert said == "@newsroom on X (limit 280, URLs 23)"
    assert x_client().rules() == X


def test_x_verify_with_revoked_credentials_says_what_to_do():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, ME, status=401, json={"title": "Unauthorized", "status": 401, "detail": "Unauthorized"})
        with pytest.raises(AccountProblem, match="regenerate the access token"):
            x_client().verify()


# ── Mastodon ─────────────────────────────────────────────────────────────────


def test_mastodon_reads_its_limits_from_the_instance_once():
    v2 = {"domain": "mastodon.social", "configuration": {"statuses": {
        "max_characters": 1000, "max_media_attachments": 4, "characters_reserved_per_url": 30}}}

    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{INSTANCE}/api/v2/instance/", json=v2)
        client = mastodon_client()
        first, again = client.rules(), client.rules()
        assert len(rsps.calls) == 1

    assert first == again == Network("mastodon", 1000, 30)
    assert client.rules_note is None


def test_mastodon_falls_back_to_the_v1_instance_then_to_the_defaults_and_says_so():
    v1 = {"uri": "old.example", "configuration": {"statuses": {"max_characters": 640,
                                                               "characters_reserved_per_url": 23}}}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{INSTANCE}/api/v2/instance/", status=404, json={"error": "Record not found"})
        rsps.add(responses.GET, f"{INSTANCE}/api/v1/instance/", json=v1)
        old = mastodon_client()
        assert old.rules() == Network("mastodon", 640, 23)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{INSTANCE}/api/v2/instance/", status=404, json={"error": "Record not found"})
        rsps.add(responses.GET, f"{INSTANCE}/api/v1/instance/", status=404, json={"error": "Record not found"})
        silent = mastodon_client()
        assert silent.rules() == MASTODON

    assert "/api/v1/instance" in old.rules_note
    assert "assuming 500 characters and 23 per URL" in silent.rules_note


def test_mastodon_posts_unlisted_with_the_idempotency_key_and_sends_the_same_key_on_a_retry():
    request = post(MASTODON)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, STATUSES, json=STATUS)
        client = mastodon_client(language="en", timeout=9.0)
        first = client.publish(request)
        again = client.publish(request)  # the instance answers a known key with the first post
        assert len(rsps.calls) == 2
        sent = [call.request for call in rsps.calls]

    assert first == again == Published("112233", "https://mastodon.social/@newsroom/112233")
    assert sent[0].headers["Idempotency-Key"] == sent[1].headers["Idempotency-Key"] == "syndicate-post-7"
    assert sent[0].headers["Authorization"] == "Bearer mastodon-token"
    form = parse_qs(sent[0].body)
    assert form["status"] == [request.teaser.text]
    assert form["visibility"] == ["unlisted"] and form["language"] == ["en"]
    assert "media_ids[]" not in form  # the instance draws the card from the page
    assert sent[0].req_kwargs["timeout"] == 9.0


def test_mastodon_refusing_the_text_is_permanent_with_the_instance_message():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, STATUSES, status=422,
                 json={"error": "Validation failed: Text character limit of 500 exceeded"})
        with pytest.raises(TransportError) as caught:
            mastodon_client().publish(post(MASTODON))

    assert (caught.value.permanent, caught.value.code) == (True, 422)
    assert not isinstance(caught.value, AccountProblem)
    assert "character limit of 500 exceeded" in str(caught.value)


def test_mastodon_rate_limit_waits_for_the_reset_the_instance_announced():
    reset = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=45)
    headers = {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0",
               "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%M:%S.000Z")}

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, STATUSES, status=429, json={"error": "Too many requests"}, headers=headers)
        with pytest.raises(TransportError) as caught:
            mastodon_client().publish(post(MASTODON))

    assert (caught.value.permanent, caught.value.code) == (False, 429)
    assert abs(caught.value.retry_at - reset) < timedelta(seconds=1)


def test_mastodon_corrects_the_reset_by_the_instance_clock():
    here = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)  # a frozen clock: no tolerance for a loaded machine
    server_now = here + timedelta(minutes=10)  # the instance's clock runs ten minutes ahead
    headers = {"X-RateLimit-Remaining": "0", "Date": format_datetime(server_now, usegmt=True),
               "X-RateLimit-Reset": (server_now + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}

    with responses.RequestsMock() as rsps, time_machine.travel(here, tick=False):
        rsps.add(responses.POST, STATUSES, status=429, json={"error": "Too many requests"}, headers=headers)
        with pytest.raises(TransportError) as caught:
            mastodon_client().publish(post(MASTODON))

    assert abs(caught.value.retry_at - (here + timedelta(minutes=5))) < timedelta(seconds=1)


@pytest.mark.parametrize(("status", "error", "advice"), [
    (401, "The access token is invalid", "create a new one"),
    (403, "This action is outside the authorized scopes", "write:statuses scope"),
    (403, "Your login is currently disabled", "suspended, disabled"),
], ids=["401-revoked", "403-scope", "403-disabled"])
def test_mastodon_refusing_the_account_is_an_account_problem(status, error, advice):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, STATUSES, status=status, json={"error": error})
        with pytest.raises(AccountProblem) as caught:
            mastodon_client().publish(post(MASTODON))

    assert caught.value.code == status
    assert error in str(caught.value) and advice in str(caught.value)


def test_mastodon_server_error_is_retried_and_may_have_posted():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, STATUSES, status=503, body="<html>Service Unavailable</html>")
        with pytest.raises(TransportError) as caught:
            mastodon_client().publish(post(MASTODON))

    assert (caught.value.permanent, caught.value.code, caught.value.uncertain) == (False, 503, True)


@pytest.mark.parametrize(("behaviour", "said"), [("stall", "timed out"), ("drop", "aborted")])
def test_mastodon_with_no_answer_from_a_real_socket_may_have_posted(behaviour, said):
    with misbehaving_server(behaviour) as url:
        client = MastodonClient(url, "mastodon-token", timeout=0.3)
        with pytest.raises(TransportError) as caught:
            client.publish(post(MASTODON))

    assert not caught.value.permanent and caught.value.uncertain
    assert "cannot reach 127.0.0.1" in str(caught.value) and said in str(caught.value)


def test_mastodon_refused_connection_certainly_did_not_post(closed_port):
    client = MastodonClient(f"http://127.0.0.1:{closed_port}", "mastodon-token", timeout=2)

    with pytest.raises(TransportError) as caught:
        client.publish(post(MASTODON))

    assert not caught.value.permanent and not caught.value.uncertain


def test_mastodon_verify_names_the_account_and_the_instance_rules():
    v2 = {"configuration": {"statuses": {"max_characters": 500, "characters_reserved_per_url": 23}}}

    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{INSTANCE}/api/v1/accounts/verify_credentials",
                 json={"id": "1", "username": "newsroom", "acct": "newsroom", "display_name": "Newsroom"})
        rsps.add(responses.GET, f"{INSTANCE}/api/v2/instance/", json=v2)
        said = mastodon_client().verify()
        assert len(rsps.calls) == 2
        assert rsps.calls[0].request.headers["Authorization"] == "Bearer mastodon-token"

    assert said == "@newsroom on mastodon.social (limit 500, URLs 23)"


def test_mastodon_verify_with_a_revoked_token_says_what_to_do():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{INSTANCE}/api/v1/accounts/verify_credentials", status=401,
                 json={"error": "The access token was revoked"})
        with pytest.raises(AccountProblem, match="revoked.*Preferences → Development"):
            mastodon_client().verify()


# ── Bluesky ──────────────────────────────────────────────────────────────────


def test_bluesky_logs_in_once_hands_over_the_session_and_reuses_it(pds):
    login = pds.post("/com.atproto.server.createSession").respond(json=session_json())
    create = pds.post("/com.atproto.repo.createRecord").respond(json=created("x"))
    sessions: list[str] = []

    client = bluesky_client(sessions)
    client.publish(post(BLUESKY, post_id=1))
    client.publish(post(BLUESKY, post_id=2))
    # the next worker's client resumes the stored session: no login at all
    bluesky_client(session=sessions[-1]).publish(post(BLUESKY, post_id=3))

    assert login.call_count == 1 and create.call_count == 3
    assert body(login.calls[0]) == {"identifier": HANDLE, "password": "app-pass-word"}
    assert len(sessions) == 1 and sessions[0].startswith(f"{HANDLE}:::{DID}:::")
    assert create.calls[2].request.headers["Authorization"] == f"Bearer {sessions[0].split(':::')[2]}"


def test_bluesky_posts_the_record_with_facets_at_utf8_byte_offsets_and_a_card_with_its_thumb(pds):
    text = f"Café crème ✨ à Erevan #Armenia\n{URL}"
    encoded = text.encode()
    tag_start = encoded.index(b"#Armenia")
    link_start = encoded.index(URL.encode())
    facets = (Facet("tag", tag_start, tag_start + len(b"#Armenia"), "Armenia"),
              Facet("link", link_start, link_start + len(URL.encode()), URL))
    request = post(BLUESKY, card=card(), text=text, facets=facets, hashtags=("Armenia",))
    blob = {"$type": "blob", "ref": {"$link": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"},
            "mimeType": "image/png", "size": 108}
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    upload = pds.post("/com.atproto.repo.uploadBlob").respond(json={"blob": blob})
    create = pds.post("/com.atproto.repo.createRecord").respond(json=created(request.rkey))

    published = bluesky_client(language="en", clock=lambda: T0).publish(request)

    assert upload.call_count == 1 and create.call_count == 1
    assert upload.calls[0].request.content == card().image
    assert upload.calls[0].request.headers["Content-Type"] == "image/png"
    sent = body(create.calls[0])
    assert (sent["repo"], sent["collection"], sent["rkey"]) == (DID, "app.bsky.feed.post", request.rkey)
    record = sent["record"]
    assert record["$type"] == "app.bsky.feed.post" and record["text"] == text and record["langs"] == ["en"]
    assert datetime.fromisoformat(record["createdAt"]) == T0  # the client's clock, frozen here
    spans = [(f["index"]["byteStart"], f["index"]["byteEnd"], f["features"][0]) for f in record["facets"]]
    assert [encoded[start:end].decode() for start, end, _ in spans] == ["#Armenia", URL]
    assert spans[0][2] == {"$type": "app.bsky.richtext.facet#tag", "tag": "Armenia"}
    assert spans[1][2] == {"$type": "app.bsky.richtext.facet#link", "uri": URL}
    embed = record["embed"]
    assert embed["$type"] == "app.bsky.embed.external"
    assert {k: embed["external"][k] for k in ("uri", "title", "description")} == {
        "uri": URL, "title": card().title, "description": card().description}
    assert embed["external"]["thumb"] == blob
    assert published == Published(f"at://{DID}/app.bsky.feed.post/{request.rkey}",
                                  f"https://bsky.app/profile/{HANDLE}/post/{request.rkey}")


def test_bluesky_sends_a_card_without_the_thumbnail_when_the_image_is_too_large(pds):
    request = post(BLUESKY, card=card(image=b"\xff" * 1_000_001, image_type="image/jpeg"))
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    upload = pds.post("/com.atproto.repo.uploadBlob").respond(json={})
    create = pds.post("/com.atproto.repo.createRecord").respond(json=created(request.rkey))

    bluesky_client().publish(request)

    assert upload.call_count == 0
    external = body(create.calls[0])["record"]["embed"]["external"]
    assert external["uri"] == URL and "thumb" not in external


def test_bluesky_card_opens_the_link_the_teaser_links_to_with_its_utm(pds):
    """The card is read at the story's own address; the embed points where the teaser's link does, UTM and
    all, so a tap on the card is counted as the tap on the link is."""
    tagged = f"{URL}?utm_source=bluesky&utm_medium=social&utm_campaign=syndicate"
    text = "Armenia conducts joint exercises\ntruthusa.example/armenia-conduc…"
    start = text.encode().index(b"truthusa")
    request = PostRequest(teaser=Teaser(network="bluesky", text=text, url=tagged, hashtags=(), length=60,
                                        limit=300, facets=(Facet("link", start, len(text.encode()), tagged),),
                                        dropped=()),
                          card=card(image=None), post_id=7, created_at=CREATED)
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    create = pds.post("/com.atproto.repo.createRecord").respond(json=created(request.rkey))

    bluesky_client().publish(request)

    record = body(create.calls[0])["record"]
    assert record["embed"]["external"]["uri"] == tagged == record["facets"][0]["features"][0]["uri"]
    assert request.card.url == URL  # where the card was read


def test_bluesky_retry_of_a_record_that_got_through_is_published_not_an_error(pds):
    """The first attempt timed out after the PDS took it; the retry's create is refused — as the reference
    PDS does, with a bare 500 (atproto#3718) — and the record is there under our key."""
    request = post(BLUESKY)
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    create = pds.post("/com.atproto.repo.createRecord").mock(side_effect=[
        httpx.ReadTimeout("timed out"),
        xrpc_error(500, "InternalServerError", "Internal Server Error"),
    ])
    look = pds.get("/com.atproto.repo.getRecord").respond(json={
        "uri": f"at://{DID}/app.bsky.feed.post/{request.rkey}", "cid": "bafyreid" + "a" * 51,
        "value": {"$type": "app.bsky.feed.post", "text": request.teaser.text, "createdAt": "2030-01-02T03:04:06Z"}})
    client = bluesky_client()

    with pytest.raises(TransportError) as first:
        client.publish(request)
    published = client.publish(request)

    assert first.value.uncertain and not first.value.permanent
    assert create.call_count == 2 and look.call_count == 1
    assert body(create.calls[0])["rkey"] == body(create.calls[1])["rkey"] == request.rkey
    assert dict(look.calls[0].request.url.params) == {"repo": DID, "collection": "app.bsky.feed.post",
                                                      "rkey": request.rkey}
    assert published == Published(f"at://{DID}/app.bsky.feed.post/{request.rkey}",
                                  f"https://bsky.app/profile/{HANDLE}/post/{request.rkey}")


@pytest.mark.parametrize("refusal", [
    xrpc_error(409, "RecordAlreadyExists", "Record already exists"),
    xrpc_error(400, "InvalidSwap", "Record was at bafyreid…"),
], ids=["409-already-exists", "400-invalid-swap"])
def test_bluesky_any_refusal_with_our_record_in_place_is_published(pds, refusal):
    request = post(BLUESKY)
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    pds.post("/com.atproto.repo.createRecord").mock(return_value=refusal)
    pds.get("/com.atproto.repo.getRecord").respond(json={
        "uri": f"at://{DID}/app.bsky.feed.post/{request.rkey}", "value": {"text": request.teaser.text}})

    assert bluesky_client().publish(request).remote_id == f"at://{DID}/app.bsky.feed.post/{request.rkey}"


def test_bluesky_another_post_under_our_record_key_is_a_failure_that_says_so_not_a_success(pds):
    """Issue 19: a refused create with *a* record under the key was taken for this post — the second of two
    posts that shared a key was marked posted. Now the record is read: another story's post is a failure."""
    link = Facet("link", 0, 10, URL)
    request = post(BLUESKY, facets=(link,))
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    create = pds.post("/com.atproto.repo.createRecord").mock(
        return_value=xrpc_error(500, "InternalServerError", "Internal Server Error"))
    pds.get("/com.atproto.repo.getRecord").respond(json={
        "uri": f"at://{DID}/app.bsky.feed.post/{request.rkey}", "cid": "bafyreid" + "b" * 51,
        "value": {"$type": "app.bsky.feed.post", "text": "Another story\nnews.example/other",
                  "createdAt": "2030-01-02T03:04:06Z",
                  "facets": [{"index": {"byteStart": 14, "byteEnd": 32}, "features": [
                      {"$type": "app.bsky.richtext.facet#link", "uri": "https://news.example/other/"}]}]}})

    with pytest.raises(TransportError) as caught:
        bluesky_client().publish(request)

    assert caught.value.permanent and create.call_count == 1
    assert "another post under this post's record key" in str(caught.value)
    assert f"https://bsky.app/profile/{HANDLE}/post/{request.rkey}" in str(caught.value)


def test_bluesky_our_record_is_known_by_its_link_when_an_editor_changed_the_text_between_attempts(pds):
    request = post(BLUESKY, text=f"The text as the editor wrote it after the timeout\n{URL}",
                   facets=(Facet("link", 51, 51 + len(URL), URL),))
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    pds.post("/com.atproto.repo.createRecord").mock(
        return_value=xrpc_error(409, "RecordAlreadyExists", "Record already exists"))
    pds.get("/com.atproto.repo.getRecord").respond(json={
        "uri": f"at://{DID}/app.bsky.feed.post/{request.rkey}", "cid": "bafyreid" + "a" * 51,
        "value": {"$type": "app.bsky.feed.post", "text": f"The text before\n{URL}", "createdAt": "2030-01-02T03:04:06Z",
                  "facets": [{"index": {"byteStart": 16, "byteEnd": 16 + len(URL)}, "features": [
                      {"$type": "app.bsky.richtext.facet#link", "uri": URL}]}]}})

    assert bluesky_client().publish(request).remote_id == f"at://{DID}/app.bsky.feed.post/{request.rkey}"


def test_bluesky_server_error_without_the_record_is_retried(pds):
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    pds.post("/com.atproto.repo.createRecord").mock(
        return_value=xrpc_error(502, "UpstreamFailure", "Upstream service unreachable"))
    look = pds.get("/com.atproto.repo.getRecord").mock(
        return_value=xrpc_error(400, "RecordNotFound", "Could not locate record"))

    with pytest.raises(TransportError) as caught:
        bluesky_client().publish(post(BLUESKY))

    assert look.call_count == 1
    assert (caught.value.permanent, caught.value.code, caught.value.uncertain) == (False, 502, True)
    assert "UpstreamFailure" in str(caught.value)


def test_bluesky_refreshes_a_token_the_pds_calls_expired_and_tries_once_more(pds):
    sessions: list[str] = []
    saved, fresh = session_string(), session_json(tag="2")
    login = pds.post("/com.atproto.server.createSession").respond(json=session_json())
    refresh = pds.post("/com.atproto.server.refreshSession").respond(json=fresh)
    create = pds.post("/com.atproto.repo.createRecord").mock(side_effect=[
        xrpc_error(400, "ExpiredToken", "Token has expired"), httpx.Response(200, json=created("x"))])

    bluesky_client(sessions, session=saved).publish(post(BLUESKY))

    assert (login.call_count, refresh.call_count, create.call_count) == (0, 1, 2)
    assert refresh.calls[0].request.headers["Authorization"] == f"Bearer {saved.split(':::')[3]}"
    assert [call.request.headers["Authorization"] for call in create.calls] == [
        f"Bearer {saved.split(':::')[2]}", f"Bearer {fresh['accessJwt']}"]
    assert sessions == [f"{HANDLE}:::{DID}:::{fresh['accessJwt']}:::{fresh['refreshJwt']}:::{PDS}"]


def test_bluesky_refreshes_a_saved_session_that_has_expired_before_posting(pds):
    sessions: list[str] = []
    saved, fresh = session_string(access_expires=timedelta(minutes=-5)), session_json(tag="2")
    refresh = pds.post("/com.atproto.server.refreshSession").respond(json=fresh)
    create = pds.post("/com.atproto.repo.createRecord").respond(json=created("x"))

    bluesky_client(sessions, session=saved).publish(post(BLUESKY))

    assert (refresh.call_count, create.call_count) == (1, 1)
    assert refresh.calls[0].request.headers["Authorization"] == f"Bearer {saved.split(':::')[3]}"
    assert create.calls[0].request.headers["Authorization"] == f"Bearer {fresh['accessJwt']}"
    assert [s.split(":::")[2] for s in sessions] == [fresh["accessJwt"]]


def test_bluesky_logs_in_again_when_the_refresh_token_is_spent_too(pds):
    sessions: list[str] = []
    login = pds.post("/com.atproto.server.createSession").respond(json=session_json(tag="3"))
    refresh = pds.post("/com.atproto.server.refreshSession").mock(
        return_value=xrpc_error(400, "ExpiredToken", "Token has expired"))
    create = pds.post("/com.atproto.repo.createRecord").respond(json=created("x"))

    bluesky_client(sessions, session=session_string(access_expires=timedelta(minutes=-5))).publish(post(BLUESKY))

    assert (refresh.call_count, login.call_count, create.call_count) == (1, 1, 1)  # no second refresh
    assert len(sessions) == 1


def test_bluesky_with_no_way_to_renew_the_session_is_an_account_problem(pds):
    login = pds.post("/com.atproto.server.createSession").mock(
        return_value=xrpc_error(401, "AuthenticationRequired", "Invalid identifier or password"))
    refresh = pds.post("/com.atproto.server.refreshSession").mock(
        return_value=xrpc_error(400, "ExpiredToken", "Token has expired"))
    create = pds.post("/com.atproto.repo.createRecord").mock(
        return_value=xrpc_error(401, "AuthenticationRequired", "Token has been revoked"))

    with pytest.raises(AccountProblem) as caught:
        bluesky_client(session=session_string()).publish(post(BLUESKY))

    assert (create.call_count, refresh.call_count, login.call_count) == (1, 1, 1)
    assert caught.value.permanent and caught.value.code == 401
    assert "Invalid identifier or password" in str(caught.value) and "new app password" in str(caught.value)


def test_bluesky_refusing_the_app_password_is_an_account_problem(pds):
    pds.post("/com.atproto.server.createSession").mock(
        return_value=xrpc_error(401, "AuthenticationRequired", "Invalid identifier or password"))
    create = pds.post("/com.atproto.repo.createRecord")

    with pytest.raises(AccountProblem, match="new app password"):
        bluesky_client().publish(post(BLUESKY))
    assert create.call_count == 0


def test_bluesky_taken_down_account_is_an_account_problem(pds):
    pds.post("/com.atproto.server.createSession").mock(
        return_value=xrpc_error(401, "AccountTakedown", "Account has been taken down"))

    with pytest.raises(AccountProblem, match="AccountTakedown.*unavailable|unavailable.*AccountTakedown"):
        bluesky_client().publish(post(BLUESKY))


def test_bluesky_rate_limit_waits_for_the_reset(pds):
    reset = int(time.time()) + 3600
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    pds.post("/com.atproto.repo.createRecord").mock(return_value=xrpc_error(
        429, "RateLimitExceeded", "Rate Limit Exceeded",
        headers={"ratelimit-limit": "5000", "ratelimit-remaining": "0", "ratelimit-reset": str(reset),
                 "ratelimit-policy": "5000;w=3600"}))
    look = pds.get("/com.atproto.repo.getRecord")

    with pytest.raises(TransportError) as caught:
        bluesky_client().publish(post(BLUESKY))

    assert (caught.value.permanent, caught.value.code) == (False, 429)
    assert caught.value.retry_at == datetime.fromtimestamp(reset, UTC)
    assert look.call_count == 0  # a rate limit is no sign the record is there


def test_bluesky_stalled_pds_may_have_posted_and_a_refused_connection_did_not(closed_port):
    with misbehaving_server("stall") as url:
        with pytest.raises(TransportError) as stalled:
            bluesky_client(session=session_string(pds=url), timeout=0.3).publish(post(BLUESKY))
    with pytest.raises(TransportError) as down:
        bluesky_client(session=session_string(pds=f"http://127.0.0.1:{closed_port}"), timeout=2).publish(post(BLUESKY))

    assert not stalled.value.permanent and stalled.value.uncertain
    assert not down.value.permanent and not down.value.uncertain


def test_bluesky_verify_reads_the_own_profile(pds):
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    profile = pds.get("/app.bsky.actor.getProfile").respond(json={"did": DID, "handle": HANDLE})

    said = bluesky_client().verify()

    assert said == "@newsroom.bsky.social on Bluesky via bsky.social (limit 300)"
    assert dict(profile.calls[0].request.url.params) == {"actor": DID}
    assert bluesky_client().rules() == BLUESKY


# ── dry run ──────────────────────────────────────────────────────────────────


@contextmanager
def no_network():
    """requests and httpx both intercepted with no routes: any call would fail the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, \
            respx.mock(assert_all_called=False) as mock:
        yield
        assert len(rsps.calls) == 0 and len(mock.calls) == 0


def written(folder, request) -> dict:
    return json.loads((folder / f"{request.key}.json").read_text(encoding="utf-8"))


def test_dry_run_writes_the_exact_x_request_and_calls_nothing(tmp_path):
    request = post(X)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TWEETS, status=201, json={"data": {"id": "1", "text": "…"}})
        x_client().publish(request)
        live = rsps.calls[0].request

    with no_network():
        client = DryRunClient("x", "newsroom-x", tmp_path, X)
        published = client.publish(request)

    payload = written(tmp_path, request)
    assert payload["request"] == {"method": "POST", "url": live.url, "json": json.loads(live.body)}
    assert (payload["account"], payload["network"], payload["key"]) == ("newsroom-x", "x", request.key)
    assert published == Published(f"dry-run:{request.key}", (tmp_path / f"{request.key}.json").as_uri())
    assert client.dry_run and client.rules() == X and "dry run" in client.verify()


def test_dry_run_writes_the_exact_mastodon_request(tmp_path):
    request = post(MASTODON)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, STATUSES, json=STATUS)
        mastodon_client(visibility="public", language="hy").publish(request)
        live = rsps.calls[0].request

    with no_network():
        DryRunClient("mastodon", "newsroom-m", tmp_path, Network("mastodon", 1000, 23), instance=INSTANCE + "/",
                     visibility="public", language="hy").publish(request)

    sent = written(tmp_path, request)["request"]
    assert (sent["method"], sent["url"]) == ("POST", live.url)
    assert sent["headers"] == {"Idempotency-Key": live.headers["Idempotency-Key"]}  # and never the token
    assert {k: [v] for k, v in sent["form"].items()} == parse_qs(live.body)


def test_dry_run_writes_the_exact_bluesky_records_and_the_blob_it_would_upload(tmp_path, pds):
    text = f"Café ✨ #Armenia\n{URL}"
    start = text.encode().index(b"#")
    request = post(BLUESKY, card=card(), text=text, facets=(Facet("tag", start, start + 8, "Armenia"),))
    thumb = {"$type": "blob", "ref": {"$link": blob_cid(card().image)}, "mimeType": "image/png", "size": 108}
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    pds.post("/com.atproto.repo.uploadBlob").respond(json={"blob": thumb})
    create = pds.post("/com.atproto.repo.createRecord").respond(json=created(request.rkey))
    bluesky_client(language="hy").publish(request)
    live = body(create.calls[0])
    pds.reset()

    with no_network():
        DryRunClient("bluesky", "newsroom-b", tmp_path, BLUESKY, handle=HANDLE, language="hy").publish(request)

    payload = written(tmp_path, request)
    dry = payload["request"]["json"]
    assert payload["request"]["url"] == f"{PDS}/com.atproto.repo.createRecord"
    assert payload["upload"] == {"method": "POST", "url": f"{PDS}/com.atproto.repo.uploadBlob",
                                 "headers": {"Content-Type": "image/png"}, "bytes": 108,
                                 "sha256": hashlib.sha256(card().image).hexdigest()}
    assert dry["repo"] == HANDLE and live["repo"] == DID  # the dry run never logs in to learn the DID
    for sent in (dry, live):
        sent.pop("repo"), sent["record"].pop("createdAt")
    assert dry == live


def test_a_blob_cid_is_the_one_a_pds_would_give():
    assert blob_cid(b"hello") == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


# ── taking a post back ───────────────────────────────────────────────────────


def retraction(remote_id: str, post_id: int = 7) -> RetractRequest:
    return RetractRequest(remote_id=remote_id, post_id=post_id, created_at=CREATED)


def test_x_deletes_the_tweet_by_its_id_with_oauth1_and_a_timeout(tmp_path):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", json={"data": {"deleted": True}})
        retracted = x_client(timeout=7.5).retract(retraction("1234"))
        sent = rsps.calls[0].request

    assert retracted == Retracted(gone_already=False)
    assert sent.headers["Authorization"].startswith("OAuth ") and sent.req_kwargs["timeout"] == 7.5
    with no_network():
        DryRunClient("x", "newsroom-x", tmp_path, X).retract(retraction("1234"))
    assert retracted_file(tmp_path, retraction("1234"))["request"] == {"method": sent.method, "url": sent.url}


@pytest.mark.parametrize("answer", [
    dict(status=404, json={"title": "Not Found Error", "type": "https://api.twitter.com/2/problems/resource-not-found",
                           "detail": "Could not find tweet with id: [1234].", "status": 404}),
    dict(status=200, json={"data": {"deleted": False}, "errors": [
        {"title": "Not Found Error", "type": "https://api.twitter.com/2/problems/resource-not-found"}]}),
], ids=["404", "200-with-not-found"])
def test_x_a_tweet_already_gone_counts_as_deleted(answer):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", **answer)
        assert x_client().retract(retraction("1234")) == Retracted(gone_already=True)


def test_x_deleting_nothing_without_saying_why_is_not_taken_for_a_deletion():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1234", json={"data": {"deleted": False}})
        with pytest.raises(TransportError) as caught:
            x_client().retract(retraction("1234"))

    assert caught.value.permanent and "https://x.com/i/web/status/1234" in str(caught.value)
    assert "delete the post there" in str(caught.value)


def test_x_refusing_or_failing_a_deletion_says_whether_to_try_again():
    reset = int(time.time()) + 600
    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{TWEETS}/1", status=429, json={"title": "Too Many Requests"},
                 headers={"x-rate-limit-reset": str(reset)})
        rsps.add(responses.DELETE, f"{TWEETS}/2", status=503, json={"title": "Service Unavailable"})
        rsps.add(responses.DELETE, f"{TWEETS}/3", status=400,
                 json={"title": "Invalid Request", "detail": "The `id` query parameter value is not valid"})
        with pytest.raises(TransportError) as limited:
            x_client().retract(retraction("1"))
        with pytest.raises(TransportError) as down:
            x_client().retract(retraction("2"))
        with pytest.raises(TransportError) as refused:
            x_client().retract(retraction("3"))

    assert (limited.value.permanent, limited.value.retry_at) == (False, datetime.fromtimestamp(reset, UTC))
    assert (down.value.permanent, down.value.code) == (False, 503)
    assert refused.value.permanent and str(refused.value).startswith("X refused to delete the post: ")


def test_mastodon_deletes_the_status_by_its_id(tmp_path):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{STATUSES}/112233", json=STATUS | {"text": "…"})
        retracted = mastodon_client(timeout=9.0).retract(retraction("112233"))
        sent = rsps.calls[0].request

    assert retracted == Retracted(gone_already=False)
    assert sent.headers["Authorization"] == "Bearer mastodon-token" and sent.req_kwargs["timeout"] == 9.0
    assert not sent.body  # nothing but the address: the media stay for the instance's own clean-up
    with no_network():
        DryRunClient("mastodon", "newsroom-m", tmp_path, MASTODON, instance=INSTANCE + "/").retract(
            retraction("112233"))
    assert retracted_file(tmp_path, retraction("112233"))["request"] == {"method": sent.method, "url": sent.url}


def test_mastodon_a_status_already_gone_counts_as_deleted_and_a_down_instance_is_tried_again():
    with responses.RequestsMock() as rsps:
        rsps.add(responses.DELETE, f"{STATUSES}/1", status=404, json={"error": "Record not found"})
        rsps.add(responses.DELETE, f"{STATUSES}/2", status=502, body="<html>Bad Gateway</html>")
        rsps.add(responses.DELETE, f"{STATUSES}/3", status=403, json={"error": "This action is not allowed"})
        gone = mastodon_client().retract(retraction("1"))
        with pytest.raises(TransportError) as down:
            mastodon_client().retract(retraction("2"))
        with pytest.raises(AccountProblem) as refused:
            mastodon_client().retract(retraction("3"))

    assert gone == Retracted(gone_already=True)
    assert (down.value.permanent, down.value.code) == (False, 502)
    assert refused.value.permanent and "This action is not allowed" in str(refused.value)


def test_bluesky_deletes_the_record_its_uri_names(tmp_path, pds):
    uri = f"at://{DID}/app.bsky.feed.post/3lbq7mnwbhk2x"
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    delete = pds.post("/com.atproto.repo.deleteRecord").respond(json={"commit": {"cid": "bafyreid" + "a" * 51,
                                                                                   "rev": "3lbq7mo2ykc2x"}})
    retracted = bluesky_client().retract(retraction(uri))
    live, address = body(delete.calls[0]), str(delete.calls[0].request.url)
    pds.reset()

    assert retracted == Retracted(gone_already=False)
    assert live == {"repo": DID, "collection": "app.bsky.feed.post", "rkey": "3lbq7mnwbhk2x"}
    with no_network():
        DryRunClient("bluesky", "newsroom-b", tmp_path, BLUESKY, handle=HANDLE).retract(retraction(uri))
    assert retracted_file(tmp_path, retraction(uri))["request"] == {
        "method": "POST", "url": address, "json": live}


@pytest.mark.parametrize("stored", [f"at://{DID}/app.bsky.actor.profile/self", "at://did:plc:someoneelse/"
                                    "app.bsky.feed.post/3lbq7mnwbhk2x", f"at://{DID}/app.bsky.feed.post/../x y"])
def test_bluesky_deletes_only_a_post_of_its_own_repo_whatever_was_stored(pds, stored):
    """A stored URI naming the account's profile, another repo or a malformed key deletes none of them: the
    post's own key in the account's own repo is what goes."""
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    delete = pds.post("/com.atproto.repo.deleteRecord").respond(json={})

    bluesky_client().retract(retraction(stored))

    assert body(delete.calls[0]) == {"repo": DID, "collection": "app.bsky.feed.post", "rkey": post(BLUESKY).rkey}


def test_bluesky_a_record_already_gone_counts_as_deleted(pds):
    """The reference PDS answers an absent record with an empty 200; another may say RecordNotFound."""
    pds.post("/com.atproto.server.createSession").respond(json=session_json())
    pds.post("/com.atproto.repo.deleteRecord").mock(side_effect=[
        httpx.Response(200), xrpc_error(400, "RecordNotFound", "Could not locate record"),
        xrpc_error(400, "InvalidSwap", "Record was at bafyrei…")])
    client = bluesky_client()

    assert client.retract(retraction(f"at://{DID}/app.bsky.feed.post/3lbq7mnwbhk2x")) == Retracted()
    assert client.retract(retraction(f"at://{DID}/app.bsky.feed.post/3lbq7mnwbhk2y")) == Retracted(gone_already=True)
    with pytest.raises(TransportError) as refused:
        client.retract(retraction(f"at://{DID}/app.bsky.feed.post/3lbq7mnwbhk2z"))
    assert refused.value.permanent and "Bluesky refused to delete the post (400 InvalidSwap" in str(refused.value)


def test_a_dry_run_takes_back_a_dry_run_post_by_the_key_it_was_written_under(tmp_path):
    """A post that only went to the outbox has no id on the network: the deletion names the record key (Bluesky)
    or the outbox's own id, and nothing is sent."""
    request = retraction("dry-run:syndicate-post-7")

    with no_network():
        for network, rules in (("x", X), ("bluesky", BLUESKY)):
            DryRunClient(network, f"newsroom-{network}", tmp_path / network, rules, handle=HANDLE).retract(request)

    assert retracted_file(tmp_path / "x", request)["request"] == {
        "method": "DELETE", "url": f"{TWEETS}/dry-run:syndicate-post-7"}
    assert retracted_file(tmp_path / "bluesky", request)["request"]["json"] == {
        "repo": HANDLE, "collection": "app.bsky.feed.post", "rkey": post(BLUESKY).rkey}


def retracted_file(folder, request: RetractRequest) -> dict:
    return json.loads((folder / f"{request.key}.retract.json").read_text(encoding="utf-8"))


# ── Mastodon's 422 "too long" can't happen ───────────────────────────────────


def mastodon_count(text: str, url_cost: int) -> int:
    """Mastodon's StatusLengthValidator, independently: links (as twitter-text extracts them, with a scheme)
    count `url_cost`, the rest its grapheme clusters."""
    import regex
    from twitter_text import extract_urls_with_indices

    links = [u for u in extract_urls_with_indices(text) if u["url"].lower().startswith(("http://", "https://"))]
    rest, at = [], 0
    for link in sorted(links, key=lambda u: u["indices"][0]):
        start, end = link["indices"]
        rest.append(text[at:start])
        at = end
    rest.append(text[at:])
    return sum(len(regex.findall(r"\X", part)) for part in rest) + url_cost * len(links)


def _instance_rejecting_long_statuses(rsps, limit: int, url_cost: int) -> list[int]:
    counts: list[int] = []

    def answer(request):
        text = parse_qs(request.body)["status"][0]
        counts.append(mastodon_count(text, url_cost))
        if counts[-1] > limit:
            return 422, {}, json.dumps({"error": f"Validation failed: Text character limit of {limit} exceeded"})
        return 200, {}, json.dumps(STATUS)

    rsps.add_callback(responses.POST, STATUSES, callback=answer, content_type="application/json")
    return counts


WORDS = st.one_of(st.text(min_size=1, max_size=12),
                  st.sampled_from(["東京で大雨", "مرحبا", "שלום", "👩‍👩‍👧‍👦", "🇺🇦", "e\u0301", "Zoë", "Ødegård"]))
PROSE = st.lists(WORDS, max_size=60).map(" ".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=PROSE, lead=PROSE, categories=st.lists(PROSE, max_size=4),
       limit=st.sampled_from([150, 500]), url_cost=st.sampled_from([23, 30]))
def test_a_composed_teaser_is_never_refused_as_too_long_by_a_mastodon_instance(title, lead, categories, limit,
                                                                               url_cost):
    rules = networks.network("mastodon", limit=limit, url_cost=url_cost)
    made = teasers.compose(rules, title=title, lead=lead, url="https://news.example.com/2030/01/story?id=7",
                           categories=categories)
    with responses.RequestsMock() as rsps:
        counts = _instance_rejecting_long_statuses(rsps, limit, url_cost)
        published = mastodon_client().publish(PostRequest(made, None, 7, CREATED))

    assert published.remote_id == "112233"
    assert counts[0] <= limit
