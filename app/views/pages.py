"""The login page."""

from flask import Blueprint, current_app, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    """The page that shows the QR code, waits, and shows who is signed in."""
    return render_template("index.html", emulator="emulator" in current_app.blueprints)
