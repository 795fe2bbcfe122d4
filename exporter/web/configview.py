"""``GET /config``: the config the exporter runs with, as YAML, every secret replaced.

As blackbox_exporter's ``/config`` and Prometheus' ``/api/v1/status/config``, it shows the
loaded config (defaults filled in, ``${VAR}`` expanded, ``*_file`` secrets read), so an operator
can see what a reload actually took. Every credential is ``<secret>``, as Prometheus writes
it: a value of a secret field (``SecretStr``) is never written, whatever its name or depth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import yaml
from pydantic import SecretStr

from exporter.configuration.loading import ExporterConfig

__all__ = ["SECRET", "redacted_yaml"]

SECRET: Final = "<secret>"


def _plain(value: object) -> object:
    """``value`` as YAML can write it safely: secrets replaced, tuples as lists."""
    if isinstance(value, SecretStr):
        return SECRET
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # e.g. an enum or a path: its text


def redacted_yaml(config: ExporterConfig) -> str:
    """The config as YAML, accounts in file order, keys in model order, unset options left out."""
    accounts = [account.model_dump(exclude_none=True) for account in config.accounts]
    return yaml.safe_dump(
        {"accounts": _plain(accounts)}, sort_keys=False, allow_unicode=True, width=100
    )
