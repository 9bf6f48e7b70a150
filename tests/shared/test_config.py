"""Settings: defaults that run on one machine, strict parsing that fails loudly and keeps secrets."""

from __future__ import annotations

import stat
from datetime import timedelta

import pytest

from syndicate.config import Settings, SmtpSettings
from syndicate.errors import SettingsError

PASSWORD = "s3cr3t-Pa55"


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def from_env(data_dir, **env) -> Settings:
    """Only what the test gives, plus a private data folder: no test-friendly defaults."""
    environ = {"SYNDICATE_DATA_DIR": str(data_dir)}
    environ.update({f"SYNDICATE_{k.upper()}": str(v) for k, v in env.items()})
    return Settings.from_env(environ)


# ── defaults ─────────────────────────────────────────────────────────────────


def test_it_runs_on_one_machine_with_nothing_set_but_the_data_folder(data_dir):
    settings = from_env(data_dir)

    assert settings.data_dir == data_dir
    assert settings.database_url == f"sqlite:///{data_dir / 'syndicate.db'}"
    assert settings.broker_url == f"sqla+sqlite:///{data_dir / 'broker.db'}"
    assert settings.embedded_broker
    assert settings.outbox == data_dir / "outbox"
    assert settings.smtp is None
    assert settings.x is None
    assert settings.dry_run_social
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.allow_private_feeds is False


def test_it_reads_the_process_environment_when_given_none(data_dir, monkeypatch):
    monkeypatch.setenv("SYNDICATE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("SYNDICATE_SECRET_KEY", "from-the-environment")
    monkeypatch.setenv("SYNDICATE_BATCH_SIZE", "50")

    settings = Settings.from_env()

    assert settings.secret_key == "from-the-environment"
    assert settings.batch_size == 50
    assert settings.data_dir == data_dir


def test_it_treats_a_blank_variable_as_unset(data_dir):
    settings = from_env(data_dir, smtp_url="  ", database_url="", batch_size=" ")

    assert settings.smtp is None
    assert settings.database_url == f"sqlite:///{data_dir / 'syndicate.db'}"
    assert settings.batch_size == Settings.batch_size


def test_it_keeps_a_generated_secret_key_in_the_data_folder_and_reuses_it(data_dir):
    first = from_env(data_dir)
    key_file = data_dir / "secret_key"

    assert len(first.secret_key) >= 32
    assert key_file.read_text().strip() == first.secret_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert from_env(data_dir).secret_key == first.secret_key
    assert [p.name for p in data_dir.iterdir() if p.name.startswith(".secret_key")] == []


def test_it_generates_a_different_secret_key_for_another_data_folder(tmp_path):
    assert from_env(tmp_path / "one").secret_key != from_env(tmp_path / "two").secret_key


def test_it_prefers_a_secret_key_given_in_the_environment(data_dir):
    settings = from_env(data_dir, secret_key="given")

    assert settings.secret_key == "given"
    assert not (data_dir / "secret_key").exists()


def test_it_never_shows_the_secret_key_in_repr(data_dir):
    assert "hush-hush" not in repr(from_env(data_dir, secret_key="hush-hush"))


# ── SMTP URLs ────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "url, expected",
    [
        ("smtp://mail.example.com", SmtpSettings("mail.example.com", 25, "none")),
        ("smtp://127.0.0.1:2525", SmtpSettings("127.0.0.1", 2525, "none")),
        ("smtp+starttls://mail.example.com", SmtpSettings("mail.example.com", 587, "starttls")),
        ("smtps://mail.example.com", SmtpSettings("mail.example.com", 465, "tls")),
        ("smtps://mail.example.com:2465", SmtpSettings("mail.example.com", 2465, "tls")),
    ],
)
def test_it_understands_each_smtp_url_form_with_its_default_port(make_settings, url, expected):
    assert make_settings(smtp_url=url).smtp == expected


def test_it_percent_decodes_the_smtp_user_and_password(make_settings):
    smtp = make_settings(smtp_url="smtp+starttls://news%40example.com:p%40ss%3Aw%2Frd@mail.example.com").smtp

    assert smtp.username == "news@example.com"
    assert smtp.password == "p@ss:w/rd"
    assert smtp.port == 587
    assert smtp.security == "starttls"


def test_it_reads_the_smtp_timeout_from_the_query(make_settings):
    assert make_settings(smtp_url="smtps://u:p@mail.example.com?timeout=7.5").smtp.timeout == 7.5
    assert make_settings(smtp_url="smtps://u:p@mail.example.com").smtp.timeout == 30.0


def test_it_never_shows_the_smtp_password_in_repr(make_settings):
    settings = make_settings(smtp_url=f"smtps://user:{PASSWORD}@mail.example.com")

    assert PASSWORD not in repr(settings.smtp)
    assert PASSWORD not in repr(settings)


# ── bad values fail loudly, naming the variable ──────────────────────────────


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"smtp_url": f"http://user:{PASSWORD}@mail.example.com"}, "SYNDICATE_SMTP_URL"),
        ({"smtp_url": f"smtp://user:{PASSWORD}@mail.example.com:abc"}, "SYNDICATE_SMTP_URL"),
        ({"smtp_url": f"smtp://user:{PASSWORD}@mail.example.com:99999"}, "SYNDICATE_SMTP_URL"),
        ({"smtp_url": f"smtps://user:{PASSWORD}@mail.example.com?timeout=soon"}, "SYNDICATE_SMTP_URL"),
        ({"smtp_url": f"smtp://user:{PASSWORD}@"}, "SYNDICATE_SMTP_URL"),
        ({"database_url": f"mysql://user:{PASSWORD}@db.example.com/news"}, "SYNDICATE_DATABASE_URL"),
        ({"broker_url": "foo"}, "SYNDICATE_BROKER_URL"),
        ({"base_url": "news.example.com"}, "SYNDICATE_BASE_URL"),
        ({"base_url": "ftp://news.example.com"}, "SYNDICATE_BASE_URL"),
        ({"web_host": "evil.example/@news.example.org"}, "SYNDICATE_WEB_HOST"),
        ({"web_port": "70000"}, "SYNDICATE_WEB_PORT"),
        ({"batch_size": "abc"}, "SYNDICATE_BATCH_SIZE"),
        ({"batch_size": "0"}, "SYNDICATE_BATCH_SIZE"),
        ({"batch_size": "-5"}, "SYNDICATE_BATCH_SIZE"),
        ({"poll_interval": "1.5"}, "SYNDICATE_POLL_INTERVAL"),
        ({"allow_private_feeds": "maybe"}, "SYNDICATE_ALLOW_PRIVATE_FEEDS"),
        ({"x_consumer_key": "ck", "x_access_token": "at"}, "SYNDICATE_X_CONSUMER_SECRET"),
        ({"broker_url": "redis://127.0.0.1:6379/0", "retry_max": "3600"}, "SYNDICATE_RETRY_MAX"),
        ({"inbound_imap_url": f"pop3://u:{PASSWORD}@mail.example.com"}, "SYNDICATE_INBOUND_IMAP_URL"),
        ({"inbound_imap_url": f"imap://u:{PASSWORD}@mail.example.com"}, "SYNDICATE_INBOUND_IMAP_URL"),
        ({"inbound_imap_url": "imaps://mail.example.com/INBOX"}, "SYNDICATE_INBOUND_IMAP_URL"),
        ({"inbound_imap_url": f"imaps://u:{PASSWORD}@mail.example.com/INBOX?done=INBOX"}, "SYNDICATE_INBOUND_IMAP_URL"),
        ({"inbound_imap_url": f"imaps://u:{PASSWORD}@mail.example.com/?move=x"}, "SYNDICATE_INBOUND_IMAP_URL"),
        ({"inbound_imap_url": f"imaps://u:{PASSWORD}@mail.example.com:x/"}, "SYNDICATE_INBOUND_IMAP_URL"),
        ({"inbound_mail": "sometimes"}, "SYNDICATE_INBOUND_MAIL"),
        ({"bounce_domain": "bounces@news.example"}, "SYNDICATE_BOUNCE_DOMAIN"),
        ({"bounce_domain": "localhost"}, "SYNDICATE_BOUNCE_DOMAIN"),
        ({"inbound_keep": "0"}, "SYNDICATE_INBOUND_KEEP"),
    ],
    ids=lambda value: value if isinstance(value, str) else "-".join(f"{k}={v}" for k, v in value.items()),
)
def test_it_refuses_a_bad_value_naming_the_variable_without_echoing_the_password(make_settings, env, variable):
    with pytest.raises(SettingsError) as raised:
        make_settings(**env)

    message = str(raised.value)
    assert variable in message
    assert PASSWORD not in message


def test_it_names_every_missing_x_key_when_only_some_are_set(make_settings):
    with pytest.raises(SettingsError) as raised:
        make_settings(x_consumer_key="key-value-1", x_access_token="token-value-2")

    message = str(raised.value)
    assert "SYNDICATE_X_CONSUMER_SECRET" in message
    assert "SYNDICATE_X_ACCESS_TOKEN_SECRET" in message
    assert "key-value-1" not in message and "token-value-2" not in message  # names, never values


def test_it_posts_for_real_only_with_all_four_x_keys(make_settings):
    settings = make_settings(x_consumer_key="ck", x_consumer_secret="cs",
                             x_access_token="at", x_access_token_secret="ats")

    assert settings.x.consumer_key == "ck"
    assert settings.x.access_token_secret == "ats"
    assert not settings.dry_run_social
    assert "ats" not in repr(settings.x)


@pytest.mark.parametrize("url", [f"user:{PASSWORD}@mail.example.com:587", f"smtp:/user:{PASSWORD}@mail.example.com"])
def test_it_never_echoes_the_password_of_an_smtp_url_without_its_scheme(make_settings, url):
    with pytest.raises(SettingsError) as raised:
        make_settings(smtp_url=url)

    assert "SYNDICATE_SMTP_URL" in str(raised.value)
    assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_it_refuses_a_feed_timeout_that_is_not_a_finite_number(make_settings, value):
    with pytest.raises(SettingsError, match="SYNDICATE_FEED_TIMEOUT"):
        make_settings(feed_timeout=value)


# ── databases and brokers ────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgresql://news@db.example.com/news", "postgresql+psycopg://news@db.example.com/news"),
        ("postgres://news@db.example.com/news", "postgresql+psycopg://news@db.example.com/news"),
        ("postgresql+psycopg://news@db.example.com/news", "postgresql+psycopg://news@db.example.com/news"),
        ("sqlite:////srv/news.db", "sqlite:////srv/news.db"),
    ],
)
def test_it_normalises_postgresql_urls_to_the_psycopg_driver(make_settings, given, expected):
    assert make_settings(database_url=given).database_url == expected


@pytest.mark.parametrize("broker", ["redis://127.0.0.1:6379/0", "rediss://cache.example.com:6380/1",
                                    "amqp://guest@127.0.0.1//"])
def test_it_accepts_an_external_broker(make_settings, broker):
    settings = make_settings(broker_url=broker)

    assert settings.broker_url == broker
    assert not settings.embedded_broker


def test_it_accepts_a_retry_cap_below_the_redis_visibility_timeout(make_settings):
    assert make_settings(broker_url="redis://127.0.0.1:6379/0", retry_max="3599").retry_max == 3599


def test_it_strips_a_trailing_slash_from_the_base_url(make_settings):
    assert make_settings(base_url="https://news.example.com/").base_url == "https://news.example.com"


def test_a_claim_timeout_too_short_for_a_slow_server_is_refused_with_the_shortest_allowed(make_settings):
    assert make_settings().leases.claim == timedelta(minutes=15)
    assert make_settings(claim_timeout=60).leases.requeue == timedelta(seconds=20)
    with pytest.raises(SettingsError, match="CLAIM_TIMEOUT=30 is too short.*use 60 or more"):
        make_settings(claim_timeout=30)
    # A number no clock can add (it used to pass here and fail every tick with OverflowError).
    with pytest.raises(SettingsError, match="CLAIM_TIMEOUT=99999999999999999999 is too long.*at most 86400"):
        make_settings(claim_timeout=99999999999999999999)


# ── inbound mail ─────────────────────────────────────────────────────────────


def test_inbound_mail_is_off_until_something_reads_it(make_settings):
    settings = make_settings()
    assert not settings.inbound and settings.inbound_imap is None and settings.bounce_domain is None
    assert make_settings(inbound_mail="1").inbound


def test_it_reads_the_inbound_mailbox_url(make_settings):
    settings = make_settings(inbound_imap_url=f"imaps://bounces%40news.example:{PASSWORD}@imap.example.com"
                                              "/Bounce%20reports?done=Handled&timeout=5",
                             bounce_domain="Bounces.News.Example.")
    imap = settings.inbound_imap
    assert (imap.host, imap.port, imap.security, imap.username, imap.password) == (
        "imap.example.com", 993, "tls", "bounces@news.example", PASSWORD)
    assert (imap.folder, imap.done, imap.timeout) == ("Bounce reports", "Handled", 5.0)
    assert settings.inbound and settings.bounce_domain == "bounces.news.example"
    assert PASSWORD not in repr(settings)
    starttls = make_settings(inbound_imap_url="imap+starttls://u:p@imap.example.com").inbound_imap
    assert (starttls.port, starttls.security, starttls.folder, starttls.done) == (143, "starttls", "INBOX", None)
    assert make_settings(inbound_imap_url="imap://u:p@127.0.0.1:1143").inbound_imap.security == "none"


@pytest.mark.parametrize(("host", "port", "links"), [
    ("127.0.0.1", "18101", "http://127.0.0.1:18101"),
    ("0.0.0.0", "18101", "http://127.0.0.1:18101"),  # every address: links name this machine
    ("::", "8080", "http://127.0.0.1:8080"),
    ("::1", "8080", "http://[::1]:8080"),
    ("news.example.org", "80", "http://news.example.org:80"),
])
def test_without_a_base_url_links_point_where_the_web_app_listens(data_dir, host, port, links):
    settings = from_env(data_dir, web_host=host, web_port=port)
    assert settings.base_url == links and not settings.base_url_given


def test_a_base_url_given_wins_over_where_the_web_app_listens(data_dir):
    settings = from_env(data_dir, web_port="18101", base_url="https://news.example.org/")
    assert settings.base_url == "https://news.example.org" and settings.base_url_given


def test_the_default_postal_address_keeps_its_lines_and_loses_control_characters(data_dir):
    settings = from_env(data_dir, postal_address="Example News\r\n\t1 Main St\x1b[31m\n\nSpringfield ")
    assert settings.postal_address == "Example News\n1 Main St [31m\nSpringfield"
