"""The YAML front-end of both files the exporter reads: the config and the web config.

Why not ``yaml.safe_load`` and done: users need ``file:line`` in every error, so a file is
walked as a node tree that remembers where each value came from, and pydantic's errors are
mapped back to those lines. They are formatted from their location and message only, as
``file:line: path: problem``: pydantic's own text would echo the offending input, and that
input may be a credential or a password hash.

Both files are untrusted input, so reading them is bounded: a file is read only when regular
and small (without blocking on a FIFO), the node tree's size and depth once aliases and merge
keys are expanded are checked before it is walked, tags other than YAML's plain ones are
refused, and whatever goes wrong is a refusal (:class:`YamlFileError`), never a traceback or a
hang.
"""

from __future__ import annotations

import difflib
import errno
import os
import stat
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from exporter.models import NAME_PATTERN

_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = f"{_YAML_TAG}merge"
_STR_TAG = f"{_YAML_TAG}str"
_PLAIN_COLLECTION_TAGS = frozenset({f"{_YAML_TAG}map", f"{_YAML_TAG}seq"})
# Far more values than any real config holds; a file beyond it is refused, not walked.
MAX_NODES = 100_000
# Collections nested deeper than this are refused (real configs nest at most 6 levels): the
# walk recurses once per level.
MAX_DEPTH = 50
# libyaml's loader when PyYAML has it: composing a large file's node tree is about four times
# faster and lighter (measured at 5,000 dialogs), with the same marks (lines) on every node.
_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_UNREADABLE = object()  # a YAML value that could not be constructed (already reported)

PathKey = tuple[str | int, ...]
_PATH_PARTS = 12  # a path in a message shows at most this many parts ...
_PATH_PART_CHARS = 60  # ... of at most this many characters each

# pydantic's wording, for the errors a YAML author meets most, names Python types ("a valid
# dictionary or instance of TLSServerConfig"); these say it in terms of the file. Other errors
# keep pydantic's message (or the validator's), minus any echo of the value.
_MESSAGES = {
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "set_type": "must be a list",
    "frozen_set_type": "must be a list",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "too_short": "must list at least one entry",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_too_short": "must not be empty",
}
# The patterns fields use, said in words (a regex is no answer to a YAML author).
_PATTERN_WORDS = {
    NAME_PATTERN: "must not be empty or contain spaces or control characters",
    r"^[^,\s]+$": "must not contain commas, spaces or control characters",
    r"^[^,]+$": "must not contain a comma",
    r"^[0-9]+$": "must be digits only",
    r"^[A-Za-z0-9_-]+$": "may hold only letters, digits, _ and -",
    r"^[A-Za-z0-9-]+$": "may hold only letters, digits and -",
}
# Messages that name a bound from the error's context.
_BOUND_MESSAGES = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be more than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
    "string_too_long": ("max_length", "must be at most {} characters long"),
    "too_long": ("max_length", "must list at most {} entries"),
}
# YAML 1.1 reads these plain words as booleans or null, not as the text a name field wants.
_YAML_WORDS_TAGS = frozenset(
    {f"{_YAML_TAG}bool", f"{_YAML_TAG}null", f"{_YAML_TAG}int", f"{_YAML_TAG}float"}
)


class YamlFileError(Exception):
    """A file that cannot be used; ``problems`` holds one ``file:line: path: problem`` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def dotted(path: PathKey) -> str:
    """``accounts[0].dialogs``; a huge key or a deep path is shortened, not echoed whole."""
    text = ""
    for part in path[:_PATH_PARTS]:
        if isinstance(part, str) and len(part) > _PATH_PART_CHARS:
            part = part[:_PATH_PART_CHARS] + "..."
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return (text + ("..." if len(path) > _PATH_PARTS else "")) or "(top level)"


class YamlWalker:
    """Turns a YAML node tree into plain data, recording each value's line and its problems.

    A subclass may give strings a meaning of their own by overriding :meth:`text` (the config
    expands ``${VAR}`` there).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[PathKey, int] = {}
        self.key_lines: dict[PathKey, int] = {}  # the line of each mapping key
        self.plain_words: dict[PathKey, str] = {}  # unquoted scalars YAML read as non-text
        self.problems: list[str] = []
        self.failed: set[PathKey] = set()
        self._problem_lines: list[int] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def where(self, path: PathKey) -> str:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return f"{self.source}:{self.lines[path[:end]]}"
        return self.source

    def problem(self, path: PathKey, text: str, line: int | None = None) -> None:
        where = self.where(path) if line is None else f"{self.source}:{line}"
        self.problems.append(f"{where}: {dotted(path)}: {text}")
        number = where.rpartition(":")[2]
        self._problem_lines.append(int(number) if number.isdigit() else 0)

    def sorted_problems(self) -> list[str]:
        """The problems in file order (by line; as found within one line)."""
        order = sorted(range(len(self.problems)), key=self._problem_lines.__getitem__)
        return [self.problems[index] for index in order]

    def unknown_field(self, path: PathKey, known: Iterable[str]) -> None:
        """An unknown key, at the key's own line, with the nearest known one if any is near."""
        line = self.key_lines.get(path)
        self.problem(path, "unknown field" + did_you_mean(str(path[-1]), known), line)

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
        if node.tag in _YAML_WORDS_TAGS and isinstance(node, yaml.ScalarNode) and not node.style:
            self.plain_words[path] = node.value[:40]
        if isinstance(value, str):
            return self.text(value, path)
        return value

    def text(self, value: str, path: PathKey) -> str:
        """A string value as the file means it; as written, unless a subclass says otherwise."""
        del path  # used by subclasses, to report a problem at the value's line
        return value

    def report(
        self,
        exc: ValidationError,
        data: Any,
        base: PathKey = (),
        model: type[BaseModel] | None = None,
    ) -> None:
        """Report each of pydantic's errors about ``data`` (found at ``base``) at its line.

        An error at a value whose reading already failed is left out (one problem, not two),
        and so is one about a mapping holding such a value (a check of fields together, say,
        that fails only because one of them could not be read), and pydantic's "too short"
        for a list whose item failed. ``model`` (the model ``data`` was validated against)
        lets an unknown field name the known one it is nearest to.
        """
        # include_input only so _pydantic_message can cut an echoed value; never printed.
        errors = exc.errors(include_url=False)
        deeper = {error["loc"][:-1] for error in errors if len(error["loc"]) > 1}
        for error in errors:
            if error["type"] == "too_short" and any(
                loc[: len(error["loc"])] == error["loc"] for loc in deeper
            ):
                continue
            where = (*base, *_loc_to_path(error["loc"], data))
            if any(failed[: len(where)] == where for failed in self.failed):
                continue  # the value, or one inside it, was already reported
            if error["type"] == "extra_forbidden":
                self.unknown_field(where, _fields_at(model, error["loc"][:-1]))
                continue
            message = _pydantic_message(error)
            word = self.plain_words.get(where)
            if error["type"] == "string_type" and word is not None:
                message += _quoting_hint(word)
            self.problem(where, message)

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
            self.key_lines[(*path, key)] = key_node.start_mark.line + 1
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


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the known word nearest to a misspelt one, else ''."""
    choices = list(known)
    folded = {choice.lower(): choice for choice in choices}
    if word.lower() in folded:
        return f" (did you mean {folded[word.lower()]}?)"
    near = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return f" (did you mean {near[0]}?)" if near else ""


def _quoting_hint(word: str) -> str:
    """Why a plain word is not text to YAML: a keyword is named, a number never echoed (it may
    be a credential pasted unquoted)."""
    lowered = word.lower()
    if lowered in ("null", "~", ""):
        return f"; YAML reads {word or 'an empty value'} as null: quote it"
    if lowered in ("y", "yes", "n", "no", "true", "false", "on", "off"):
        return f'; YAML reads {word} as a boolean: quote it ("{word}")'
    return "; YAML reads the value as a number: quote it"


def _fields_at(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the model found at ``loc`` inside ``model`` (lists followed to
    their items' model); none when it cannot be told."""
    current = model
    for part in loc:
        if current is None:
            return []
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        current = _model_in(field.annotation) if field is not None else None
    return list(current.model_fields) if current is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds (``tuple[Dialog, ...]``, ``Dialog | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _pydantic_message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    context = error.get("ctx") or {}
    if kind in _BOUND_MESSAGES and _BOUND_MESSAGES[kind][0] in context:
        key, text = _BOUND_MESSAGES[kind]
        bound = context[key]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return text.format(bound)
    if kind == "string_pattern_mismatch":
        return _PATTERN_WORDS.get(str(context.get("pattern")), "does not have the form it takes")
    if kind == "literal_error" and "expected" in context:
        return f"must be one of {context['expected']}"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str) and value and repr(value) in message:
        # A validator that quotes the offending value (a bad duration, say) would print a
        # credential pasted into the wrong field; the file:line already shows which value.
        message = message.replace(repr(value), "the value")
    return message


def read_small_file(path: Path, limit: int) -> bytes:
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

    def refuse(node: yaml.Node, path: PathKey, problem: str) -> YamlFileError:
        line = node.start_mark.line + 1
        return YamlFileError([f"{source}:{line}: {dotted(path)}: {problem}"])

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
    # str(exc) is never used: it quotes the offending line, which may hold a secret.
    problem = ", ".join(part for part in parts if part) or type(exc).__name__
    context_mark = getattr(exc, "context_mark", None)
    if context_mark is not None and mark is not None and context_mark.line != mark.line:
        problem += f" (from line {context_mark.line + 1})"  # e.g. where a quote opened
    return f"{source}{line}: not valid YAML: {problem}"


def read_text(path: Path, limit: int, what: str) -> str:
    """The UTF-8 text of the ``what`` (e.g. "config file") at ``path``, read as
    :func:`read_small_file` reads; any problem is a YamlFileError naming the file."""
    try:
        content = read_small_file(path, limit)
    except OSError as exc:
        raise YamlFileError([f"{path}: cannot read the {what}: {exc.strerror or exc}"]) from None
    try:
        return content.decode()
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        raise YamlFileError([f"{path}:{line}: not UTF-8 text (byte {exc.start})"]) from None


def parse(text: str, walker: YamlWalker) -> Any:
    """The plain data of ``text``, walked by ``walker``, which keeps each value's line and the
    problems found in the values; None for an empty document.

    Text that is not YAML, or a tree too big or too deep, raises YamlFileError.
    """
    try:
        root = _compose(text)
    except yaml.YAMLError as exc:
        raise YamlFileError([_yaml_problem(exc, text, walker.source)]) from None
    if root is None:
        return None
    _check_shape(root, walker.source)
    return walker.walk(root, ())
