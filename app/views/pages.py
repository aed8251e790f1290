"""The login page, and the site's icon."""

from flask import Blueprint, current_app, redirect, render_template, url_for
from werkzeug.wrappers import Response

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    """The page that shows the QR code, waits, and shows who is signed in."""
    return render_template("index.html", emulator="emulator" in current_app.blueprints)


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Send browsers that ask for the conventional icon (on a page that names none, such as a
    JSON answer opened in a tab) to ``static/favicon.svg``, which every page names."""
    return redirect(url_for("static", filename="favicon.svg"), 301)
