"""Loading the YAML config file into validated account models.

The file is read, walked and bounded by :mod:`exporter.configuration.yamlfile` (every problem as
``file:line: path: problem``, never echoing a value); this module adds what only the config
has: ``${VAR}`` references, expanded during the walk so that a missing variable is reported
with its place too, secrets read from files, and the providers' account models. The file is
read again on every reload, so whatever goes wrong is a refusal, never a traceback or a hang.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from exporter.configuration.yamlfile import (
    MAX_NODES,
    PathKey,
    YamlFileError,
    YamlWalker,
    did_you_mean,
    parse,
    read_small_file,
    read_text,
)
from exporter.fetching.registry import PLUGIN_FAILURES, PROVIDERS
from exporter.models import AccountConfig

__all__ = ["MAX_NODES", "ConfigError", "ExporterConfig", "load_config", "parse_config"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Any ``${`` that does not start a plain reference: shell forms such as ${VAR:-default} or
# ${ VAR } would otherwise be used literally, e.g. as a credential.
_BAD_ENV_REF = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*\})")
# Control characters (C0, DEL, C1): in a credential they break or forge the HTTP header it is
# sent in; a newline is the usual one, left by an editor or ``echo`` in a secret file.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TOP_LEVEL_KEYS = frozenset({"accounts"})
# 10,000 accounts take under 2 MB; a bigger file is refused before it is read into memory.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_SECRET_BYTES = 64 * 1024


class ConfigError(YamlFileError):
    """A config that cannot be used; ``problems`` holds one ``file:line: path: problem`` each."""


@dataclass(frozen=True)
class ExporterConfig:
    """A validated config: accounts in file order, each with a unique name."""

    accounts: tuple[AccountConfig, ...]
    source: str

    def account(self, name: str) -> AccountConfig | None:
        """The account called ``name``, if configured."""
        return next((a for a in self.accounts if a.name == name), None)


class _EnvWalker(YamlWalker):
    """The config's walk: ``${NAME}`` in a string is replaced by that environment variable."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        super().__init__(source)
        self.environ = environ

    def text(self, value: str, path: PathKey) -> str:
        if "${" not in value:
            return value
        if _BAD_ENV_REF.search(value):
            # The text is not quoted: a ${VAR:-default} may carry a credential as its default.
            self.value_problem(path, "${...} must be a plain ${NAME}, without spaces or defaults")
            return value

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.environ:
                self.value_problem(path, f"environment variable {name} is not set")
                return ""
            return self.environ[name]

        return _ENV_REF.sub(replace, value)


def _duplicate_dialog_names(walker: _EnvWalker, item: dict[str, Any], path: PathKey) -> None:
    """Report each reused dialog name at its own line.

    The one check of this rule: it runs on the raw entries, before the model, so that it can
    name the line of the second use, which a model validator could not.
    """
    dialogs = item.get("dialogs")
    if not isinstance(dialogs, list):
        return
    first: dict[str, int] = {}
    for index, dialog in enumerate(dialogs):
        name = dialog.get("name") if isinstance(dialog, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            walker.problem(
                (*path, "dialogs", index, "name"),
                f"dialog name {name!r} is already used by dialogs[{first[name]}]",
            )
        first.setdefault(name, index)


def _validate_account(
    walker: _EnvWalker, item: Any, index: int, base_dir: Path
) -> AccountConfig | None:
    path: PathKey = ("accounts", index)
    if not isinstance(item, dict):
        if path not in walker.failed:
            walker.problem(path, "each account must be a mapping")
        return None
    provider_name = item.get("provider")
    provider = PROVIDERS.get(provider_name) if isinstance(provider_name, str) else None
    if provider is None:
        if (*path, "provider") in walker.failed:
            return None  # e.g. an unset ${VAR}, already reported
        known = ", ".join(sorted(PROVIDERS))
        detail = (
            "is missing"
            if provider_name is None
            else f"{provider_name!r} is not known{did_you_mean(str(provider_name), PROVIDERS)}"
        )
        broken = [f for f in PLUGIN_FAILURES if f.name == provider_name]
        if broken:
            detail = f"{provider_name!r} is installed but {broken[0].problem}"
        walker.problem((*path, "provider"), f"provider {detail} (known: {known})")
        return None
    item = _read_secret_files(walker, item, path, provider.account_model.secret_fields, base_dir)
    _duplicate_dialog_names(walker, item, path)
    try:
        account: AccountConfig = provider.account_model.model_validate(item)
    except ValidationError as exc:
        walker.report(exc, item, path, provider.account_model)
        return None
    return account


def _read_secret_files(
    walker: _EnvWalker,
    item: dict[str, Any],
    path: PathKey,
    secret_fields: tuple[str, ...],
    base_dir: Path,
) -> dict[str, Any]:
    """Replace each ``<secret>_file`` by the file's content (relative to the config file).

    An empty secret is refused here too, whether given inline, through an empty ``${VAR}`` or
    an empty file: it would only surface later as an authentication failure on every scrape.
    So is one with a control character (a line break inside a file, say), which would fail
    every request or be sent as part of a header.
    """
    item = dict(item)
    for field in secret_fields:
        file_key = f"{field}_file"
        if file_key not in item:
            where = (*path, field)
            secret = item.get(field)
            if where in walker.failed or not isinstance(secret, str):
                continue
            if problem := _secret_problem(secret):
                walker.problem(where, f"must not {problem}")
            continue
        raw_path = item.pop(file_key)
        where = (*path, file_key)
        if field in item:
            walker.problem(where, f"set either {field} or {file_key}, not both")
            continue
        item[field] = ""  # on any problem below: keep validating the rest of the account
        if not isinstance(raw_path, str) or not raw_path:
            if where not in walker.failed:
                walker.problem(where, "must be a file path")
            continue
        secret_path = Path(raw_path) if Path(raw_path).is_absolute() else base_dir / raw_path
        try:
            secret = read_small_file(secret_path, MAX_SECRET_BYTES).decode().rstrip("\r\n")
        except OSError as exc:
            walker.value_problem(where, f"cannot read {secret_path}: {exc.strerror or exc}")
            continue
        except UnicodeDecodeError:
            walker.problem(where, f"{secret_path} is not UTF-8 text")
            continue
        if problem := _secret_problem(secret):
            walker.problem(where, f"{secret_path} must not {problem}")
            continue
        item[field] = secret
    return item


def _secret_problem(secret: str) -> str | None:
    """What is wrong with a credential's text, if anything (never quoting it)."""
    if not secret:
        return "be empty"
    if _CONTROL.search(secret):
        return "contain control characters (such as a line break)"
    return None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a file loads.

    Composing and walking a large file makes hundreds of thousands of small objects, and the
    collector's passes over them were three quarters of the load time at 10,000 accounts
    (3.9 s of CPU instead of 1.4 s). Each pass also holds the interpreter lock throughout, so
    during a reload in a worker thread it stalled the event loop for up to 1.7 s. The objects
    hold no cycles, so pausing frees nothing late; the pause is process-wide, which is why
    reloads run one at a time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_config(
    text: str, source: str, environ: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> ExporterConfig:
    """Validate config text; raise :class:`ConfigError` listing every problem found.

    ``base_dir`` is where relative ``*_file`` paths start (default: ``source``'s folder).
    Nothing else is raised: a failure this loader did not foresee is still a refusal, named
    by its type only, since an exception's text may quote the file's content.
    """
    try:
        with _collector_paused():
            return _parse(text, source, os.environ if environ is None else environ, base_dir)
    except ConfigError:
        raise
    except YamlFileError as exc:  # the front-end's refusals (not YAML, too big, too deep)
        raise ConfigError(exc.problems) from None
    except Exception as exc:  # see the docstring
        raise ConfigError([f"{source}: cannot be loaded: {type(exc).__name__}"]) from None


def _parse(
    text: str, source: str, environ: Mapping[str, str], base_dir: Path | None
) -> ExporterConfig:
    walker = _EnvWalker(source, environ)
    data = parse(text, walker)
    if data is None:
        raise ConfigError([f"{source}: the file is empty; it must hold an 'accounts' list"])
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the file must be a mapping with an 'accounts' list"])
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            walker.unknown_field((key,), _TOP_LEVEL_KEYS)
    raw_accounts = data.get("accounts")
    if not isinstance(raw_accounts, list) or not raw_accounts:
        misspelt = any(did_you_mean(str(key), ["accounts"]) for key in data if key != "accounts")
        if ("accounts",) not in walker.failed and not misspelt:
            walker.problem(("accounts",), "must be a non-empty list of accounts")
        raw_accounts = []
    accounts: list[AccountConfig] = []
    names: dict[str, int] = {}
    secrets_dir = base_dir or Path(source).parent
    for index, item in enumerate(raw_accounts):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name in names:
            # Checked on the raw entries so that it is reported even when either is invalid.
            walker.problem(
                ("accounts", index, "name"),
                f"account name {name!r} is already used by accounts[{names[name]}]",
            )
        if isinstance(name, str):
            names.setdefault(name, index)
        account = _validate_account(walker, item, index, secrets_dir)
        if account is not None:
            accounts.append(account)
    if walker.problems:
        raise ConfigError(walker.sorted_problems())
    return ExporterConfig(accounts=tuple(accounts), source=source)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> ExporterConfig:
    """Read and validate the config file at ``path``."""
    try:
        text = read_text(Path(path), MAX_CONFIG_BYTES, "config file")
    except YamlFileError as exc:
        raise ConfigError(exc.problems) from None
    return parse_config(text, str(path), environ)
