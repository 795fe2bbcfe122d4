"""Reading what a provider's error body says: the generic pieces each provider's envelope uses.

Every chat API wraps its errors in an envelope of its own (Crisp ``reason`` and
``data.message``, Matrix ``errcode``, Intercom ``errors[].code``...). A provider states how to
read its envelope (``Provider.error_messages``) and where its rate-limit back-off hint lives
(``Provider.retry_after``), built from the pieces here; ``upstream`` applies whatever it is
given and so names no provider. This module sits below both, so neither imports the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

ErrorMessages = Callable[[Any], list[str]]
"""A decoded error body (any JSON value) to the messages it carries, most telling first."""
RetryHint = Callable[[Any], float | None]
"""A decoded rate-limit answer to the seconds it asks the client to wait, or None."""


def non_negative_number(value: object) -> float | None:
    """A header or JSON value as a finite number >= 0, or None when it is anything else.

    Every rate-limit figure (remaining requests, seconds to wait, a reset time) is such a
    number; "soon", "nan", "inf", "-5" or an integer too large for a float is junk that must
    not reach a gauge or a back-off computation.
    """
    if isinstance(value, str):
        try:
            value = float(value.split(";", 1)[0].strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def scalars(body: Any, *keys: str) -> list[str]:
    """The plain values (not objects or lists) at ``keys`` of a JSON object, as text."""
    if not isinstance(body, dict):
        return []
    return [
        str(body[key]) for key in keys if key in body and not isinstance(body[key], dict | list)
    ]


def entries(value: Any) -> list[str]:
    """Error entries as text: a string, an object's ``code`` and ``message``, or a list of them.

    A flag such as Crisp's and Sendbird's ``"error": true`` says nothing and gives nothing.
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return scalars(value, "code", "message")
    if isinstance(value, list):
        return [text for item in value for text in entries(item)]
    return []


def entries_at(body: Any, key: str) -> list[str]:
    """The error entries (see :func:`entries`) under ``key`` of a JSON object."""
    return entries(body.get(key)) if isinstance(body, dict) else []


def common_error_messages(body: Any) -> list[str]:
    """The shapes most JSON APIs use: ``error`` (text or ``{code, message}``), an ``errors``
    list, and top-level ``code`` and ``message`` (Sendbird's and Stream Chat's envelope).

    The default for a provider that states no envelope of its own.
    """
    return [
        *entries_at(body, "error"),
        *entries_at(body, "errors"),
        *scalars(body, "code", "message"),
    ]


def common_retry_after(body: Any) -> float | None:
    """A top-level ``retryAfter`` in seconds, the back-off hint some JSON APIs put in the body.

    The default for a provider that states no hint of its own; headers (``Retry-After``,
    ``X-RateLimit-*``) are read for every provider and take precedence.
    """
    return non_negative_number(body.get("retryAfter")) if isinstance(body, dict) else None


class Envelope(Protocol):
    """How a provider's error bodies read; every ``Provider`` is one."""

    @property
    def error_messages(self) -> ErrorMessages: ...

    @property
    def retry_after(self) -> RetryHint: ...


@dataclass(frozen=True)
class CommonEnvelope:
    """The envelope of a provider that states none of its own: the common shapes."""

    error_messages: ErrorMessages = common_error_messages
    retry_after: RetryHint = common_retry_after


COMMON_ENVELOPE = CommonEnvelope()
