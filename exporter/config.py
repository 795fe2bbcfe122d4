"""Loading the YAML config file into validated account models.

Why not ``yaml.safe_load`` and done: users need ``file:line`` in every error, so the file is
walked as a node tree that remembers where each value came from; ``${VAR}`` references are
expanded during that walk so a missing variable is reported with its place too. Validation
errors from pydantic are then mapped back to those lines, and are formatted from their
location and message only: pydantic's own text would echo the offending input, and that input
may be a credential.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from exporter.models import AccountConfig
from exporter.registry import PROVIDERS

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP_LEVEL_KEYS = frozenset({"accounts"})

PathKey = tuple[str | int, ...]


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds one ``file:line: path: problem`` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ExporterConfig:
    """A validated config: accounts in file order, each with a unique name."""

    accounts: tuple[AccountConfig, ...]
    source: str

    def account(self, name: str) -> AccountConfig | None:
        """The account called ``name``, if configured."""
        return next((a for a in self.accounts if a.name == name), None)


def _dotted(path: PathKey) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


class _Walker:
    """Turns a YAML node tree into plain data, recording each value's line and expanding env."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.lines: dict[PathKey, int] = {}
        self.problems: list[str] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def where(self, path: PathKey) -> str:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return f"{self.source}:{self.lines[path[:end]]}"
        return self.source

    def problem(self, path: PathKey, text: str) -> None:
        self.problems.append(f"{self.where(path)}: {_dotted(path)}: {text}")

    def walk(self, node: yaml.Node, path: PathKey) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self._constructor.construct_object(key_node)
                if not isinstance(key, str):
                    self.problem(path, f"key {key!r} is not a string")
                    continue
                if key in result:
                    self.lines[(*path, key)] = key_node.start_mark.line + 1
                    self.problem((*path, key), "duplicate key")
                    continue
                result[key] = self.walk(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, index)) for index, item in enumerate(node.value)]
        value = self._constructor.construct_object(node)
        if isinstance(value, str) and "${" in value:
            return self._expand(value, path)
        return value

    def _expand(self, value: str, path: PathKey) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.environ:
                self.problem(path, f"environment variable {name} is not set")
                return ""
            return self.environ[name]

        return _ENV_REF.sub(replace, value)


def _loc_to_path(loc: tuple[int | str, ...], data: Any) -> PathKey:
    """Map a pydantic error location onto the data, dropping parts that are not in it."""
    path: list[str | int] = []
    current = data
    for part in loc:
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and part < len(current)
        if in_dict or in_list:
            current = current[part]
            path.append(part)
        elif (
            isinstance(current, dict)
            and isinstance(part, str)
            and not part.startswith(("function-", "tagged-union"))
        ):
            path.append(part)  # a missing or unknown field: name it even though it is absent
            break
    return tuple(path)


def _pydantic_message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "too_short":
        return "must list at least one entry"
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


def _validate_account(
    walker: _Walker, item: Any, index: int, base_dir: Path
) -> AccountConfig | None:
    path: PathKey = ("accounts", index)
    if not isinstance(item, dict):
        walker.problem(path, "each account must be a mapping")
        return None
    provider_name = item.get("provider")
    provider = PROVIDERS.get(provider_name) if isinstance(provider_name, str) else None
    if provider is None:
        known = ", ".join(sorted(PROVIDERS))
        detail = "is missing" if provider_name is None else f"{provider_name!r} is not known"
        walker.problem((*path, "provider"), f"provider {detail} (known: {known})")
        return None
    item = _read_secret_files(walker, item, path, provider.account_model.secret_fields, base_dir)
    try:
        account: AccountConfig = provider.account_model.model_validate(item)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        deeper = {error["loc"][:-1] for error in errors if len(error["loc"]) > 1}
        for error in errors:
            if error["type"] == "too_short" and any(
                loc[: len(error["loc"])] == error["loc"] for loc in deeper
            ):
                continue  # pydantic also calls a list short when one of its items failed
            walker.problem((*path, *_loc_to_path(error["loc"], item)), _pydantic_message(error))
        return None
    return account


def _read_secret_files(
    walker: _Walker,
    item: dict[str, Any],
    path: PathKey,
    secret_fields: tuple[str, ...],
    base_dir: Path,
) -> dict[str, Any]:
    """Replace each ``<secret>_file`` by the file's content (relative to the config file)."""
    item = dict(item)
    for field in secret_fields:
        file_key = f"{field}_file"
        if file_key not in item:
            continue
        raw_path = item.pop(file_key)
        where = (*path, file_key)
        walker.lines.setdefault(where, walker.lines.get(path, 0))
        if field in item:
            walker.problem(where, f"set either {field} or {file_key}, not both")
            continue
        if not isinstance(raw_path, str) or not raw_path:
            walker.problem(where, "must be a file path")
            continue
        secret_path = Path(raw_path) if Path(raw_path).is_absolute() else base_dir / raw_path
        try:
            item[field] = secret_path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            walker.problem(where, f"cannot read {secret_path}: {exc.strerror}")
            item[field] = ""  # keep validating the rest of the account
    return item


def parse_config(
    text: str, source: str, environ: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> ExporterConfig:
    """Validate config text; raise :class:`ConfigError` listing every problem found."""
    walker = _Walker(source, os.environ if environ is None else environ)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}{line}: not valid YAML: {problem}"]) from None
    data = walker.walk(root, ()) if root is not None else None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the file must be a mapping with an 'accounts' list"])
    for key in data.keys() - _TOP_LEVEL_KEYS:
        walker.problem((key,), "unknown field")
    raw_accounts = data.get("accounts")
    if not isinstance(raw_accounts, list) or not raw_accounts:
        walker.problem(("accounts",), "must be a non-empty list of accounts")
        raw_accounts = []
    accounts: list[AccountConfig] = []
    names: dict[str, int] = {}
    for index, item in enumerate(raw_accounts):
        account = _validate_account(walker, item, index, base_dir or Path(source).parent)
        if account is None:
            continue
        if account.name in names:
            walker.problem(
                ("accounts", index, "name"),
                f"account name {account.name!r} is already used by accounts[{names[account.name]}]",
            )
        names.setdefault(account.name, index)
        accounts.append(account)
    if walker.problems:
        raise ConfigError(walker.problems)
    return ExporterConfig(accounts=tuple(accounts), source=source)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> ExporterConfig:
    """Read and validate the config file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror}"]) from None
    return parse_config(text, str(path), environ)
MAX_NODES = 100_000
