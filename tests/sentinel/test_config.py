"""Sentinel settings: the URL form, the env-var form, and precise errors (no servers)."""

from __future__ import annotations

import pytest

from multipair.config import Settings
from multipair.exceptions import ConfigurationError
from multipair.hardening import SECRET_ENV
from multipair.jobs.config import JobSettings
from multipair.redis_conn import SentinelURL, parse_sentinel_url, sentinel_url, url_for_logs


def test_a_sentinel_url_names_the_sentinels_the_master_the_db_and_both_credentials() -> None:
    url = (
        "redis+sentinel://svc:da%40ta@10.0.0.1:26379,s2.example.com,[::1]:5000/mymaster/3"
        "?sentinel_username=watcher&sentinel_password=se%26nt"
    )
    assert SentinelURL(
        sentinels=(("10.0.0.1", 26379), ("s2.example.com", 26379), ("::1", 5000)),
        master_name="mymaster",
        db=3,
        username="svc",
        password="da@ta",
        sentinel_username="watcher",
        sentinel_password="se&nt",
    ) == parse_sentinel_url(url)
    assert parse_sentinel_url("rediss+sentinel://h:1/m").ssl


def test_sentinel_url_and_parse_are_inverse() -> None:
    parts = SentinelURL(
        sentinels=(("a", 1), ("::1", 2)),
        master_name="m.x",
        db=2,
        username="u",
        password="p:/@?&",
        sentinel_password="s p",
    )
    url = sentinel_url(
        parts.sentinels,
        parts.master_name,
        username=parts.username,
        password=parts.password,
        sentinel_password=parts.sentinel_password,
        db=parts.db,
    )
    assert parts == parse_sentinel_url(url)


def test_the_env_var_form_becomes_the_one_url_everything_downstream_sees() -> None:
    settings = Settings.from_env(
        {
            "MULTIPAIR_REDIS_SENTINELS": "127.0.0.1:26379, 127.0.0.1:26380",
            "MULTIPAIR_REDIS_MASTER_NAME": "mymaster",
            "MULTIPAIR_REDIS_PASSWORD": "data-pw",
            "MULTIPAIR_REDIS_SENTINEL_PASSWORD": "sentinel-pw",
        }
    )
    assert settings.redis_url is not None
    parsed = parse_sentinel_url(settings.redis_url)
    assert (
        (("127.0.0.1", 26379), ("127.0.0.1", 26380)),
        "mymaster",
        None,
        "data-pw",
        "sentinel-pw",
    ) == (
        parsed.sentinels,
        parsed.master_name,
        parsed.username,
        parsed.password,
        parsed.sentinel_password,
    )


def test_the_sentinel_password_variable_joins_a_url_given_as_such() -> None:
    settings = Settings.from_env(
        {
            "MULTIPAIR_REDIS_URL": "redis+sentinel://:d@h1:1,h2:2/m",
            "MULTIPAIR_REDIS_SENTINEL_PASSWORD": "s",
            "MULTIPAIR_REDIS_SENTINEL_USERNAME": "su",
        }
    )
    assert settings.redis_url is not None
    parsed = parse_sentinel_url(settings.redis_url)
    assert ("d", "su", "s") == (parsed.password, parsed.sentinel_username, parsed.sentinel_password)


def test_an_override_url_wins_over_the_sentinel_variables() -> None:
    settings = Settings.from_env(
        {"MULTIPAIR_REDIS_SENTINELS": "h:1", "MULTIPAIR_REDIS_MASTER_NAME": "m"},
        redis_url="redis://127.0.0.1:6379/0",
    )
    assert "redis://127.0.0.1:6379/0" == settings.redis_url


def test_passwords_of_both_levels_are_masked_in_logs_and_repr() -> None:
    settings = Settings.from_env(
        {
            "MULTIPAIR_REDIS_SENTINELS": "h:1",
            "MULTIPAIR_REDIS_MASTER_NAME": "m",
            "MULTIPAIR_REDIS_USERNAME": "svc",
            "MULTIPAIR_REDIS_PASSWORD": "data-secret",
            "MULTIPAIR_REDIS_SENTINEL_PASSWORD": "sentinel-secret",
        }
    )
    shown = settings.redis_url_for_logs()
    assert "redis+sentinel://svc:***@h:1/m/0?sentinel_password=***" == shown
    for text in (repr(settings), repr(parse_sentinel_url(settings.redis_url or ""))):
        assert "secret" not in text
    assert "redis+sentinel://h:1/m?sentinel_username=u&sentinel_password=***" == url_for_logs(
        "redis+sentinel://h:1/m?sentinel_username=u&sentinel_password=x"
    )


def test_the_new_secret_variables_stay_out_of_child_environments() -> None:
    assert {"MULTIPAIR_REDIS_PASSWORD", "MULTIPAIR_REDIS_SENTINEL_PASSWORD"} <= set(SECRET_ENV)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"MULTIPAIR_REDIS_URL": "redis://h:1/0", "MULTIPAIR_REDIS_SENTINELS": "h:26379"},
            "both MULTIPAIR_REDIS_URL and MULTIPAIR_REDIS_SENTINELS are set; keep one",
        ),
        (
            {"MULTIPAIR_REDIS_SENTINELS": "h:26379"},
            "MULTIPAIR_REDIS_SENTINELS is set but MULTIPAIR_REDIS_MASTER_NAME is empty",
        ),
        (
            {"MULTIPAIR_REDIS_SENTINELS": "h:26379", "MULTIPAIR_REDIS_MASTER_NAME": "  "},
            "MULTIPAIR_REDIS_SENTINELS is set but MULTIPAIR_REDIS_MASTER_NAME is empty",
        ),
        (
            {"MULTIPAIR_REDIS_SENTINELS": "h:port", "MULTIPAIR_REDIS_MASTER_NAME": "m"},
            "MULTIPAIR_REDIS_SENTINELS: bad Sentinel address 'h:port': the port must be 1 to 65535",
        ),
        (
            {"MULTIPAIR_REDIS_SENTINELS": "h:1,,h:2", "MULTIPAIR_REDIS_MASTER_NAME": "m"},
            "MULTIPAIR_REDIS_SENTINELS: an empty Sentinel address in 'h:1,,h:2'",
        ),
        (
            {"MULTIPAIR_REDIS_SENTINELS": ":26379", "MULTIPAIR_REDIS_MASTER_NAME": "m"},
            "MULTIPAIR_REDIS_SENTINELS: bad Sentinel address ':26379'",
        ),
        (
            {"MULTIPAIR_REDIS_SENTINELS": "h:1,h:1", "MULTIPAIR_REDIS_MASTER_NAME": "m"},
            "MULTIPAIR_REDIS_SENTINELS: Sentinel 'h:1' is listed twice",
        ),
        (
            {"MULTIPAIR_REDIS_SENTINELS": "h:1", "MULTIPAIR_REDIS_MASTER_NAME": "a b"},
            "MULTIPAIR_REDIS_MASTER_NAME: bad Sentinel master name 'a b'",
        ),
        (
            {"MULTIPAIR_REDIS_MASTER_NAME": "m"},
            "MULTIPAIR_REDIS_MASTER_NAME is set without MULTIPAIR_REDIS_SENTINELS",
        ),
        (
            {"MULTIPAIR_REDIS_URL": "redis://h:1/0", "MULTIPAIR_REDIS_PASSWORD": "x"},
            "MULTIPAIR_REDIS_USERNAME/MULTIPAIR_REDIS_PASSWORD go with MULTIPAIR_REDIS_SENTINELS",
        ),
        (
            {"MULTIPAIR_REDIS_URL": "redis://h:1/0", "MULTIPAIR_REDIS_SENTINEL_PASSWORD": "x"},
            "MULTIPAIR_REDIS_SENTINEL_PASSWORD/USERNAME are set but the Redis URL is not",
        ),
        (
            {
                "MULTIPAIR_REDIS_URL": "redis+sentinel://h:1/m?sentinel_password=a",
                "MULTIPAIR_REDIS_SENTINEL_PASSWORD": "b",
            },
            "the Sentinel credentials are both in MULTIPAIR_REDIS_SENTINEL_* and in the",
        ),
        (
            {"MULTIPAIR_REDIS_URL": "redis+sentinel://h:1"},
            "MULTIPAIR_REDIS_URL: a Sentinel URL names no master",
        ),
        (
            {"MULTIPAIR_REDIS_URL": "redis+sentinel:///m"},
            "MULTIPAIR_REDIS_URL: a Sentinel URL names no Sentinel",
        ),
        (
            {"MULTIPAIR_REDIS_URL": "redis+sentinel://h:1/m/x"},
            "MULTIPAIR_REDIS_URL: bad database 'x' in a Sentinel URL",
        ),
        (
            {"MULTIPAIR_REDIS_URL": "redis+sentinel://h:1/m?password=x"},
            "MULTIPAIR_REDIS_URL: unknown option 'password' in a Sentinel URL",
        ),
        (
            {"MULTIPAIR_REDIS_URL": "sentinel://h:1/m"},
            "MULTIPAIR_REDIS_URL must start with redis://, rediss://, unix://, redis+sentinel://",
        ),
    ],
)
def test_bad_sentinel_settings_say_precisely_what_is_wrong(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(message), str(caught.value)


def test_an_error_never_quotes_a_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"MULTIPAIR_REDIS_URL": "redis+sentinel://:hunter2@h:1/m?x=hunter2"})
    assert "hunter2" not in str(caught.value)


def test_rq_may_keep_its_queues_behind_sentinels_too() -> None:
    url = "redis+sentinel://h:1/rq"
    assert url == JobSettings.from_env({"MULTIPAIR_RQ_REDIS_URL": url}).rq_redis_url
    with pytest.raises(ConfigurationError, match=r"^MULTIPAIR_RQ_REDIS_URL: a Sentinel URL"):
        JobSettings.from_env({"MULTIPAIR_RQ_REDIS_URL": "redis+sentinel://h:1/"})
