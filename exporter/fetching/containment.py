"""What the runtime does not take on trust from a provider: a plugin is third-party code.

A provider's fetch runs in the exporter's own event loop and hands back its outcomes through
``record``; its envelope hooks read error bodies inside ``upstream``. Each of these is a way in
for a bug: an exception that is not an ``Exception`` (``SystemExit`` would stop the exporter),
an exception whose message holds the account's token, outcomes for dialogs it was never given
(kept forever, a leak), a reason outside the fixed set, a back-off hint of NaN. The pieces here
hold each at the one place it passes, so every provider, built-in or plugin, gets the same
checks, and the log always names the provider at fault.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.envelope import Envelope, ErrorMessages, RetryHint, non_negative_number
from exporter.logs import printable
from exporter.models import AccountConfig
from exporter.outcome import FetchError, Outcome, Reading, Reason

log = logging.getLogger(__name__)


def log_crash(exc: BaseException, account: AccountConfig, redact: Callable[[str], str]) -> None:
    """Log a provider's fetch that raised, traceback included, with the account's secrets
    redacted: a plugin's exception message may carry the very token it sent."""
    text = "".join(traceback.format_exception(exc))
    log.error(
        "provider fetch raised",
        extra={"provider": account.provider, "account": account.name, "exc": redact(text)},
    )


class KnownDialogs:
    """The dialogs an account's fetch was given: outcomes for any other name are dropped.

    Kept, a provider that records names of its own (ids from the answer, say) would grow the
    runtime's state without bound. The first such name is logged, once per account config.
    """

    def __init__(self, account: AccountConfig) -> None:
        self._account = account
        self._names = frozenset(dialog.name for dialog in account.dialogs)
        self._warned = False

    def admit(self, dialog: object) -> bool:
        """Whether ``dialog`` is one of the account's dialogs (else warn, once, and drop it)."""
        if isinstance(dialog, str) and dialog in self._names:
            return True
        if not self._warned:
            self._warned = True
            log.warning(
                "provider recorded a dialog it was not given; such outcomes are dropped",
                extra={
                    "provider": self._account.provider,
                    "account": self._account.name,
                    "dialog": printable(dialog)[:100],
                },
            )
        return False


def admitted(outcome: object) -> Outcome:
    """``outcome`` as the runtime serves it: a ``Reading``, or a ``FetchError`` with one of
    the fixed reasons and a text detail (a plugin's own reason becomes ``bad_response``)."""
    if isinstance(outcome, Reading):
        return outcome
    if not isinstance(outcome, FetchError):
        return FetchError(
            Reason.BAD_RESPONSE,
            f"the provider recorded a {type(outcome).__name__}, not a Reading or FetchError",
        )
    detail = outcome.detail if isinstance(outcome.detail, str) else printable(outcome.detail)
    if isinstance(outcome.reason, Reason):
        return outcome if detail is outcome.detail else FetchError(outcome.reason, detail)
    try:
        return FetchError(Reason(outcome.reason), detail)
    except (TypeError, ValueError):
        unknown = printable(outcome.reason)[:60]
        return FetchError(Reason.BAD_RESPONSE, f"unknown reason {unknown!r}: {detail}")


def _messages(hook: ErrorMessages) -> ErrorMessages:
    def read(body: Any) -> list[str]:
        try:
            found = hook(body)
        except Exception:  # a broken hook leaves the summary of the body
            return []
        return [m for m in found if isinstance(m, str)] if isinstance(found, list) else []

    return read


def _retry_hint(hook: RetryHint) -> RetryHint:
    def read(body: Any) -> float | None:
        try:
            seconds = hook(body)
        except Exception:  # a broken hook leaves the default back-off
            return None
        return non_negative_number(seconds) if isinstance(seconds, int | float) else None

    return read


@dataclass(frozen=True)
class GuardedEnvelope:
    """A provider's envelope hooks, their junk ignored: a hook that raises, messages that are
    not a list of text, a back-off that is not a finite number >= 0 (NaN would make the reset
    gauge NaN and lose the back-off) count as the hook saying nothing."""

    error_messages: ErrorMessages
    retry_after: RetryHint

    @classmethod
    def of(cls, envelope: Envelope) -> GuardedEnvelope:
        return cls(_messages(envelope.error_messages), _retry_hint(envelope.retry_after))
