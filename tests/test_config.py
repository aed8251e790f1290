"""Start-up settings: production refuses to start without its secrets; the emulator only
ever stands in when no real credentials are set."""

import os
import subprocess
import sys

import pytest
from joserfc.jwk import RSAKey

from app import create_app
from app.emulator import EMULATOR_API_BASE
from config import ProductionConfig, SettingsError, TestingConfig
from tests.conftest import ROOT, free_port

REAL_CREDENTIALS = {
    "WECHAT_APP_ID": "wx1234567890abcdef",
    "WECHAT_APP_SECRET": "0123456789abcdef0123456789abcdef",
    "WECHAT_TOKEN": "realToken123",
}


@pytest.fixture
def signing_key(tmp_path) -> str:
    """A PEM file holding an RSA private key, as OIDC_SIGNING_KEY names one."""
    path = tmp_path / "oidc.pem"
    path.write_bytes(RSAKey.generate_key(2048).as_pem(private=True))
    return str(path)


@pytest.fixture
def production_settings(redis_url: str, signing_key: str) -> dict:
    return {
        "SECRET_KEY": "a-long-random-production-key",
        "REDIS_URL": redis_url,
        "PUBLIC_BASE_URL": "https://login.example.com",
        "OIDC_SIGNING_KEY": signing_key,
        **REAL_CREDENTIALS,
    }


@pytest.mark.parametrize(
    "name",
    [
        "SECRET_KEY",
        "WECHAT_APP_ID",
        "WECHAT_APP_SECRET",
        "WECHAT_TOKEN",
        "REDIS_URL",
        "PUBLIC_BASE_URL",
        "OIDC_SIGNING_KEY",
    ],
)
def test_production_refuses_to_start_without_a_required_setting(production_settings, name):
    with pytest.raises(SettingsError, match=name):
        create_app(ProductionConfig, {**production_settings, name: ""})


def test_production_starts_with_every_required_setting(production_settings):
    app = create_app(ProductionConfig, production_settings)

    assert "emulator" not in app.blueprints
    assert app.config["WECHAT_API_BASE"] == "https://api.weixin.qq.com"


@pytest.mark.parametrize(
    "token",
    ["ab", "bad-token", "bad token", "token!", "令牌令牌", "a" * 33],
    ids=["two-chars", "dash", "space", "punctuation", "non-ascii", "33-chars"],
)
@pytest.mark.parametrize("config_class", [ProductionConfig, TestingConfig])
def test_malformed_wechat_token_is_refused(production_settings, config_class, token):
    with pytest.raises(SettingsError, match="WECHAT_TOKEN"):
        create_app(config_class, {**production_settings, "WECHAT_TOKEN": token})


@pytest.mark.parametrize("token", ["abc", "a" * 32, "Token2024"])
def test_well_formed_wechat_token_is_accepted(production_settings, token):
    app = create_app(ProductionConfig, {**production_settings, "WECHAT_TOKEN": token})

    assert app.config["WECHAT_TOKEN"] == token


@pytest.mark.parametrize(
    "api_base", ["https://api.weixin.qq.com", EMULATOR_API_BASE, "http://127.0.0.1:9/"]
)
@pytest.mark.parametrize("config_class", [ProductionConfig, TestingConfig])
def test_real_credentials_never_mount_the_emulator(production_settings, config_class, api_base):
    app = create_app(config_class, {**production_settings, "WECHAT_API_BASE": api_base})
    client = app.test_client()

    assert client.get("/_emulator/phone").status_code == 404
    assert client.get("/_emulator/cgi-bin/token").status_code == 404
    assert client.post("/_emulator/api/faults", json={"api": "x", "errcode": 1}).status_code == 404
    index = client.get("/")
    assert index.status_code == 200
    assert b"/_emulator" not in index.data
    assert app.config["WECHAT_APP_ID"] == REAL_CREDENTIALS["WECHAT_APP_ID"]


def test_emulator_mode_mounts_the_emulator(client):
    assert client.get("/_emulator/phone").status_code == 200
    assert "errcode" in client.get("/_emulator/cgi-bin/token").get_json()
    assert b'href="/_emulator/phone"' in client.get("/").data


FORWARDING = {"WECHAT_FORWARD_URL": "http://127.0.0.1:8080/wechat"}


@pytest.mark.parametrize(
    "forward_token",
    ["", REAL_CREDENTIALS["WECHAT_TOKEN"], "ab", "bad-token", "a" * 33],
    ids=["unset", "the-account-token", "two-chars", "dash", "33-chars"],
)
@pytest.mark.parametrize("config_class", [ProductionConfig, TestingConfig])
def test_forwarding_needs_a_token_of_its_own(production_settings, config_class, forward_token):
    settings = {**production_settings, **FORWARDING, "WECHAT_FORWARD_TOKEN": forward_token}

    with pytest.raises(RuntimeError, match="WECHAT_FORWARD_TOKEN"):
        create_app(config_class, settings)


def test_forwarding_starts_with_a_token_of_its_own(production_settings):
    settings = {**production_settings, **FORWARDING, "WECHAT_FORWARD_TOKEN": "upstreamToken1"}

    app = create_app(ProductionConfig, settings)

    assert app.extensions["wechat_forwarder"].url == FORWARDING["WECHAT_FORWARD_URL"]


#: A malformed or missing setting, as a new user sets it, and the variable the refusal names.
REFUSED_SETTINGS = [
    ({"WECHAT_TOKEN": "bad token!"}, "WECHAT_TOKEN"),
    ({"WECHAT_ENCODING_AES_KEY": "tooShort"}, "WECHAT_ENCODING_AES_KEY"),
    ({"WECHAT_ENCODING_AES_KEY": "a" * 43, "WECHAT_ENCRYPT_MODE": "strict"}, "WECHAT_ENCRYPT_MODE"),
    ({"APP_ENV": "production", "SECRET_KEY": ""}, "SECRET_KEY"),
    ({"LOGIN_CONFIRM": "yes"}, "LOGIN_CONFIRM"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"WECHAT_TOKEN_ENDPOINT": "new"}, "WECHAT_TOKEN_ENDPOINT"),
    # Read when config.py is imported, before the app exists.
    ({"LOGIN_QR_EXPIRE_SECONDS": "3min"}, "LOGIN_QR_EXPIRE_SECONDS"),
    ({"WECHAT_HTTP_TIMEOUT": "5s"}, "WECHAT_HTTP_TIMEOUT"),
    ({"METRICS_ALLOWED_NETWORKS": "everyone"}, "METRICS_ALLOWED_NETWORKS"),
    ({"REDIS_SENTINELS": "sentinel.internal"}, "REDIS_SENTINELS"),
]
REFUSED_IDS = [name.lower() for _, name in REFUSED_SETTINGS]


def run_entry_point(command: list[str], settings: dict[str, str], timeout: float = 30):
    """Run ``python -m <command>`` in the project with only ``settings`` for configuration."""
    environment = {
        "PATH": os.environ["PATH"],
        "SECRET_KEY": "a-long-random-key",
        "PYTHONIOENCODING": "utf-8",
        **settings,
    }
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(("settings", "name"), REFUSED_SETTINGS, ids=REFUSED_IDS)
def test_a_refused_setting_stops_flask_with_one_line_naming_it_and_the_fix(settings, name):
    result = run_entry_point(["flask", "--app", "wsgi", "routes"], settings)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [refusal] = result.stderr.strip().splitlines()
    assert refusal.startswith(f"error: {name}")
    assert "; fix: " in refusal


@pytest.mark.parametrize(
    ("settings", "name"),
    [REFUSED_SETTINGS[0], REFUSED_SETTINGS[1], REFUSED_SETTINGS[3], REFUSED_SETTINGS[7]],
    ids=["wechat_token", "wechat_encoding_aes_key", "production", "login_qr_expire_seconds"],
)
def test_the_setup_check_shows_a_refused_setting_as_a_failed_verdict(settings, name):
    result = run_entry_point(["flask", "--app", "wsgi", "wechat", "check"], settings)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    verdict, fix = result.stdout.splitlines()[:2]
    assert verdict.startswith(f"[FAIL] settings: {name}")
    assert fix.startswith("       fix: ")
    assert "1 failed" in result.stdout


def test_gunicorn_refuses_to_start_on_a_refused_setting_with_one_clear_line():
    # One worker: when two fail at once, gunicorn's own halt prints a traceback of its own.
    result = run_entry_point(
        ["gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{free_port()}"]
        + ["--no-control-socket", "wsgi:app"],
        {"WECHAT_TOKEN": "bad token!"},
    )

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert any(line.startswith("error: WECHAT_TOKEN ") for line in result.stderr.splitlines())


@pytest.mark.parametrize(
    "content",
    [None, b"not a key", b"-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"],
    ids=["missing-file", "not-pem", "public-key"],
)
def test_an_unusable_signing_key_is_refused_naming_the_setting(
    production_settings, tmp_path, content
):
    path = tmp_path / "bad.pem"
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(SettingsError, match="OIDC_SIGNING_KEY"):
        create_app(ProductionConfig, {**production_settings, "OIDC_SIGNING_KEY": str(path)})
