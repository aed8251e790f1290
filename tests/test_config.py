"""Start-up settings: production refuses to start without its secrets; the emulator only
ever stands in when no real credentials are set."""

import pytest

from app import create_app
from app.emulator import EMULATOR_API_BASE
from config import ProductionConfig, TestingConfig

REAL_CREDENTIALS = {
    "WECHAT_APP_ID": "wx1234567890abcdef",
    "WECHAT_APP_SECRET": "0123456789abcdef0123456789abcdef",
    "WECHAT_TOKEN": "realToken123",
}


@pytest.fixture
def production_settings(redis_url: str) -> dict:
    return {
        "SECRET_KEY": "a-long-random-production-key",
        "REDIS_URL": redis_url,
        "PUBLIC_BASE_URL": "https://login.example.com",
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
    ],
)
def test_production_refuses_to_start_without_a_required_setting(production_settings, name):
    with pytest.raises(RuntimeError, match=name):
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
    with pytest.raises(RuntimeError, match="WECHAT_TOKEN"):
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
