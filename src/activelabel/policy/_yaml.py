"""YAML loading that keeps where every key, value and list item came from.

PyYAML's ``compose`` gives nodes with start marks; we turn them into a small
tree (`YMap`, `YSeq`, `YScalar`) whose every node carries a `Loc`. The schema
checks in ``_build`` read this tree, so each issue can name file:line:column.

The scalar resolver is YAML 1.2-flavoured on purpose: only ``true``/``false``
are booleans (so enum values such as ``yes``/``no``/``on``/``off`` stay strings)
and ``1e3`` is a float, as a user writing numbers expects.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1


class _PolicyResolver(Resolver):
    """Resolver without YAML 1.1's yes/no/on/off booleans, with YAML 1.2 floats."""


_PolicyResolver.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for ch, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_PolicyResolver.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# Appended after the int resolver, so "100" stays an int and only "1e3"-like text lands here.
_PolicyResolver.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _PyLoader(Reader, Scanner, Parser, Composer, SafeConstructor, _PolicyResolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        _PolicyResolver.__init__(self)


_Loader: Any = _PyLoader
if getattr(yaml, "__with_libyaml__", False):  # libyaml composes ~10x faster; marks are the same
    from yaml.cyaml import CParser  # type: ignore[attr-defined]  # the stubs do not re-export it

    class _CLoader(CParser, SafeConstructor, _PolicyResolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            _PolicyResolver.__init__(self)

    _Loader = _CLoader


@dataclass(frozen=True, slots=True)
class Loc:
    """A position in a policy file; line and column are 1-based."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class YNode:
    """A YAML node with its position. ``node`` is the underlying PyYAML node."""

    __slots__ = ("loc", "node")
    kind = "node"

    def __init__(self, loc: Loc, node: Node) -> None:
        self.loc = loc
        self.node = node


class YScalar(YNode):
    """A scalar: ``value`` is the Python value, ``raw`` the text as written."""

    __slots__ = ("offsets", "raw", "style", "value")
    kind = "scalar"

    def __init__(self, loc: Loc, node: ScalarNode, value: Any) -> None:
        super().__init__(loc, node)
        self.value = value
        self.raw: str = node.value
        self.style: str | None = node.style
        self.offsets: tuple[str, list[int]] | None = None  # cache of value_offsets for one text


class YSeq(YNode):
    """A sequence of nodes."""

    __slots__ = ("items",)
    kind = "list"

    def __init__(self, loc: Loc, node: SequenceNode, items: list[YNode]) -> None:
        super().__init__(loc, node)
        self.items = items

    def __iter__(self) -> Iterator[YNode]:
        return iter(self.items)


class YMap(YNode):
    """A mapping; ``entries`` maps each key's value to (key node, value node)."""

    __slots__ = ("entries",)
    kind = "mapping"

    def __init__(self, loc: Loc, node: MappingNode, entries: dict[Any, tuple[YScalar, YNode]]) -> None:
        super().__init__(loc, node)
        self.entries = entries

    def get(self, key: str) -> YNode | None:
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def key_node(self, key: str) -> YScalar | None:
        entry = self.entries.get(key)
        return entry[0] if entry else None

    def __contains__(self, key: object) -> bool:
        return key in self.entries


@dataclass(frozen=True)
class YamlProblem:
    """A problem found while reading YAML (syntax error, duplicate key...)."""

    message: str
    loc: Loc
    suggestion: str | None = None


def _loc(file: str, node: Node) -> Loc:
    return Loc(file, node.start_mark.line + 1, node.start_mark.column + 1)


def parse_yaml(text: str, file: str) -> tuple[YNode | None, list[YamlProblem]]:
    """Compose ``text`` into a positioned tree; return it with the problems found."""
    problems: list[YamlProblem] = []
    too_deep = _flow_too_deep(text)
    if too_deep is not None:
        line, col = too_deep
        problems.append(YamlProblem(f"invalid YAML: nested too deeply (more than {MAX_DEPTH} levels)", Loc(file, line, col)))
        return None, problems
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except RecursionError:
        problems.append(YamlProblem("invalid YAML: nested too deeply", Loc(file, 1, 1)))
        return None, problems
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = "invalid YAML: " + (exc.problem or exc.context or "syntax error")
        if exc.context and exc.problem:
            msg = f"invalid YAML: {exc.problem} ({exc.context})"
        problems.append(YamlProblem(msg, Loc(file, line, col)))
        return None, problems
    except yaml.YAMLError as exc:  # e.g. reader errors on control characters
        problems.append(YamlProblem(f"invalid YAML: {exc}", Loc(file, 1, 1)))
        return None, problems
    finally:
        loader.dispose()
    if root is None:
        return None, problems
    try:
        if _expanded_size(root, {}, set()) > MAX_NODES:
            problems.append(YamlProblem(f"policy too large: more than {MAX_NODES} values once aliases are expanded", Loc(file, 1, 1)))
            return None, problems
        return _convert(root, file, loader, problems, set(), {}), problems
    except RecursionError:
        problems.append(YamlProblem("invalid YAML: nested too deeply", Loc(file, 1, 1)))
        return None, problems


MAX_DEPTH = 200
"""Bound on flow nesting (``[[[...``): PyYAML's scanner is quadratic in it, so refuse before parsing."""


def _flow_too_deep(text: str) -> tuple[int, int] | None:
    """Where ``[``/``{`` nesting first exceeds MAX_DEPTH (brackets inside strings count too: an upper bound)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth = 0
    for m in _BRACKETS.finditer(text):
        depth = depth + 1 if m.group() in "[{" else max(0, depth - 1)
        if depth > MAX_DEPTH:
            return _location(text, m.start())
    return None


_BRACKETS = re.compile(r"[\[\]{}]")

MAX_NODES = 1_000_000
"""Bound on YAML values after alias expansion, so an alias bomb is refused rather than expanded."""


def _expanded_size(node: Node, memo: dict[int, int], active: set[int]) -> int:
    """How many values ``node`` stands for with aliases expanded (linear in the distinct nodes)."""
    if isinstance(node, ScalarNode):
        return 1
    got = memo.get(id(node))
    if got is not None:
        return got
    if id(node) in active:  # recursive alias: reported by _convert
        return 1
    active.add(id(node))
    children = node.value if isinstance(node, SequenceNode) else [n for kv in node.value for n in kv]
    total = 1
    for child in children:
        total += _expanded_size(child, memo, active)
        if total > MAX_NODES:
            break
    active.discard(id(node))
    memo[id(node)] = total
    return total


def _convert(
    node: Node, file: str, loader: Any, problems: list[YamlProblem], active: set[int], memo: dict[int, YNode]
) -> YNode:
    # An aliased node is converted once and shared: the tree is read-only.
    done = memo.get(id(node))
    if done is not None:
        return done
    loc = _loc(file, node)
    if isinstance(node, ScalarNode):
        if node.tag == _STR_TAG:  # the common case; skip the constructor's bookkeeping
            return YScalar(loc, node, node.value)
        try:
            value = loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problems.append(YamlProblem(f"invalid value: {exc}", loc))
            value = node.value
        except ValueError:  # int() past 4,300 digits
            problems.append(YamlProblem(f"number out of range: {len(node.value):,} digits (numbers must fit in 64 bits)", loc))
            value = None
        if value.__class__ is int and not _INT_MIN <= value <= _UINT_MAX:
            # Nothing downstream (CEL, JSON output, the policy digest) takes a wider integer.
            problems.append(YamlProblem("number out of range: integers must fit in 64 bits", loc))
            value = None
        return YScalar(loc, node, value)
    if id(node) in active:  # a recursive alias (&a [*a]) cannot become data
        problems.append(YamlProblem("recursive YAML alias", loc))
        return YScalar(loc, ScalarNode("tag:yaml.org,2002:null", "", node.start_mark, node.end_mark), None)
    active.add(id(node))
    try:
        result: YNode
        if isinstance(node, SequenceNode):
            result = YSeq(loc, node, [_convert(item, file, loader, problems, active, memo) for item in node.value])
            memo[id(node)] = result
            return result
        assert isinstance(node, MappingNode)
        entries: dict[Any, tuple[YScalar, YNode]] = {}
        merged: list[YMap] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *defaults` (or a list of them): fill in keys not written here
                source = _convert(value_node, file, loader, problems, active, memo)
                parts = source.items if isinstance(source, YSeq) else [source]
                for part in parts:
                    if isinstance(part, YMap):
                        merged.append(part)
                    else:
                        problems.append(YamlProblem("`<<` must merge a mapping or a list of mappings", part.loc))
                continue
            if not isinstance(key_node, ScalarNode):
                problems.append(YamlProblem("mapping keys must be plain scalars", _loc(file, key_node)))
                continue
            key = _convert(key_node, file, loader, problems, active, memo)
            assert isinstance(key, YScalar)
            try:
                hash(key.value)
            except TypeError:
                key.value = key.raw
            if key.value in entries:
                first = entries[key.value][0].loc
                problems.append(
                    YamlProblem(
                        f"duplicate key `{key.raw}` (first at line {first.line})",
                        key.loc,
                        suggestion="remove one of them",
                    )
                )
                continue
            entries[key.value] = (key, _convert(value_node, file, loader, problems, active, memo))
        for part in merged:
            for k, entry in part.entries.items():
                entries.setdefault(k, entry)
        result = YMap(loc, node, entries)
        memo[id(node)] = result
        return result
    finally:
        active.discard(id(node))


def to_plain(node: YNode | None) -> Any:
    """The plain Python data of a positioned tree."""
    if node is None:
        return None
    if isinstance(node, YScalar):
        return node.value
    if isinstance(node, YSeq):
        return [to_plain(item) for item in node.items]
    assert isinstance(node, YMap)
    return {key: to_plain(value) for key, (_, value) in node.entries.items()}


@lru_cache(maxsize=32)
def _line_starts(source: str) -> list[int]:
    starts = [0]
    for m in re.finditer("\n", source):
        starts.append(m.end())
    return starts


def text_line(text: str, line: int) -> str | None:
    """Line ``line`` (1-based) of ``text`` without its line break, or None past either end."""
    starts = _line_starts(text)
    if not 1 <= line <= len(starts):
        return None
    end = starts[line] - 1 if line < len(starts) else len(text)
    return text[starts[line - 1]:end]


def _location(source: str, index: int) -> tuple[int, int]:
    starts = _line_starts(source)
    line = bisect.bisect_right(starts, index)
    return line, index - starts[line - 1] + 1


_ESCAPE_LENGTH = {"x": 4, "u": 6, "U": 10}


def value_offsets(node: YScalar, source: str, text: str) -> list[int]:
    """The source index of each character of ``text`` (a scalar's value, or its raw text).

    Aligns the value with the source greedily: characters that match advance
    both; whitespace the scalar folded or stripped (line breaks, indentation,
    trailing blanks) and block-scalar headers are skipped; double-quoted escapes
    (``\\"``, ``\\n``, ``\\x41``...) and single-quoted ``''`` count as one character.
    """
    start, end = node.node.start_mark.index, node.node.end_mark.index
    style = node.style
    if style in ("'", '"'):
        j, stop = start + 1, end - 1
    elif style in ("|", ">"):
        nl = source.find("\n", start)
        j, stop = (nl + 1 if nl >= 0 else end), end
    else:
        j, stop = start, end
    out: list[int] = []
    i, n = 0, len(text)
    while i < n and j < stop:
        c = source[j]
        if style == '"' and c == "\\" and j + 1 < stop:
            nxt = source[j + 1]
            if nxt in "\r\n":  # escaped line break: joins lines, produces nothing
                j += 2
                while j < stop and source[j] in " \t\r\n":
                    j += 1
                continue
            out.append(j)
            i += 1
            j += _ESCAPE_LENGTH.get(nxt, 2)
            continue
        if style == "'" and c == "'" and source[j + 1 : j + 2] == "'":
            out.append(j)
            i += 1
            j += 2
            continue
        v = text[i]
        if c == v or (c in "\r\n" and v in " \n"):
            out.append(j)
            i += 1
        j += 1
    return out


def expr_position(node: YScalar, source: str, line: int, column: int, text: str) -> tuple[int, int]:
    """Map a 1-based (line, column) inside ``text`` (the scalar's value) to (line, column) in the file."""
    # Line starts are cached per text: a rule with thousands of references asks thousands of times.
    starts = _line_starts(text)
    line = max(1, min(line, len(starts)))
    offset = starts[line - 1] + max(0, column - 1)
    if node.offsets is None or node.offsets[0] != text:
        node.offsets = (text, value_offsets(node, source, text))
    offsets = node.offsets[1]
    if not offsets:
        mark = node.node.start_mark
        return mark.line + 1, mark.column + 1
    if offset < len(offsets):
        return _location(source, offsets[offset])
    # Just past the end (an "unexpected end of expression"): one column after the last character.
    last_line, last_col = _location(source, offsets[-1])
    return last_line, last_col + 1 + (offset - len(offsets))
