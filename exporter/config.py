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
from exporter.registry import PLUGIN_FAILURES, PROVIDERS

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP_LEVEL_KEYS = frozenset({"accounts"})
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
# Far more values than any real config holds; a file beyond it is refused, not walked.
MAX_NODES = 100_000
# libyaml's loader when PyYAML has it: composing a large file's node tree is about four times
# faster and lighter (measured at 5,000 dialogs), with the same marks (lines) on every node.
_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_UNREADABLE = object()  # a YAML value that could not be constructed (already reported)

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
        self.failed: set[PathKey] = set()
        self._constructor = yaml.constructor.SafeConstructor()
        self._nodes = 0

    def where(self, path: PathKey) -> str:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return f"{self.source}:{self.lines[path[:end]]}"
        return self.source

    def problem(self, path: PathKey, text: str, line: int | None = None) -> None:
        where = self.where(path) if line is None else f"{self.source}:{line}"
        self.problems.append(f"{where}: {_dotted(path)}: {text}")

    def value_problem(self, path: PathKey, text: str, line: int | None = None) -> None:
        """A value that could not be read; later checks of that value stay silent."""
        self.failed.add(path)
        self.problem(path, text, line)

    def walk(self, node: yaml.Node, path: PathKey) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            # Aliases let a few lines stand for billions of values ("billion laughs"); walking
            # them would hang the exporter at startup or reload instead of refusing the file.
            limit = f"more than {MAX_NODES} values once aliases are expanded"
            raise ConfigError([f"{self.source}: the file holds {limit}"])
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_COLLECTION_TAGS:
            self.value_problem(path, f"unsupported YAML: the tag {node.tag!r} is not allowed")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._walk_mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, index)) for index, item in enumerate(node.value)]
        value = self._construct(node, path)
        if value is _UNREADABLE:
            return None
        if isinstance(value, str) and "${" in value:
            return self._expand(value, path)
        return value

    def _walk_mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        """A mapping; ``<<: *anchor`` merge keys supply defaults that explicit keys override."""
        merged: dict[str, Any] = {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.update(self._merge_sources(value_node, path))
                continue
            key = self._construct(key_node, path)
            if key is _UNREADABLE:
                continue
            if not isinstance(key, str):
                line = key_node.start_mark.line + 1
                self.problem(path, f"key {key!r} is not a string (quote it)", line)
                continue
            if key in result:
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                self.problem((*path, key), "duplicate key")
                continue
            result[key] = self.walk(value_node, (*path, key))
        self.lines[path] = node.start_mark.line + 1  # merge sources recorded their own lines
        return {**merged, **result}

    def _merge_sources(self, node: yaml.Node, path: PathKey) -> dict[str, Any]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in reversed(sources):  # earlier sources win, as in YAML 1.1
            if not isinstance(source, yaml.MappingNode):
                line = source.start_mark.line + 1
                self.problem(path, "<< must merge a mapping or a list of mappings", line)
                continue
            merged.update(self._walk_mapping(source, path))
        return merged

    def _construct(self, node: yaml.Node, path: PathKey) -> Any:
        """A scalar's value; an unknown tag is a problem at its line, never a traceback."""
        try:
            return self._constructor.construct_object(node)
        except yaml.constructor.ConstructorError as exc:
            self.value_problem(path, f"unsupported YAML: {exc.problem}", node.start_mark.line + 1)
            return _UNREADABLE

    def _expand(self, value: str, path: PathKey) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.environ:
                self.value_problem(path, f"environment variable {name} is not set")
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
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    message = message.replace("a valid tuple", "a list")  # YAML has lists, not tuples
    value = error.get("input")
    if isinstance(value, str) and value and repr(value) in message:
        # A validator that quotes the offending value (a bad duration, say) would print a
        # credential pasted into the wrong field; the file:line already shows which value.
        message = message.replace(repr(value), "the value")
    return message


def _duplicate_dialog_names(walker: _Walker, item: dict[str, Any], path: PathKey) -> bool:
    """Report each reused dialog name at its own line (the model only says "used twice")."""
    dialogs = item.get("dialogs")
    if not isinstance(dialogs, list):
        return False
    first: dict[str, int] = {}
    found = False
    for index, dialog in enumerate(dialogs):
        name = dialog.get("name") if isinstance(dialog, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            walker.problem(
                (*path, "dialogs", index, "name"),
                f"dialog name {name!r} is already used by dialogs[{first[name]}]",
            )
            found = True
        first.setdefault(name, index)
    return found


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
        if (*path, "provider") in walker.failed:
            return None  # e.g. an unset ${VAR}, already reported
        known = ", ".join(sorted(PROVIDERS))
        detail = "is missing" if provider_name is None else f"{provider_name!r} is not known"
        broken = [f for f in PLUGIN_FAILURES if f.name == provider_name]
        if broken:
            detail = f"{provider_name!r} is installed but {broken[0].problem}"
        walker.problem((*path, "provider"), f"provider {detail} (known: {known})")
        return None
    item = _read_secret_files(walker, item, path, provider.account_model.secret_fields, base_dir)
    duplicate_dialogs = _duplicate_dialog_names(walker, item, path)
    try:
        account: AccountConfig = provider.account_model.model_validate(item)
    except ValidationError as exc:
        # include_input only so _pydantic_message can cut an echoed value; never printed.
        errors = exc.errors(include_url=False)
        deeper = {error["loc"][:-1] for error in errors if len(error["loc"]) > 1}
        for error in errors:
            if error["type"] == "too_short" and any(
                loc[: len(error["loc"])] == error["loc"] for loc in deeper
            ):
                continue  # pydantic also calls a list short when one of its items failed
            if duplicate_dialogs and error["loc"] == ("dialogs",):
                continue  # reported above, at the line of the second use
            where = (*path, *_loc_to_path(error["loc"], item))
            if where in walker.failed:
                continue  # an unset ${VAR} or unreadable file: one problem, not two
            walker.problem(where, _pydantic_message(error))
        return None
    return account


def _read_secret_files(
    walker: _Walker,
    item: dict[str, Any],
    path: PathKey,
    secret_fields: tuple[str, ...],
    base_dir: Path,
) -> dict[str, Any]:
    """Replace each ``<secret>_file`` by the file's content (relative to the config file).

    An empty secret is refused here too, whether given inline, through an empty ``${VAR}`` or
    an empty file: it would only surface later as an authentication failure on every scrape.
    """
    item = dict(item)
    for field in secret_fields:
        file_key = f"{field}_file"
        if file_key not in item:
            if item.get(field) == "" and (*path, field) not in walker.failed:
                walker.problem((*path, field), "must not be empty")
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
            secret = secret_path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            walker.value_problem(where, f"cannot read {secret_path}: {exc.strerror or exc}")
            continue
        except UnicodeDecodeError:
            walker.problem(where, f"{secret_path} is not UTF-8 text")
            continue
        if not secret:
            walker.problem(where, f"{secret_path} is empty")
            continue
        item[field] = secret
    return item


def _compose(text: str) -> yaml.Node | None:
    """The YAML node tree, fast; a broken file is re-read by the pure-Python parser, whose
    messages are more precise (it names a tab, for one)."""
    try:
        return yaml.compose(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        return yaml.compose(text, Loader=yaml.SafeLoader)


def parse_config(
    text: str, source: str, environ: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> ExporterConfig:
    """Validate config text; raise :class:`ConfigError` listing every problem found.

    ``base_dir`` is where relative ``*_file`` paths start (default: ``source``'s folder).
    """
    walker = _Walker(source, os.environ if environ is None else environ)
    try:
        root = _compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        # PyYAML splits its message: "expected a single document" (context) "but found
        # another document" (problem); the problem alone does not say what is wrong.
        parts = (getattr(exc, "context", None), getattr(exc, "problem", None))
        problem = ", ".join(part for part in parts if part) or str(exc)
        context_mark = getattr(exc, "context_mark", None)
        if context_mark is not None and mark is not None and context_mark.line != mark.line:
            problem += f" (from line {context_mark.line + 1})"  # e.g. where a quote opened
        raise ConfigError([f"{source}{line}: not valid YAML: {problem}"]) from None
    if root is None:
        raise ConfigError([f"{source}: the file is empty; it must hold an 'accounts' list"])
    data = walker.walk(root, ())
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the file must be a mapping with an 'accounts' list"])
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            walker.problem((key,), "unknown field")
    raw_accounts = data.get("accounts")
    if not isinstance(raw_accounts, list) or not raw_accounts:
        if ("accounts",) not in walker.failed:
            walker.problem(("accounts",), "must be a non-empty list of accounts")
        raw_accounts = []
    accounts: list[AccountConfig] = []
    names: dict[str, int] = {}
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
        account = _validate_account(walker, item, index, base_dir or Path(source).parent)
        if account is not None:
            accounts.append(account)
    if walker.problems:
        raise ConfigError(walker.problems)
    return ExporterConfig(accounts=tuple(accounts), source=source)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> ExporterConfig:
    """Read and validate the config file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    return parse_config(text, str(path), environ)
