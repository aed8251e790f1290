"""The WSGI entry point: ``gunicorn wsgi:app`` or ``flask --app wsgi run``.

A missing or malformed setting stops the process here with one line naming it and the fix
(``error: WECHAT_TOKEN must be ...; fix: ...``), not a traceback: under ``flask`` through
``app.cli.refuse_to_start`` (``flask wechat check`` shows it as its ``[FAIL] settings``
verdict); under gunicorn as an ``AppImportError``, which gunicorn prints and then halts on,
instead of booting worker after worker that cannot start.
"""

import click
from gunicorn.errors import AppImportError

from app import create_app
from app.cli import refuse_to_start
from config import SettingsError

try:
    app = create_app()
except SettingsError as error:
    if click.get_current_context(silent=True) is None:  # not the flask command: gunicorn
        raise AppImportError(f"error: {error}") from None
    refuse_to_start(error)
