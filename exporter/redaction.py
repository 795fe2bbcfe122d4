"""Which credentials one account's text must never show, and removing them from it.

Three kinds, all removed alike from logs, the landing page and ``debug=true`` output:
configured ones (the account's ``secret_fields``), ones the exporter derives from them for the
life of the account (Stream's server JWT, Crisp's ``Basic`` token: neither contains the
configured text, so redacting that alone misses an echo of the header), and ones obtained at
run time (a QuickBlox session token), of which only the newest few are kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

# Shorter strings would redact innocent text (and say which characters a credential has).
MIN_SECRET_LENGTH = 4
# Run-time credentials remembered for redaction: a renewed session token replaces the last
# one, but an answer in flight may still echo the previous few.
RUNTIME_SECRETS_KEPT = 8
REDACTED = "<redacted>"


class Redactor:
    """One account's credentials, and ``redact`` to remove them from text bound for people."""

    def __init__(self, configured: Iterable[str]) -> None:
        self._lasting = [s for s in configured if len(s) >= MIN_SECRET_LENGTH]
        self._obtained: deque[str] = deque(maxlen=RUNTIME_SECRETS_KEPT)
        self._longest_first = self._ordered()

    def derived(self, secret: str) -> None:
        """Redact a credential computed from configured ones for as long as the account lives."""
        if len(secret) >= MIN_SECRET_LENGTH and secret not in self._lasting:
            self._lasting.append(secret)
            self._longest_first = self._ordered()

    def obtained(self, secret: str) -> None:
        """Redact a credential received at run time; the oldest of many is forgotten."""
        if len(secret) >= MIN_SECRET_LENGTH and secret not in self._obtained:
            self._obtained.append(secret)
            self._longest_first = self._ordered()

    def redact(self, text: str) -> str:
        """``text`` with every credential replaced, the longest first: a derived credential may
        contain a configured one, and replacing that first would leave the rest of it."""
        for secret in self._longest_first:
            text = text.replace(secret, REDACTED)
        return text

    def _ordered(self) -> tuple[str, ...]:
        return tuple(sorted((*self._lasting, *self._obtained), key=len, reverse=True))
