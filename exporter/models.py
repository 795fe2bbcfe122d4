"""Configuration models shared by every provider.

Each provider module subclasses :class:`AccountConfig` and :class:`DialogConfig` with the fields
its API needs; everything common (naming, timeouts, caching, secrets from files) lives here so
no provider repeats it. Models are frozen so that a reload can tell an unchanged account (equal
model) from a changed one and keep its sessions and caches.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|y|w|d|h|m|s)")
_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}


def parse_duration(value: Any) -> float:
    """Accept Prometheus duration strings (``500ms``, ``1m30s``) or plain seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError("must not be negative")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError("not a duration (use e.g. 500ms, 30s, 5m, or seconds)") from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise ValueError("expected a duration such as 30s or a number of seconds")
    if not math.isfinite(seconds):
        # YAML's .inf and .nan, or "1e999": a timeout that never fires or a TTL that never
        # expires would only show at run time, as every fetch failing or a stale value forever.
        raise ValueError("must be a finite duration")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
# A label value: no whitespace or control characters (the YAML front-end says so in words).
NAME_PATTERN = r"^[^\s\x00-\x1f]+$"
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]


class FrozenModel(BaseModel):
    """Strict, immutable model: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DialogConfig(FrozenModel):
    """One labelled series set (``dialog`` label) inside an account."""

    name: Name


class GroupingDialog(DialogConfig):
    """A dialog that can also be split by a dimension of the provider's answer (``group_by``).

    A provider subclasses it with the dimensions it serves (``group_dimensions``) and refuses
    ``group_by`` on the dialogs that cannot take it, so a config asks for nothing the provider
    would have to make up. ``max_groups`` bounds the group series per dialog (the rest are
    summed into ``other``).
    """

    group_dimensions: ClassVar[tuple[str, ...]] = ()

    group_by: str | None = None
    max_groups: int = Field(default=20, ge=1, le=1000)

    @field_validator("group_by")
    @classmethod
    def _check_group_by(cls, value: str | None) -> str | None:
        if value is not None and value not in cls.group_dimensions:
            served = ", ".join(cls.group_dimensions) or "none"
            raise ValueError(f"{value!r} is not a dimension this provider splits by ({served})")
        return value

    @model_validator(mode="after")
    def _max_groups_needs_group_by(self) -> Self:
        if self.group_by is None and "max_groups" in self.model_fields_set:
            raise ValueError("max_groups applies only to a dialog with group_by")
        return self


def secret_text(secret: SecretStr | None) -> str:
    """The plain value of an optional secret ('' when unset), for building request headers."""
    return secret.get_secret_value() if secret is not None else ""


class AccountConfig(FrozenModel):
    """Fields every account has, whatever its provider.

    ``secret_fields`` names the fields that hold credentials: each also accepts ``<field>_file``
    (read by the config loader, trailing newline stripped), and their values are redacted from
    logs and debug output.
    """

    secret_fields: ClassVar[tuple[str, ...]] = ()
    default_base_url: ClassVar[str] = ""

    name: Name
    provider: str
    base_url: str | None = None
    timeout: Duration = Field(default=5.0, gt=0)
    cache_ttl: Duration = 0.0
    max_concurrency: int = Field(default=8, ge=1, le=1000)
    daily_request_budget: int | None = Field(default=None, ge=1)
    dialogs: tuple[DialogConfig, ...] = Field(min_length=1)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as https://api.example.com")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials; use the account's secret fields")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be scheme and host only (the API path is appended)")
        return value.rstrip("/")

    def api_root(self) -> str:
        """Scheme and host to call: the configured ``base_url`` or the provider's default."""
        return self.base_url or self.default_base_url.format(**self.model_dump())

    def secret_values(self) -> list[str]:
        """Every configured credential, so log and debug output can redact them."""
        values = []
        for field in self.secret_fields:
            secret = getattr(self, field, None)
            if isinstance(secret, SecretStr) and secret.get_secret_value():
                values.append(secret.get_secret_value())
        return values
