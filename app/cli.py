"""``flask wechat ...``: the setup checker and a scan simulator for headless development."""

import sys
from typing import NoReturn

import click
import requests
from flask import Flask, current_app
from flask.cli import AppGroup

from config import SettingsError

from .login.service import TAKEN_REPLY, UNKNOWN_REPLY
from .setup_check import Finding, Verdict, refused_settings, run_checks
from .wechat.delivery import push, reply_content, scan_event
from .wechat.errors import WeChatError

wechat = AppGroup("wechat", help="Check the WeChat setup, or simulate WeChat.")

#: How each verdict is printed.
LABELS = {Verdict.OK: "[ ok ]", Verdict.WARNING: "[warn]", Verdict.FAILED: "[FAIL]"}


@wechat.command("check")
def check() -> None:
    """Check settings, Redis, credentials, QR creation and the public callback URL.

    Exits 1 when a check failed, 0 when only warnings (or nothing) remain.
    """
    _report(run_checks(current_app))


def _report(findings: list[Finding]) -> NoReturn:
    """Print a verdict line per finding, its fix, and the counts; exit 1 if one failed."""
    for finding in findings:
        click.echo(f"{LABELS[finding.verdict]} {finding.item}: {finding.detail}")
        if finding.fix:
            click.echo(f"       fix: {finding.fix}")
    counts = {verdict: sum(f.verdict is verdict for f in findings) for verdict in Verdict}
    click.echo(
        f"\n{counts[Verdict.OK]} ok, {counts[Verdict.WARNING]} warning(s), "
        f"{counts[Verdict.FAILED]} failed"
    )
    sys.exit(1 if counts[Verdict.FAILED] else 0)


@wechat.command("simulate-scan")
@click.argument("scene")
@click.option(
    "--new-follower",
    is_flag=True,
    help="Send subscribe with EventKey qrscene_<SCENE> (default: SCAN, an existing follower).",
)
@click.option("--openid", default="oSimulatedScan00000000000001", show_default=True)
@click.option(
    "--url",
    help="The server's base URL (default: PUBLIC_BASE_URL, else http://127.0.0.1:5000).",
)
def simulate_scan(scene: str, new_follower: bool, openid: str, url: str | None) -> None:
    """Post WeChat's signed scan event for SCENE to a running server's callback.

    The event is real-format XML, signed with this app's WECHAT_TOKEN and encrypted as
    WECHAT_ENCRYPT_MODE says when an EncodingAESKey is set. Prints the reply the scanner would
    see; exits 1 unless the callback answered 200 and a browser was waiting on SCENE.
    """
    base = (url or current_app.config["PUBLIC_BASE_URL"] or "http://127.0.0.1:5000").rstrip("/")
    crypto = current_app.extensions["wechat_crypto"]
    message = scan_event(
        current_app.config.get("EMULATOR_ACCOUNT_ID", "gh_simulated"),
        openid,
        scene,
        new_follower=new_follower,
    )
    mode = current_app.config["WECHAT_ENCRYPT_MODE"] if crypto else "plaintext"
    try:
        response = push(
            base + "/wechat/callback", message, current_app.config["WECHAT_TOKEN"], crypto, mode
        )
    except requests.RequestException as exc:
        raise click.ClickException(f"{base} could not be reached: {type(exc).__name__}") from None
    event = f"{message['Event']} {message['EventKey']}"
    click.echo(f"{event} as {openid} ({mode}): HTTP {response.status_code}")
    if response.status_code == 403:
        raise click.ClickException(
            "the callback refused the signature: this WECHAT_TOKEN differs from the server's, "
            "or the two clocks are more than WECHAT_CALLBACK_MAX_AGE_SECONDS apart"
        )
    if response.status_code != 200:
        sys.exit(1)
    try:
        content = reply_content(response.content, crypto)
    except WeChatError as exc:
        raise click.ClickException(f"the reply is not one WeChat accepts: {exc}") from None
    click.echo(content if content is not None else "(acknowledged with success, no reply)")
    if content in (UNKNOWN_REPLY, TAKEN_REPLY):
        raise click.ClickException(
            f"no browser is waiting on scene {scene}: it is unknown, expired, or signed in "
            "by another scanner"
        )


def refuse_to_start(error: SettingsError) -> NoReturn:
    """Stop a ``flask`` command whose app refused its settings: ``error: ...; fix: ...`` on one
    line, exit status 1.

    ``flask wechat check`` reports it as its verdict instead, ``[FAIL] settings`` with the fix,
    and exits 1 too. flask builds the app before it resolves the command (the command may be
    the app's), so only the command line tells which it is.

    Args:
        error: what ``create_app()`` refused.
    """
    if sys.argv[-2:] == ["wechat", "check"]:
        _report([refused_settings(error)])
    click.echo(f"error: {error}", err=True)
    sys.exit(1)


def init_app(app: Flask) -> None:
    """Register ``flask wechat``."""
    app.cli.add_command(wechat)
