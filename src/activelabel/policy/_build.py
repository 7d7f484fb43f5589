"""Shape checks of one policy file: positioned YAML tree → specs + what to check after merging.

Everything that can be checked inside one file is checked here (keys, types,
enums, bounds, CEL syntax). Checks that need the merged policy (a rule's label,
references to labels and enrichers, duplicate ids across includes) use the
``Pending`` records this module returns; ``_merge`` runs them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import _cel
from ._privacy import build_outputs, build_pii, build_protect, build_redact
from ._report import Reporter
from ._spec import (
    API_VERSION,
    BELOW_CONFIDENCE,
    ENRICHER_TYPES,
    KIND,
    LABEL_TYPES,
    LOOKUP_FORMATS,
    MODEL_TYPES,
    RESERVED_NAMES,
    RESOLVE_MODES,
    SENSITIVITIES,
    EnricherSpec,
    Expr,
    LabelSpec,
    Metadata,
    ModelSpec,
    OutputsSpec,
    PiiSpec,
    PolicyTest,
    RedactSpec,
    RuleSpec,
)
from ._suggest import did_you_mean
from ._values import bucket_names, coerce, constant_problem, describe, fmt_num
from ._yaml import Loc, YMap, YNode, YScalar, YSeq, expr_position, text_line, to_plain

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Words CEL reserves: not usable after a dot (`labels.in`) nor as a name.
CEL_RESERVED = frozenset(
    ["as", "break", "const", "continue", "else", "false", "for", "function", "if", "import", "in", "let", "loop", "package", "namespace", "null", "return", "true", "var", "void", "while"]
)

TOP_KEYS = ("apiVersion", "kind", "metadata", "include", "labels", "enrichers", "rules", "tests", "models", "outputs", "redact", "pii")
METADATA_KEYS = ("name", "version", "owner", "description")
LABEL_KEYS = (
    "type", "values", "open", "default", "description", "owner", "sensitivity",
    "max_cardinality", "overflow", "window", "resolve", "from", "bounds", "protect",
)  # fmt: skip
RULE_KEYS = ("id", "label", "value", "value_expr", "when", "confidence", "description")
ENRICHER_KEYS = ("name", "type", "file", "format", "key", "key_field", "table", "key_column", "description")
MODEL_KEYS = (
    "name", "label", "type", "path", "features", "min_confidence", "timeout_ms",
    "on_error", "below_confidence", "version", "description", "breaker_failures", "breaker_cooldown_s",
)  # fmt: skip
TEST_KEYS = ("name", "event", "expect")
FORMAT_BY_SUFFIX = {
    ".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".db": "sqlite", ".sqlite": "sqlite", ".sqlite3": "sqlite",
}  # fmt: skip


@dataclass
class Pending:
    """A spec plus what the merged-policy checks need: field positions and CEL references."""

    spec: Any
    locs: dict[str, Loc] = field(default_factory=dict)
    # (field, path, where the path starts, where its second part starts) per CEL reference
    refs: list[tuple[str, tuple[str, ...], Loc, Loc]] = field(default_factory=list)
    # (field, expression, its YAML scalar) per parsed expression, for the compile check after merging
    exprs: list[tuple[str, Expr, YScalar]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileDoc:
    """What one file contributes to the merged policy."""

    file: str
    base_dir: Path
    api_version: str | None = None
    kind: str | None = None
    metadata: Metadata | None = None
    includes: list[tuple[str, Loc]] = field(default_factory=list)
    labels: list[Pending] = field(default_factory=list)
    rules: list[Pending] = field(default_factory=list)
    enrichers: list[Pending] = field(default_factory=list)
    models: list[Pending] = field(default_factory=list)
    tests: list[Pending] = field(default_factory=list)
    # names of every enricher entry, even incomplete ones, so rules using them are not also reported
    enricher_names: list[str] = field(default_factory=list)
    # the privacy sections (`_privacy`); read from the top-level file only
    outputs: OutputsSpec | None = None
    redact: RedactSpec | None = None
    pii: PiiSpec | None = None


class FileBuilder:
    """Builds the `FileDoc` of one file, reporting every shape problem."""

    def __init__(self, rep: Reporter, file: str, base_dir: Path) -> None:
        self.rep = rep
        self.file = file
        self.base_dir = base_dir
        self.source = rep.texts.get(file, "")
        self.doc = FileDoc(file, base_dir)

    # ---- small typed readers; each reports its own problem and returns None ----

    def keys(self, m: YMap, allowed: tuple[str, ...], required: tuple[str, ...], what: str, rule_id: str | None = None) -> None:
        for key, (knode, _) in m.entries.items():
            if key not in allowed:
                self.rep.add(
                    f"unknown key `{knode.raw}` in {what}",
                    knode.loc,
                    rule_id=rule_id,
                    suggestion=did_you_mean(str(key), allowed) or "allowed: " + ", ".join(allowed),
                )
        for key in required:
            if key not in m.entries:
                self.rep.add(f"{what} is missing `{key}`", m.loc, rule_id=rule_id)

    def string(self, m: YMap, key: str, what: str, rule_id: str | None = None, *, numbers_ok: bool = False) -> str | None:
        node = m.get(key)
        if node is None:
            return None
        if isinstance(node, YScalar) and isinstance(node.value, str):
            return node.value
        if numbers_ok and isinstance(node, YScalar) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.raw
        self.rep.add(f"`{key}` of {what} must be a string, not {describe(node)}", node.loc, rule_id=rule_id)
        return None

    def path(self, m: YMap, key: str, what: str) -> str | None:
        """A string field naming a file: `string`, and no control characters (a NUL cannot reach the OS at all)."""
        text = self.string(m, key, what)
        if text is not None and not path_text_ok(text):
            self.rep.add(f"`{key}` of {what} must be a file path without control characters, not {text!a}",
                         m.entries[key][1].loc, suggestion="rename the file, or fix the path's spelling")
            return None
        return text

    def choice(self, m: YMap, key: str, choices: tuple[str, ...], what: str, rule_id: str | None = None) -> str | None:
        text = self.string(m, key, what, rule_id)
        if text is None:
            return None
        if text not in choices:
            node = m.get(key)
            assert node is not None
            self.rep.add(
                f"`{key}` of {what} must be one of {', '.join(choices)}, not `{text}`",
                node.loc,
                rule_id=rule_id,
                suggestion=did_you_mean(text, choices),
            )
            return None
        return text

    def number(
        self, m: YMap, key: str, what: str, rule_id: str | None = None, *,
        lo: float | None = None, hi: float | None = None, lo_open: bool = False, integer: bool = False,
    ) -> float | None:  # fmt: skip
        node = m.get(key)
        if node is None:
            return None
        value = node.value if isinstance(node, YScalar) else None
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if not ok_type or not _finite(value):
            if ok_type and not isinstance(value, bool):
                self.rep.add(f"`{key}` of {what} is out of range", node.loc, rule_id=rule_id)
                return None
            kind = "an integer" if integer else "a number"
            self.rep.add(f"`{key}` of {what} must be {kind}, not {describe(node)}", node.loc, rule_id=rule_id)
            return None
        assert isinstance(value, (int, float)) and isinstance(node, YScalar)
        if (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi):
            if hi is None:
                rng = f"greater than {fmt_num(lo)}" if lo_open else f"at least {fmt_num(lo)}"
            else:
                rng = f"between {fmt_num(lo)} and {fmt_num(hi)}"
            self.rep.add(f"`{key}` of {what} must be {rng}, not {node.raw}", node.loc, rule_id=rule_id)
            return None
        return value

    def mapping(self, node: YNode | None, what: str, rule_id: str | None = None) -> YMap | None:
        if node is None:
            return None
        if isinstance(node, YMap):
            return node
        if isinstance(node, YScalar) and node.value is None:
            return None  # `labels:` with nothing under it
        self.rep.add(f"{what} must be a mapping, not {describe(node)}", node.loc, rule_id=rule_id)
        return None

    def sequence(self, node: YNode | None, what: str) -> YSeq | None:
        if node is None:
            return None
        if isinstance(node, YSeq):
            return node
        if isinstance(node, YScalar) and node.value is None:
            return None
        self.rep.add(f"{what} must be a list, not {describe(node)}", node.loc)
        return None

    def expr(self, m: YMap, key: str, what: str, pending: Pending, rule_id: str | None = None) -> Expr | None:
        """Parse the CEL expression under ``key``; report syntax errors at their spot in the file."""
        node = m.get(key)
        if node is None:
            return None
        if not isinstance(node, YScalar) or node.value is None or isinstance(node.value, (list, dict)):
            self.rep.add(f"`{key}` of {what} must be a CEL expression (a string), not {describe(node)}", node.loc, rule_id=rule_id)
            return None
        text = node.value if isinstance(node.value, str) else node.raw
        if not text.strip():
            self.rep.add(f"`{key}` of {what} is an empty expression", node.loc, rule_id=rule_id)
            return None
        start = Loc(self.file, *expr_position(node, self.source, 1, 1, text))
        try:
            ast = _cel.parse(text)
        except _cel.CELSyntaxError as exc:
            line, col = expr_position(node, self.source, exc.line, exc.column, text)
            loc = Loc(self.file, line, col)
            self.rep.add(f"CEL syntax error in `{key}`: {exc.message}", loc, rule_id=rule_id)
            return None
        for ref in _cel.references(ast):
            line, col = expr_position(node, self.source, ref.line, ref.column, text)
            root = Loc(self.file, line, col)
            # `labels.priorty` is best reported at `priorty`, when written plainly.
            member = Loc(self.file, *self._field_position(node, text, ref, line, col)) if len(ref.path) > 1 else root
            pending.refs.append((key, ref.path, root, member))
        expr = Expr(text, ast, start)
        self._check_regexes(node, text, ast, key, rule_id, pending)
        pending.exprs.append((key, expr, node))
        return expr

    def _check_regexes(self, node: YScalar, text: str, ast: Any, key: str, rule_id: str | None, pending: Pending) -> None:
        """Constant patterns of `matches` must be valid RE2 (linear-time, so no hostile backtracking)."""
        import re2

        if ast is None:
            return
        stack = [ast.root]
        while stack:
            n = stack.pop()
            stack.extend(n.children())
            if getattr(n, "function", None) != "matches" or not getattr(n, "args", None):
                continue
            pattern = n.args[-1]
            if type(pattern).__name__ != "Literal" or not isinstance(pattern.value, str):
                continue
            options = re2.Options()
            options.log_errors = False  # we report it; keep RE2's own logging off stderr
            try:
                re2.compile(pattern.value, options)
            except re2.error as exc:
                reason = exc.args[0] if exc.args else exc
                if isinstance(reason, bytes):
                    reason = reason.decode("utf-8", "replace")
                line, col = ast.location(pattern)
                loc = Loc(self.file, *expr_position(node, self.source, line, col, text))
                self.rep.add(f"invalid regular expression in `{key}`: {reason}", loc, rule_id=rule_id)
                pending.extra.setdefault("regex_spots", set()).add(loc)

    def _field_position(self, node: YScalar, text: str, ref: _cel.Ref, line: int, col: int) -> tuple[int, int]:
        src = text_line(text, ref.line)
        if src is None:
            return line, col
        dotted = ref.path[0] + "." + ref.path[1]
        at = ref.column - 1
        if src.startswith(dotted, at):
            return expr_position(node, self.source, ref.line, ref.column + len(ref.path[0]) + 1, text)
        return line, col

    # ---- the sections of a policy file ----

    def build(self, root: YNode | None, *, is_root: bool) -> FileDoc:
        doc = self.doc
        if root is None or (isinstance(root, YScalar) and root.value is None):
            if is_root:
                self.rep.add("the policy is empty", Loc(self.file, 1, 1))
            return doc
        if not isinstance(root, YMap):
            # Not describe(root): a scalar's text could be a whole foreign file (/etc/passwd).
            self.rep.add(f"a policy must be a mapping, not {'a list' if root.kind == 'list' else 'a single value'}", root.loc)
            return doc
        self.keys(root, TOP_KEYS, ("apiVersion", "kind") if is_root else (), "the policy")
        doc.api_version = self.string(root, "apiVersion", "the policy")
        if doc.api_version is not None and doc.api_version != API_VERSION:
            node = root.get("apiVersion")
            assert node is not None
            self.rep.add(f"unsupported apiVersion `{doc.api_version}`", node.loc, suggestion=f"use `{API_VERSION}`")
        doc.kind = self.string(root, "kind", "the policy")
        if doc.kind is not None and doc.kind != KIND:
            node = root.get("kind")
            assert node is not None
            self.rep.add(f"unsupported kind `{doc.kind}`", node.loc, suggestion=f"use `{KIND}`")
        meta = self.mapping(root.get("metadata"), "`metadata`")
        if meta is not None:
            self.keys(meta, METADATA_KEYS, (), "`metadata`")
            doc.metadata = Metadata(
                name=self.string(meta, "name", "`metadata`"),
                version=self.string(meta, "version", "`metadata`", numbers_ok=True),
                owner=self.string(meta, "owner", "`metadata`"),
                description=self.string(meta, "description", "`metadata`"),
                loc=meta.loc,
            )
        includes = self.sequence(root.get("include"), "`include`")
        for item in includes or ():
            if isinstance(item, YScalar) and isinstance(item.value, str) and item.value.strip():
                if path_text_ok(item.value):
                    doc.includes.append((item.value, item.loc))
                else:
                    self.rep.add(f"an include must be a file path without control characters, not {item.value!a}",
                                 item.loc, suggestion="rename the file, or fix the path's spelling")
            else:
                self.rep.add(f"an include must be a file path, not {describe(item)}", item.loc)
        labels = self.mapping(root.get("labels"), "`labels`")
        for key, (knode, vnode) in (labels.entries.items() if labels else ()):
            self.label(key, knode, vnode)
        for section, method in (("enrichers", self.enricher), ("rules", self.rule), ("models", self.model), ("tests", self.test)):
            seq = self.sequence(root.get(section), f"`{section}`")
            for item in seq or ():
                method(item)
        self.privacy_sections(root, is_root)
        return doc

    def privacy_sections(self, root: YMap, is_root: bool) -> None:
        for key in ("outputs", "redact", "pii"):
            if key in root.entries and not is_root:
                self.rep.add(f"`{key}` belongs in the top-level policy file, not in an include", root.entries[key][0].loc)
        if not is_root:
            return
        self.doc.outputs = build_outputs(self, root.get("outputs"))
        self.doc.pii = build_pii(self, root.get("pii"))
        self.doc.redact = build_redact(self, root.get("redact"), self.doc.pii)

    def label(self, name: Any, knode: YScalar, node: YNode) -> None:
        if not isinstance(name, str) or not IDENTIFIER.match(name):
            self.rep.add(
                f"label name `{knode.raw}` is not an identifier (letters, digits, _; rules read it as labels.<name>)",
                knode.loc,
            )
            return
        if name in CEL_RESERVED:
            self.rep.add(f"label name `{name}` is a CEL reserved word (rules could not read labels.{name})", knode.loc)
            return
        what = f"label `{name}`"
        m = self.mapping(node, what)
        if m is None:
            # A scalar is never a mapping: `label: ~` (or nothing) gets the hint, other shapes were reported.
            if isinstance(node, YScalar) and node.value is None:
                self.rep.add(f"{what} needs at least `type`", node.loc)
            return
        pending = Pending(spec=None, locs={"name": knode.loc})
        self.keys(m, LABEL_KEYS, ("type",), what)
        ltype = self.choice(m, "type", LABEL_TYPES, what)
        for key in ("values",):
            if key in m and ltype is not None and ltype != "enum":
                self.rep.add(f"`values` is only for enum labels ({what} is {ltype})", m.entries[key][0].loc)
        for key in ("from", "bounds"):
            if key in m and ltype is not None and ltype != "bucket":
                self.rep.add(f"`{key}` is only for bucket labels ({what} is {ltype})", m.entries[key][0].loc)
        is_open = False
        open_node = m.get("open")
        if open_node is not None:
            if not isinstance(open_node, YScalar) or not isinstance(open_node.value, bool):
                self.rep.add(f"`open` of {what} must be true or false, not {describe(open_node)}", open_node.loc)
            elif ltype is not None and ltype != "enum":
                self.rep.add(f"`open` is only for enum labels ({what} is {ltype}; a string label's values are open already)",
                             m.entries["open"][0].loc)
            else:
                is_open = bool(open_node.value)
        values: tuple[str, ...] | None = None
        if ltype == "enum" and not (is_open and "values" not in m):
            values = self.enum_values(m, what)
        bucket_from: Expr | None = None
        bounds: tuple[float, ...] = ()
        texts: tuple[str, ...] = ()
        names: tuple[str, ...] = ()
        if ltype == "bucket":
            if "from" not in m:
                self.rep.add(f"bucket {what} is missing `from` (a CEL expression giving a number)", m.loc)
            bucket_from = self.expr(m, "from", what, pending)
            if "bounds" not in m:
                self.rep.add(f"bucket {what} is missing `bounds`", m.loc)
            else:
                bounds, texts = self.bounds(m, what)
                names = bucket_names(texts)
        max_card = self.number(m, "max_cardinality", what, lo=1, integer=True)
        window = self.number(m, "window", what, lo=0, lo_open=True)
        overflow = self.string(m, "overflow", what)
        if "max_cardinality" not in m:
            for key in ("overflow", "window"):
                if key in m:
                    self.rep.add(f"`{key}` needs `max_cardinality` in {what}", m.entries[key][0].loc)
        spec = LabelSpec(
            name=name,
            type=ltype or "string",
            values=values,
            open=is_open,
            resolve=self.choice(m, "resolve", RESOLVE_MODES, what) or "first_match",
            description=self.string(m, "description", what),
            owner=self.string(m, "owner", what),
            sensitivity=self.choice(m, "sensitivity", SENSITIVITIES, what) or "internal",
            protect=build_protect(self, m.get("protect"), what),
            max_cardinality=int(max_card) if max_card is not None else None,
            overflow=overflow if overflow is not None else "__other__",
            window=float(window) if window is not None else None,
            bucket_from=bucket_from,
            bounds=bounds,
            bound_texts=texts,
            bucket_names=names,
            loc=knode.loc,
        )
        # Constants are only checked against a label whose own definition is sound (no cascades).
        sound = ltype is not None and (ltype != "enum" or values is not None or is_open) and (ltype != "bucket" or bool(names))
        default_node = m.get("default")
        if default_node is not None and not (isinstance(default_node, YScalar) and default_node.value is None):
            value = to_plain(default_node)
            if sound:
                err = constant_problem(spec, value)
                if err:
                    self.rep.add(f"default of {what}: {err[0]}", default_node.loc, suggestion=err[1])
                else:
                    spec = replace(spec, default=coerce(spec, value), has_default=True)
        pending.spec = spec
        pending.extra["valid"] = sound
        self.doc.labels.append(pending)

    def enum_values(self, m: YMap, what: str) -> tuple[str, ...] | None:
        node = m.get("values")
        if node is None:
            self.rep.add(f"enum {what} is missing `values`", m.loc)
            return None
        if not isinstance(node, YSeq) or not node.items:
            self.rep.add(f"`values` of {what} must be a non-empty list of strings", node.loc)
            return None
        out: list[str] = []
        for item in node.items:
            if not isinstance(item, YScalar) or not isinstance(item.value, str) or not item.value:
                hint = f'quote it: "{item.raw}"' if isinstance(item, YScalar) and item.raw else None
                self.rep.add(f"enum values must be non-empty strings, not {describe(item)}", item.loc, suggestion=hint)
                continue
            if item.value in out:
                self.rep.add(f"duplicate enum value `{item.value}` in {what}", item.loc)
                continue
            out.append(item.value)
        return tuple(out) if out else None

    def bounds(self, m: YMap, what: str) -> tuple[tuple[float, ...], tuple[str, ...]]:
        node = m.get("bounds")
        assert node is not None
        if not isinstance(node, YSeq) or not node.items:
            self.rep.add(f"`bounds` of {what} must be a non-empty list of ascending numbers", node.loc)
            return (), ()
        nums: list[float] = []
        texts: list[str] = []
        ok = True
        for item in node.items:
            value = item.value if isinstance(item, YScalar) else None
            if not _finite(value):
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
                self.rep.add("bound is out of range" if numeric else f"bound must be a number, not {describe(item)}", item.loc)
                ok = False
                continue
            assert isinstance(item, YScalar) and isinstance(value, (int, float))
            if nums and value <= nums[-1]:
                self.rep.add(
                    f"`bounds` of {what} must be strictly ascending: {item.raw} after {texts[-1]}",
                    item.loc,
                    suggestion="sort the bounds and remove duplicates",
                )
                ok = False
                continue
            nums.append(float(value))
            texts.append(item.raw)
        if not ok:
            return (), ()
        return tuple(nums), tuple(texts)

    def rule(self, node: YNode) -> None:
        m = self.mapping(node, "a rule")
        if m is None:
            if isinstance(node, YScalar) and node.value is None:
                self.rep.add("empty rule", node.loc)
            return
        rule_id: str | None = None
        id_node = m.get("id")
        if isinstance(id_node, YScalar) and id_node.value is not None and not isinstance(id_node.value, bool):
            rule_id = id_node.value if isinstance(id_node.value, str) else id_node.raw
        elif id_node is not None:
            self.rep.add(f"rule `id` must be a string, not {describe(id_node)}", id_node.loc)
        if rule_id is not None and not rule_id.strip():
            assert id_node is not None
            self.rep.add("rule `id` must not be empty", id_node.loc)
            rule_id = None
        what = f"rule `{rule_id}`" if rule_id else "a rule"
        pending = Pending(spec=None, locs={"rule": m.loc})
        self.keys(m, RULE_KEYS, ("id", "label"), what, rule_id)
        label = self.string(m, "label", what, rule_id)
        has_value, has_expr = "value" in m, "value_expr" in m
        if has_value and has_expr:
            self.rep.add(
                "a rule has either `value` (a constant) or `value_expr` (CEL), not both",
                m.entries["value_expr"][0].loc,
                rule_id=rule_id,
            )
        elif not has_value and not has_expr:
            self.rep.add(f"{what} needs `value` (a constant) or `value_expr` (CEL)", m.loc, rule_id=rule_id)
        value: Any = None
        value_node = m.get("value")
        if value_node is not None:
            if not isinstance(value_node, YScalar):
                self.rep.add(f"`value` of {what} must be a scalar constant, not {describe(value_node)}", value_node.loc, rule_id=rule_id)
            else:
                value = value_node.value
                pending.locs["value"] = value_node.loc
                pending.extra["check_value"] = True
        value_expr = self.expr(m, "value_expr", what, pending, rule_id)
        when = self.expr(m, "when", what, pending, rule_id)
        confidence = self.number(m, "confidence", what, rule_id, lo=0, hi=1)
        for key in ("id", "label"):
            if key in m:
                pending.locs[key] = m.entries[key][1].loc
        pending.spec = RuleSpec(
            id=rule_id or "",
            label=label or "",
            value=value,
            value_expr=value_expr,
            when=when,
            confidence=float(confidence) if confidence is not None else 1.0,
            description=self.string(m, "description", what, rule_id),
            loc=m.loc,
        )
        self.doc.rules.append(pending)

    def enricher(self, node: YNode) -> None:
        m = self.mapping(node, "an enricher")
        if m is None:
            return
        name = self.string(m, "name", "an enricher")
        what = f"enricher `{name}`" if name else "an enricher"
        pending = Pending(spec=None, locs={"enricher": m.loc})
        # `type: pii` scans a field and reads no file.
        is_pii = isinstance(m.get("type"), YScalar) and m.get("type").value == "pii"  # type: ignore[union-attr]
        self.keys(m, ENRICHER_KEYS, ("name", "type", "key") if is_pii else ("name", "type", "file", "key"), what)
        name_node = m.get("name")
        if name is not None and name_node is not None:
            pending.locs["name"] = name_node.loc
            self.doc.enricher_names.append(name)
            if not IDENTIFIER.match(name) or name in CEL_RESERVED:
                self.rep.add(f"enricher name `{name}` is not an identifier (rules read it as `{name}.field`)", name_node.loc)
                name = None
            elif name in RESERVED_NAMES:
                self.rep.add(
                    f"enricher name `{name}` clashes with the built-in `{name}`",
                    name_node.loc,
                    suggestion="names event, labels and now are reserved; pick another name",
                )
                name = None
        etype = self.choice(m, "type", ENRICHER_TYPES, what)
        file_text = self.path(m, "file", what)
        fmt = self.choice(m, "format", LOOKUP_FORMATS, what)
        if file_text is not None:
            pending.locs["file"] = m.entries["file"][1].loc
            if fmt is None and "format" not in m and etype != "novelty":
                fmt = FORMAT_BY_SUFFIX.get(Path(file_text).suffix.lower())
                if fmt is None:
                    self.rep.add(
                        f"cannot tell the format of `{file_text}` from its extension",
                        m.entries["file"][1].loc,
                        suggestion="add `format: csv`, `format: json`, `format: jsonl` or `format: sqlite`",
                    )
        key = self.expr(m, "key", what, pending)
        key_field = self.string(m, "key_field", what)
        table = self.string(m, "table", what)
        key_column = self.string(m, "key_column", what)
        if fmt == "sqlite":
            for k in ("table", "key_column"):
                if k not in m:
                    self.rep.add(f"sqlite {what} is missing `{k}`", m.loc)
            if "key_field" in m:
                self.rep.add(f"`key_field` is for CSV/JSON/JSONL files; sqlite {what} uses `key_column`", m.entries["key_field"][0].loc, suggestion="did you mean `key_column`?")
        elif fmt is not None:
            for k in ("table", "key_column"):
                if k in m:
                    self.rep.add(f"`{k}` is only for sqlite files ({what} reads {fmt})", m.entries[k][0].loc)
        if etype == "pii":
            for k in ("file", "format", "key_field", "table", "key_column"):
                if k in m:
                    self.rep.add(f"`{k}` is not used by pii {what} (it scans `key`)", m.entries[k][0].loc)
            if name is not None and key is not None:
                pending.spec = EnricherSpec(
                    name=name, type="pii", file="", path=self.base_dir, format="", key=key,
                    description=self.string(m, "description", what), loc=m.loc,
                )  # fmt: skip
                self.doc.enrichers.append(pending)
            return
        if etype == "novelty":
            # The file is a novelty index (JSON, as `activelabel loop` writes it), not a keyed table.
            for k in ("format", "key_field", "table", "key_column"):
                if k in m:
                    self.rep.add(f"`{k}` is not used by novelty {what} (`file` is a novelty index)", m.entries[k][0].loc)
            if name is not None and key is not None and file_text is not None:
                pending.spec = EnricherSpec(
                    name=name, type="novelty", file=file_text, path=(self.base_dir / file_text), format="novelty",
                    key=key, description=self.string(m, "description", what), loc=m.loc,
                )  # fmt: skip
                self.doc.enrichers.append(pending)
            return
        if name is None or etype is None or file_text is None or fmt is None or key is None:
            return
        pending.spec = EnricherSpec(
            name=name,
            type=etype,
            file=file_text,
            path=(self.base_dir / file_text),
            format=fmt,
            key=key,
            key_field=key_field,
            table=table,
            key_column=key_column,
            description=self.string(m, "description", what),
            loc=m.loc,
        )
        self.doc.enrichers.append(pending)

    def model(self, node: YNode) -> None:
        m = self.mapping(node, "a model")
        if m is None:
            return
        name = self.string(m, "name", "a model")
        what = f"model `{name}`" if name else "a model"
        pending = Pending(spec=None, locs={"model": m.loc})
        self.keys(m, MODEL_KEYS, ("name", "label", "type", "path"), what)
        label = self.string(m, "label", what)
        mtype = self.choice(m, "type", MODEL_TYPES, what)
        path_text = self.path(m, "path", what)
        features: dict[str, Expr] = {}
        fnode = self.mapping(m.get("features"), f"`features` of {what}")
        for fname, (fknode, _) in (fnode.entries.items() if fnode else ()):
            if not isinstance(fname, str) or not fname:
                self.rep.add(f"feature names must be strings, not `{fknode.raw}`", fknode.loc)
                continue
            expr = self.expr(fnode, fname, f"feature `{fname}` of {what}", pending)  # type: ignore[arg-type]
            if expr is not None:
                features[fname] = expr
        min_conf = self.number(m, "min_confidence", what, lo=0, hi=1)
        timeout = self.number(m, "timeout_ms", what, lo=0, lo_open=True)
        breaker_failures = self.number(m, "breaker_failures", what, lo=1, integer=True)
        breaker_cooldown = self.number(m, "breaker_cooldown_s", what, lo=0, lo_open=True)
        below = self.choice(m, "below_confidence", BELOW_CONFIDENCE, what) if "below_confidence" in m else "abstain"
        on_error: Any = "abstain"
        on_error_node = m.get("on_error")
        if on_error_node is not None:
            if not isinstance(on_error_node, YScalar) or on_error_node.value is None:
                self.rep.add(f'`on_error` of {what} must be "abstain" or a fallback value, not {describe(on_error_node)}', on_error_node.loc)
            else:
                on_error = on_error_node.value
                pending.locs["on_error"] = on_error_node.loc
        for key in ("label", "path", "name"):
            if key in m:
                pending.locs[key] = m.entries[key][1].loc
        if name is None or label is None or mtype is None or path_text is None:
            return
        pending.spec = ModelSpec(
            name=name,
            label=label,
            type=mtype,
            path=self.base_dir / path_text,
            path_text=path_text,
            features=features,
            min_confidence=float(min_conf) if min_conf is not None else 0.0,
            timeout_ms=float(timeout) if timeout is not None else 50.0,
            on_error=on_error,
            below_confidence=below or "abstain",
            version=self.string(m, "version", what, numbers_ok=True),
            description=self.string(m, "description", what),
            breaker_failures=int(breaker_failures) if breaker_failures is not None else None,
            breaker_cooldown_s=float(breaker_cooldown) if breaker_cooldown is not None else None,
            loc=m.loc,
        )
        self.doc.models.append(pending)

    def test(self, node: YNode) -> None:
        m = self.mapping(node, "a test")
        if m is None:
            return
        name = self.string(m, "name", "a test", numbers_ok=True)
        what = f"test `{name}`" if name else "a test"
        self.keys(m, TEST_KEYS, ("name", "event", "expect"), what)
        event_node = m.get("event")
        if event_node is not None and not isinstance(event_node, YMap):
            self.rep.add(f"`event` of {what} must be a mapping (the event), not {describe(event_node)}", event_node.loc)
        expect_node = self.mapping(m.get("expect"), f"`expect` of {what}")
        pending = Pending(spec=None, locs={"test": m.loc})
        expect: dict[str, Any] = {}
        for lname, (knode, vnode) in (expect_node.entries.items() if expect_node else ()):
            key = lname if isinstance(lname, str) else knode.raw
            expect[key] = to_plain(vnode)
            pending.locs["expect." + key] = knode.loc
            pending.locs["expect_value." + key] = vnode.loc
        if name is None or not isinstance(event_node, YMap):
            return
        pending.spec = PolicyTest(name=name, event=to_plain(event_node), expect=expect, loc=m.loc)
        self.doc.tests.append(pending)


def _finite(value: Any) -> bool:
    """A real number that floats can hold (not bool, NaN, infinity, or an int beyond 2**63)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def path_text_ok(text: str) -> bool:
    """Whether ``text`` can name a file: no control characters (NUL cannot reach the OS) and no lone surrogates."""
    return not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or 0xD800 <= ord(ch) < 0xE000 for ch in text)
