"""The join token: what it carries, and a clear refusal for one that cannot be used."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from typer.testing import CliRunner

from jobs.connection_errors import is_refused_credential, reason_line
from jobs.join_token import (
    PREFIX,
    JoinToken,
    TokenError,
    check_name,
    db_role_of,
    decode_token,
    encode_token,
    fingerprint,
    redis_user_of,
)
from tools.cli import app

CA = bytes(range(256)) * 2  # decoding checks the CA's sha256, not that it parses


def token(**changes: object) -> JoinToken:
    base = JoinToken(
        name="mac-studio-2", addresses=["192.168.1.10", "fd00::10"], redis_port=6380,
        redis_user="farm-worker-mac-studio-2", redis_password="p@ss:word/+=",
        db_host=None, db_port=5432, db_name="farm", db_user="farm_worker_mac_studio_2",
        db_password="d b@", ca_der=CA, ca_sha256=fingerprint(CA),
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_token_is_one_line_that_decodes_to_what_was_issued() -> None:
    text = encode_token(token())
    assert text.startswith(PREFIX) and text.isprintable() and " " not in text
    assert decode_token(text) == token()
    # A terminal that wrapped or indented the line does not matter.
    assert decode_token("  " + text[:50] + "\n  " + text[50:] + "\n") == token()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("eyJhbGciOi", "not a lorafarm join token"),
        (encode_token(token())[:-30], "damaged or cut short"),
        (PREFIX + "!!!!", "damaged or cut short"),
        (encode_token(token(ca_sha256=fingerprint(b"another CA"))), "altered or cut short"),
        (encode_token(token(name="Mac Studio")), "worker name 'Mac Studio'"),
    ],
)
def test_a_token_that_cannot_be_used_is_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(TokenError) as refused:
        decode_token(text)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_the_urls_pin_the_ca_and_carry_the_credential_escaped() -> None:
    joined = token()
    redis = urlsplit(joined.redis_url("192.168.1.10", "/home/a b/ca.pem"))
    assert redis.scheme == "rediss" and (redis.hostname, redis.port) == ("192.168.1.10", 6380)
    assert unquote(redis.username or "") == "farm-worker-mac-studio-2"
    assert unquote(redis.password or "") == "p@ss:word/+="
    assert parse_qs(redis.query) == {"ssl_cert_reqs": ["required"],
                                     "ssl_ca_certs": ["/home/a b/ca.pem"]}  # fmt: skip
    database = urlsplit(joined.database_url("fd00::10", "/ca.pem"))
    assert database.hostname == "fd00::10" and database.port == 5432  # the address reached
    assert unquote(database.password or "") == "d b@"
    assert parse_qs(database.query) == {"sslmode": ["verify-full"], "sslrootcert": ["/ca.pem"]}
    elsewhere = token(db_host="db.lan").database_url("192.168.1.10", "/ca.pem")
    assert urlsplit(elsewhere).hostname == "db.lan"


def test_names_fit_a_redis_user_and_a_postgres_role() -> None:
    assert redis_user_of("mac-2") == "farm-worker-mac-2"
    assert db_role_of("mac-2") == "farm_worker_mac_2"
    for bad in ("", "Mac", "-mac", "mac_2", "a" * 41, "mac;drop"):
        with pytest.raises(TokenError):
            check_name(bad)


def test_a_refused_credential_says_what_to_do() -> None:
    for reason in ("WRONGPASS invalid username-password pair or user is disabled.",
                   'FATAL:  role "farm_worker_w1" is not permitted to log in',
                   'FATAL:  password authentication failed for user "farm_worker_w1"'):  # fmt: skip
        assert is_refused_credential(Exception(reason))
        assert "farm workers add NAME" in reason_line(reason)
    assert not is_refused_credential(Exception("Connection refused"))


def test_farm_up_lan_on_sqlite_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = CliRunner().invoke(app, ["up", "--lan", "192.168.1.10", "--workers", "0"])
    assert result.exit_code == 2
    assert "other Macs cannot reach" in result.output and "DATABASE_URL" in result.output
    assert not (tmp_path / "home").exists()  # no CA, no Redis, no database


def test_farm_up_lan_on_a_host_name_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATABASE_URL", "postgresql://farm@127.0.0.1:5432/farm")
    result = CliRunner().invoke(app, ["up", "--lan", "coordinator.local", "--workers", "0"])
    assert result.exit_code == 2
    assert "--lan 'coordinator.local' is not an IP address" in result.output
    named = CliRunner().invoke(app, ["up", "--lan", "192.168.1.10", "--join", "Mac Studio"])
    assert named.exit_code == 2 and "worker name 'Mac Studio'" in named.output
    assert not (tmp_path / "home").exists()


def test_farm_worker_join_refuses_a_damaged_token_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "mac"))
    for name in ("REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["worker", "--join", encode_token(token())[:-30]])
    assert result.exit_code == 1 and "damaged or cut short" in result.output
    assert not (tmp_path / "mac").exists()
