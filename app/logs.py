"""Log lines: readable text by default, one JSON object per line with ``LOG_FORMAT=json``.

Every login step logs one INFO line naming its scene; no line carries the AppSecret, the Token,
an access_token, a one-time code or a session id.
"""

import logging

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The fields of a JSON line (the message's own ``extra`` fields are added).
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``LOG_FORMAT`` (``json``, else text: ``settings.validate`` refused
    any other value before)."""
    if log_format == "json":
        return JsonFormatter(JSON_FIELDS, rename_fields=JSON_NAMES)
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(log_format: str) -> None:
    """Send INFO and above to stderr in ``log_format``, unless the host (pytest, or a server
    with its own logging configuration) already set up the root logger.

    """
    chosen = formatter(log_format)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(chosen)
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    # urllib3 logs request lines, query included, at DEBUG: that query carries the
    # access_token (and the AppSecret for the classic token). Keep it quiet whatever the root says.
    logging.getLogger("urllib3").setLevel(logging.INFO)
