"""Loading the YAML config file into validated account models.

Why not ``yaml.safe_load`` and done: users need ``file:line`` in every error, so the file is
walked as a node tree that remembers where each value came from; ``${VAR}`` references are
expanded during that walk so a missing variable is reported with its place too. Validation
errors from pydantic are then mapped back to those lines, and are formatted from their
location and message only: pydantic's own text would echo the offending input, and that input
may be a credential.

The file is untrusted input read again on every reload, so the loader is bounded: files are
read only when regular and small, the node tree's size and depth once aliases and merge keys
are expanded are checked before it is walked, and whatever goes wrong is a refusal, never a
traceback or a hang.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from exporter.models import AccountConfig
from exporter.registry import PLUGIN_FAILURES, PROVIDERS

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Any ``${`` that does not start a plain reference: shell forms such as ${VAR:-default} or
# ${ VAR } would otherwise be used literally, e.g. as a credential.
_BAD_ENV_REF = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*\})")
# Control characters (C0, DEL, C1): in a credential they break or forge the HTTP header it is
# sent in; a newline is the usual one, left by an editor or ``echo`` in a secret file.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TOP_LEVEL_KEYS = frozenset({"accounts"})
_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = f"{_YAML_TAG}merge"
_STR_TAG = f"{_YAML_TAG}str"
_PLAIN_COLLECTION_TAGS = frozenset({f"{_YAML_TAG}map", f"{_YAML_TAG}seq"})
# Far more values than any real config holds; a file beyond it is refused, not walked.
MAX_NODES = 100_000
# Collections nested deeper than this are refused (real configs nest at most 6 levels): the
# walk recurses once per level.
MAX_DEPTH = 50
# 10,000 accounts take under 2 MB; a bigger file is refused before it is read into memory.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_SECRET_BYTES = 64 * 1024
# libyaml's loader when PyYAML has it: composing a large file's node tree is about four times
# faster and lighter (measured at 5,000 dialogs), with the same marks (lines) on every node.
_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_UNREADABLE = object()  # a YAML value that could not be constructed (already reported)

PathKey = tuple[str | int, ...]
_PATH_PARTS = 12  # a path in a message shows at most this many parts ...
_PATH_PART_CHARS = 60  # ... of at most this many characters each


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
    """``accounts[0].dialogs``; a huge key or a deep path is shortened, not echoed whole."""
    text = ""
    for part in path[:_PATH_PARTS]:
        if isinstance(part, str) and len(part) > _PATH_PART_CHARS:
            part = part[:_PATH_PART_CHARS] + "..."
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return (text + ("..." if len(path) > _PATH_PARTS else "")) or "(top level)"


class _Walker:
    """Turns a YAML node tree into plain data, recording each value's line and expanding env."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.lines: dict[PathKey, int] = {}
        self.problems: list[str] = []
        self.failed: set[PathKey] = set()
        self._constructor = yaml.constructor.SafeConstructor()

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
        """Plain data for ``node``; only for a tree that passed :func:`_check_shape`."""
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
        """A scalar's value; an unknown tag or a value its tag cannot read (``!!int abc``, an
        integer of 5,000 digits) is a problem at its line, never a traceback.

        PyYAML's constructors fail with ValueError, KeyError, AttributeError... whose text
        quotes the value, so only the tag is named.
        """
        if node.tag == _STR_TAG and isinstance(node, yaml.ScalarNode):  # most values: fast
            return node.value
        try:
            return self._constructor.construct_object(node)
        except Exception as exc:  # any constructor failure is the value's fault
            if isinstance(exc, yaml.constructor.ConstructorError) and exc.problem:
                problem = exc.problem
            else:
                problem = f"the value is not a valid {node.tag.replace(_YAML_TAG, '!!')}"
            self.value_problem(path, f"unsupported YAML: {problem}", node.start_mark.line + 1)
            return _UNREADABLE

    def _expand(self, value: str, path: PathKey) -> str:
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


def _duplicate_dialog_names(walker: _Walker, item: dict[str, Any], path: PathKey) -> None:
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
    walker: _Walker, item: Any, index: int, base_dir: Path
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
        detail = "is missing" if provider_name is None else f"{provider_name!r} is not known"
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
        # include_input only so _pydantic_message can cut an echoed value; never printed.
        errors = exc.errors(include_url=False)
        deeper = {error["loc"][:-1] for error in errors if len(error["loc"]) > 1}
        for error in errors:
            if error["type"] == "too_short" and any(
                loc[: len(error["loc"])] == error["loc"] for loc in deeper
            ):
                continue  # pydantic also calls a list short when one of its items failed
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
            secret = _read_small_file(secret_path, MAX_SECRET_BYTES).decode().rstrip("\r\n")
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


def _read_small_file(path: Path, limit: int) -> bytes:
    """The content of ``path``, which must be a regular file of at most ``limit`` bytes.

    Opened without blocking and checked on the opened descriptor, so that nothing can swap the
    file in between: a FIFO would block the open or the read forever, a device such as
    /dev/zero never ends, and a huge file would be read into memory whole. Raises OSError,
    whose ``strerror`` says why.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        too_large = OSError(errno.EFBIG, f"larger than {limit} bytes")
        if info.st_size > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, limit + 1 - size):  # one byte more: a file that grew
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise too_large
        return b"".join(chunks)
    finally:
        os.close(fd)


_Contents = tuple[list[tuple[yaml.CollectionNode, str | int]], int]


def _contents(node: yaml.CollectionNode) -> _Contents:
    """A collection's collections, each with its path part, and how many scalars it holds
    (plain keys are names, not values)."""
    children: list[tuple[yaml.Node, str | int]]
    if isinstance(node, yaml.SequenceNode):
        children = list(zip(node.value, range(len(node.value)), strict=True))
    else:
        children = []
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                children.append((value, key.value))
            else:  # refused by the walk, but its size counts first
                children += ((key, "(key)"), (value, "(value)"))
    collections = [
        (child, part) for child, part in children if isinstance(child, yaml.CollectionNode)
    ]
    return collections, len(children) - len(collections)


def _check_shape(root: yaml.Node, source: str) -> None:
    """Refuse a node tree too big or too deep once its aliases and merge keys are expanded.

    Aliases let a few lines stand for billions of values ("billion laughs", or nested merge
    keys such as ``e5: {<<: [*e4, *e4, ...]}``), or name the collection they are in; walking
    such a tree would hang the exporter at startup or on reload, or exhaust the stack. Each
    shared node is measured once (depth-first, without recursion), so this costs time linear
    in the file, not in the expansion; the first node found too big is named.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(collection) -> (values expanded, levels)
    in_progress: set[int] = set()
    # (collection, its path, and once its children are queued: them and its scalar count)
    pending: list[tuple[yaml.CollectionNode, PathKey, _Contents | None]] = []
    if isinstance(root, yaml.CollectionNode):
        pending.append((root, (), None))

    def refuse(node: yaml.Node, path: PathKey, problem: str) -> ConfigError:
        line = node.start_mark.line + 1
        return ConfigError([f"{source}:{line}: {_dotted(path)}: {problem}"])

    while pending:
        node, path, contents = pending.pop()
        key = id(node)
        if contents is not None:  # every child collection is measured
            in_progress.discard(key)
            collections, values = contents
            values += 1
            levels = 0
            for child, _part in collections:
                child_values, child_levels = measured[id(child)]
                values += child_values
                levels = max(levels, child_levels)
            if values > MAX_NODES:
                expanded = "once aliases and merge keys are expanded"
                raise refuse(node, path, f"holds more than {MAX_NODES} values {expanded}")
            measured[key] = (values, levels + 1)
        elif key in measured:  # met again through an alias: deeper here, perhaps
            if len(path) + measured[key][1] > MAX_DEPTH:
                raise refuse(node, path, f"nested more than {MAX_DEPTH} levels deep")
        elif key in in_progress:
            raise refuse(node, path, "an alias refers to a collection that contains it")
        elif len(path) >= MAX_DEPTH:
            raise refuse(node, path, f"nested more than {MAX_DEPTH} levels deep")
        else:
            in_progress.add(key)
            contents = _contents(node)
            pending.append((node, path, contents))
            pending.extend((child, (*path, part), None) for child, part in reversed(contents[0]))


def _compose(text: str) -> yaml.Node | None:
    """The YAML node tree, fast; a broken file is re-read by the pure-Python parser, whose
    messages are more precise (it names a tab, for one)."""
    try:
        return yaml.compose(text, Loader=_FAST_LOADER)
    except yaml.YAMLError as exc:
        fast_error = exc
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        # libyaml stops at 1,000 levels; the pure-Python composer recurses once per level.
        raise fast_error from None


def _yaml_problem(exc: yaml.YAMLError, text: str, source: str) -> str:
    """``file:line: not valid YAML: ...`` from a PyYAML error."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids, e.g. NUL
        where = f"{source}:{text.count(chr(10), 0, exc.position) + 1}"
        return f"{where}: not valid YAML: {exc.reason} (character #x{exc.character:04x})"
    mark = getattr(exc, "problem_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    # PyYAML splits its message: "expected a single document" (context) "but found
    # another document" (problem); the problem alone does not say what is wrong.
    parts = (getattr(exc, "context", None), getattr(exc, "problem", None))
    problem = ", ".join(part for part in parts if part) or str(exc)
    context_mark = getattr(exc, "context_mark", None)
    if context_mark is not None and mark is not None and context_mark.line != mark.line:
        problem += f" (from line {context_mark.line + 1})"  # e.g. where a quote opened
    return f"{source}{line}: not valid YAML: {problem}"


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
    except Exception as exc:  # see the docstring
        raise ConfigError([f"{source}: cannot be loaded: {type(exc).__name__}"]) from None


def _parse(
    text: str, source: str, environ: Mapping[str, str], base_dir: Path | None
) -> ExporterConfig:
    walker = _Walker(source, environ)
    try:
        root = _compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, text, source)]) from None
    if root is None:
        raise ConfigError([f"{source}: the file is empty; it must hold an 'accounts' list"])
    _check_shape(root, source)
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
        raise ConfigError(walker.problems)
    return ExporterConfig(accounts=tuple(accounts), source=source)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> ExporterConfig:
    """Read and validate the config file at ``path``."""
    try:
        content = _read_small_file(Path(path), MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    try:
        text = content.decode()
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (byte {exc.start})"]) from None
    return parse_config(text, str(path), environ)
