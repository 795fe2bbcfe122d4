"""Log output in logfmt (default) or JSON, one line per event, as Prometheus components do.

Structured fields are passed with ``extra=`` and rendered as ``key=value`` pairs, so a failure
line reads ``level=warn msg="fetch failed" account=acme dialog=backlog reason=auth ...``.

Values carry text from providers' answers, so every character that is not printable is
escaped: a CR, NEL or U+2028 would otherwise start a forged line for whoever reads or parses
the log, and ESC sequences or bidi overrides would rewrite what a terminal shows.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,  # Python's and many tools' name for it
    "error": logging.ERROR,
}
_LEVEL_NAMES = {logging.WARNING: "warn", logging.CRITICAL: "error"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    fields.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


def _escape(char: str) -> str:
    # unicode_escape writes \n, \r, \t, \xNN, \uNNNN or \UNNNNNNNN: readable and reversible.
    return char if char.isprintable() else char.encode("unicode_escape").decode("ascii")


def escape_controls(text: str) -> str:
    """``text`` with every non-printable character (C0 and C1 controls, DEL, line and
    paragraph separators, bidi and other format characters) written as a backslash escape."""
    if text.isprintable():
        return text
    return "".join(map(_escape, text))


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' ="\\'):
        return text
    return '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


class LogfmtFormatter(logging.Formatter):
    """``key=value`` pairs on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JSONFormatter(logging.Formatter):
    """One JSON object per line.

    ``json.dumps`` escapes C0 controls and, being ASCII-only, every non-ASCII character
    (C1 controls, U+2028, bidi overrides); DEL is the one control it leaves as it is.
    """

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, ensure_ascii=True).replace(
            "\x7f", "\\u007f"
        )


def setup_logging(level: str, fmt: str) -> None:
    """Route every logger to stderr in the chosen format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
