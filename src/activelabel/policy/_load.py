"""Loading a policy: read files, resolve ``include:``, merge, check references, version.

    load_policy(path)            # PolicyError(issues=[...]) listing every problem
    load_policy_text(text, ...)  # same, from a string (tests, the HTTP service)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from activelabel.errors import CELSyntaxError, PolicyError

from ._build import FileBuilder, FileDoc, Pending, coerce, constant_problem
from ._report import Reporter
from ._spec import (
    API_VERSION,
    KIND,
    RESERVED_NAMES,
    EnricherSpec,
    LabelSpec,
    Metadata,
    ModelSpec,
    Policy,
    PolicyTest,
    RuleSpec,
)
from ._suggest import did_you_mean
from ._yaml import Loc, expr_position, parse_yaml

# Identifiers CEL itself defines (type names usable in `type(x) == int`).
CEL_BUILTIN_IDENTS = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "dyn"}
)


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Load, merge and validate the policy at ``path``.

    Raises `PolicyError` carrying every problem found (file:line:column, rule id,
    suggestion, caret excerpt); relative paths inside the policy are relative to
    the policy file.

    >>> policy = load_policy("policy.yaml")          # doctest: +SKIP
    >>> list(policy.labels), policy.version           # doctest: +SKIP
    """
    file = os.fspath(path)
    rep = Reporter()
    try:
        text = _read_text(Path(file))
    except OSError as exc:
        rep.add(f"cannot read policy file: {exc.strerror or exc}", Loc(file, 0, 0))
        raise PolicyError(issues=rep.sorted_issues()) from exc
    return _load(text, file, Path(file).parent, Path(file).resolve(), rep)


def load_policy_text(text: str, filename: str = "<string>", base_dir: str | os.PathLike[str] | None = None) -> Policy:
    """Load a policy from ``text``; ``filename`` names it in errors, ``base_dir`` anchors relative paths.

    ``base_dir`` defaults to the directory of ``filename`` when that is a real
    path, else the working directory.
    """
    if base_dir is None:
        base = Path(filename).parent if not filename.startswith("<") else Path.cwd()
    else:
        base = Path(base_dir)
    key = (base / Path(filename).name).resolve() if not filename.startswith("<") else None
    return _load(text, filename, base, key, Reporter())


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OSError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _display(parent_file: str, parent_base: Path, include: str) -> str:
    if os.path.isabs(include):
        return os.path.normpath(include)
    if parent_file.startswith("<"):
        return os.path.normpath(str(parent_base / include))
    return os.path.normpath(os.path.join(os.path.dirname(parent_file), include))


def _load(text: str, file: str, base_dir: Path, key: Path | None, rep: Reporter) -> Policy:
    docs: list[FileDoc] = []
    seen: set[Path] = set()
    read_paths: list[Path] = [key] if key is not None else []

    def visit(text: str, file: str, base: Path, key: Path | None, chain: list[tuple[Path | None, str]], is_root: bool) -> None:
        rep.add_source(file, text)
        root, problems = parse_yaml(text, file)
        for p in problems:
            rep.add(p.message, p.loc, suggestion=p.suggestion)
        builder = FileBuilder(rep, file, base)
        # A file that does not parse contributes nothing (and is not also reported as empty).
        doc = builder.doc if root is None and problems else builder.build(root, is_root=is_root)
        for inc, loc in doc.includes:
            inc_path = Path(inc) if os.path.isabs(inc) else base / inc
            inc_key = inc_path.resolve()
            inc_file = _display(file, base, inc)
            chain_keys = [k for k, _ in chain] + [key]
            if inc_key in chain_keys:
                names = [f for _, f in chain] + [file]
                cycle = " -> ".join(names[chain_keys.index(inc_key):] + [inc_file])
                rep.add(f"include cycle: {cycle}", loc, suggestion="remove one of the includes")
                continue
            if inc_key in seen:  # included twice through different files: merge it once
                continue
            try:
                inc_text = _read_text(inc_path)
            except OSError as exc:
                reason = "file not found" if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc))
                rep.add(f"cannot include `{inc}`: {reason} ({inc_path})", loc)
                continue
            seen.add(inc_key)
            read_paths.append(inc_key)
            visit(inc_text, inc_file, inc_path.parent, inc_key, chain + [(key, file)], False)
        docs.append(doc)

    if key is not None:
        seen.add(key)
    visit(text, file, base_dir, key, [], True)
    root_doc = docs[-1]
    merged = _Merger(rep)
    for doc in docs:
        merged.add(doc)
    merged.check()
    if rep.issues:
        raise PolicyError(issues=rep.sorted_issues())
    metadata = root_doc.metadata or Metadata()
    policy_parts = merged.result()
    dependencies = tuple(
        dict.fromkeys(
            [*read_paths]
            + [e.path.resolve() for e in policy_parts["enrichers"]]
            + [m.path.resolve() for m in policy_parts["models"]]
        )
    )
    canonical = canonical_form(root_doc.api_version or API_VERSION, root_doc.kind or KIND, metadata, **policy_parts)
    data = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=_json_default)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    version = digest + (f"/{metadata.version}" if metadata.version else "")
    return Policy(
        api_version=root_doc.api_version or API_VERSION,
        kind=root_doc.kind or KIND,
        metadata=metadata,
        digest=digest,
        version=version,
        source=file,
        base_dir=base_dir,
        files=tuple(rep.file_order),
        dependencies=dependencies,
        canonical_json=data,
        **policy_parts,
    )


class _Merger:
    """Merges file docs in order, then runs the checks that need the whole policy."""

    def __init__(self, rep: Reporter) -> None:
        self.rep = rep
        self.labels: dict[str, Pending] = {}
        self.rules: list[Pending] = []
        self.enrichers: list[Pending] = []
        self.models: list[Pending] = []
        self.tests: list[Pending] = []
        self.declared_enrichers: set[str] = set()

    def add(self, doc: FileDoc) -> None:
        for p in doc.labels:
            spec: LabelSpec = p.spec
            first = self.labels.get(spec.name)
            if first is not None:
                self.rep.add(f"label `{spec.name}` is declared twice (first at {first.spec.loc})", spec.loc)
                continue
            p.spec = replace(spec, index=len(self.labels))
            self.labels[spec.name] = p
        self.rules += doc.rules
        self.enrichers += doc.enrichers
        self.models += doc.models
        self.tests += doc.tests
        self.declared_enrichers.update(doc.enricher_names)

    # ---- checks over the merged policy ----

    def check(self) -> None:
        self.enricher_names = [p.spec.name for p in self._unique_enrichers()]
        scope = set(RESERVED_NAMES) | set(self.enricher_names) | (self.declared_enrichers - set(RESERVED_NAMES))
        for p in self.labels.values():
            self.check_refs(p, p.spec.name, scope, rule_id=None)
        self.check_rules(scope)
        for p in self.enrichers:
            self.check_refs(p, None, {"event", "now"}, rule_id=None, what="an enricher key")
            self.read_table(p)
        self.check_models(scope)
        self.check_tests()

    def _unique_enrichers(self) -> list[Pending]:
        seen: dict[str, Pending] = {}
        out = []
        for p in self.enrichers:
            first = seen.get(p.spec.name)
            if first is not None:
                self.rep.add(f"duplicate enricher name `{p.spec.name}` (first at {first.spec.loc})", p.locs.get("name", p.spec.loc))
                continue
            seen[p.spec.name] = p
            out.append(p)
        self.enrichers = out
        return out

    def label_problem(self, name: str, loc: Loc, rule_id: str | None, where: str = "") -> LabelSpec | None:
        p = self.labels.get(name)
        if p is None:
            self.rep.add(f"unknown label `{name}`{where}", loc, rule_id=rule_id, suggestion=did_you_mean(name, self.labels))
            return None
        return p.spec

    def check_rules(self, scope: set[str]) -> None:
        ids: dict[str, Pending] = {}
        kept: list[Pending] = []
        for p in self.rules:
            spec: RuleSpec = p.spec
            rid = spec.id or None
            if rid is not None:
                first = ids.get(rid)
                if first is not None:
                    self.rep.add(
                        f"duplicate rule id `{rid}` (first at {first.locs.get('id', first.spec.loc)})",
                        p.locs.get("id", spec.loc),
                        rule_id=rid,
                        suggestion="rule ids must be unique; rename one",
                    )
                else:
                    ids[rid] = p
            label = None
            if spec.label:
                label = self.label_problem(spec.label, p.locs.get("label", spec.loc), rid)
            if label is not None and label.type == "bucket":
                self.rep.add(
                    f"bucket label `{label.name}` takes its value from `from`; rules cannot set it",
                    p.locs.get("label", spec.loc),
                    rule_id=rid,
                    suggestion="set a non-bucket label, or change `from`",
                )
            elif label is not None and p.extra.get("check_value") and self.labels[label.name].extra.get("valid"):
                problem = constant_problem(label, spec.value)
                if problem:
                    self.rep.add(problem[0], p.locs["value"], rule_id=rid, suggestion=problem[1])
                else:
                    p.spec = spec = replace(spec, value=coerce(label, spec.value))
            self.check_refs(p, spec.label if label is not None else None, scope, rule_id=rid)
            kept.append(p)
        self.rules = [replace(p, spec=replace(p.spec, index=i)) for i, p in enumerate(kept)]

    def check_refs(
        self, p: Pending, own_label: str | None, scope: set[str], *, rule_id: str | None, what: str | None = None
    ) -> None:
        """Every free identifier must be in scope; `labels.x` must name a label declared before ``own_label``.

        Expressions whose references are fine are then compiled against the scope,
        which catches unknown functions (``event.path.startswith``) at load time.
        """
        bad_fields: set[str] = set()
        self._check_refs(p, own_label, scope, rule_id=rule_id, what=what, bad_fields=bad_fields)
        self._compile_check(p, scope, rule_id, bad_fields)

    def _compile_check(self, p: Pending, scope: set[str], rule_id: str | None, bad_fields: set[str]) -> None:
        from activelabel import cel

        compile_fn = getattr(cel, "compile", None)
        if compile_fn is None:
            return
        names = sorted(scope)
        for field_name, expr, node in p.exprs:
            if field_name in bad_fields or expr.ast is None:
                continue
            try:
                compile_fn(expr.ast, names=names)
            except CELSyntaxError as exc:
                source = self.rep.texts.get(node.loc.file, "")
                line, col = expr_position(node, source, exc.line, exc.column, expr.source)
                self.rep.add(
                    f"in `{field_name}`: {exc.message}",
                    Loc(node.loc.file, line, col),
                    rule_id=rule_id,
                    suggestion=_function_hint(exc.message),
                )
            except Exception as exc:  # a compiler bug must not hide the rest of the report
                self.rep.add(f"in `{field_name}`: cannot compile: {exc}", expr.loc, rule_id=rule_id)

    def _check_refs(
        self, p: Pending, own_label: str | None, scope: set[str], *, rule_id: str | None, what: str | None,
        bad_fields: set[str],
    ) -> None:  # fmt: skip
        order = list(self.labels)
        own_index = order.index(own_label) if own_label in self.labels else None
        for field_name, path, loc, member_loc in p.refs:
            root = path[0]
            if root == "labels" and "labels" in scope:
                if len(path) < 2:
                    continue
                name = path[1]
                earlier = order[:own_index] if own_index is not None else order
                if name not in self.labels:
                    bad_fields.add(field_name)
                    self.rep.add(
                        f"unknown label `{name}` in `{field_name}`",
                        member_loc,
                        rule_id=rule_id,
                        suggestion=did_you_mean(name, earlier) or did_you_mean(name, order),
                    )
                elif own_index is not None and order.index(name) >= own_index:
                    bad_fields.add(field_name)
                    which = "the label being set here" if name == own_label else f"declared after `{own_label}`"
                    self.rep.add(
                        f"`{field_name}` reads `labels.{name}`, {which}; only labels declared earlier can be read",
                        member_loc,
                        rule_id=rule_id,
                        suggestion=f"declare `{name}` before `{own_label}` under `labels:`",
                    )
                continue
            if root in scope or root in CEL_BUILTIN_IDENTS:
                continue
            candidates = sorted(scope)
            bad_fields.add(field_name)
            kind = what or "an expression"
            self.rep.add(
                f"unknown identifier `{root}` in `{field_name}`: not an enricher or one of {', '.join(sorted(s for s in scope if s in RESERVED_NAMES))}",
                loc,
                rule_id=rule_id,
                suggestion=did_you_mean(root, candidates) or f"names in scope for {kind}: {', '.join(candidates)}",
            )

    def read_table(self, p: Pending) -> None:
        from activelabel.enrich import EnricherError, read_table_file

        spec: EnricherSpec = p.spec
        try:
            table = read_table_file(
                spec.path, spec.format, key_field=spec.key_field, table=spec.table, key_column=spec.key_column
            )
        except EnricherError as exc:
            self.rep.add(f"enricher `{spec.name}`: {exc}", p.locs.get("file", spec.loc), suggestion=exc.suggestion)
            return
        p.spec = replace(spec, sha256=table.sha256, _rows=table.rows)

    def check_models(self, scope: set[str]) -> None:
        names: dict[str, Pending] = {}
        for p in self.models:
            spec: ModelSpec = p.spec
            first = names.get(spec.name)
            if first is not None:
                self.rep.add(f"duplicate model name `{spec.name}` (first at {first.spec.loc})", p.locs.get("name", spec.loc))
            names.setdefault(spec.name, p)
            label = self.label_problem(spec.label, p.locs.get("label", spec.loc), None)
            if label is not None and label.type == "bucket":
                self.rep.add(f"bucket label `{label.name}` takes its value from `from`; a model cannot set it", p.locs.get("label", spec.loc))
                label = None
            if label is not None and not spec.abstains_on_error and self.labels[label.name].extra.get("valid"):
                problem = constant_problem(label, spec.on_error)
                if problem:
                    self.rep.add(
                        f"`on_error` of model `{spec.name}`: {problem[0]}",
                        p.locs.get("on_error", spec.loc),
                        suggestion=problem[1] or 'or use "abstain"',
                    )
                else:
                    p.spec = replace(spec, on_error=coerce(label, spec.on_error))
            if spec.type in ("sklearn", "onnx") and not spec.path.is_file():
                self.rep.add(f"model `{spec.name}`: file `{spec.path_text}` not found ({spec.path})", p.locs.get("path", spec.loc))
            self.check_refs(p, label.name if label else None, scope, rule_id=None, what="a model feature")
        self.models = [replace(p, spec=replace(p.spec, index=i)) for i, p in enumerate(self.models)]

    def check_tests(self) -> None:
        for i, p in enumerate(self.tests):
            spec: PolicyTest = p.spec
            expect = dict(spec.expect)
            for name, value in spec.expect.items():
                label = self.label_problem(name, p.locs.get("expect." + name, spec.loc), None, f" in `expect` of test `{spec.name}`")
                if label is None or value is None or not self.labels[name].extra.get("valid"):
                    continue
                problem = constant_problem(label, value)
                if problem:
                    self.rep.add(f"test `{spec.name}`: expected {problem[0]}", p.locs.get("expect_value." + name, spec.loc), suggestion=problem[1])
                else:
                    expect[name] = coerce(label, value)
            p.spec = replace(spec, expect=expect, index=i)

    def result(self) -> dict[str, Any]:
        return {
            "labels": {name: p.spec for name, p in self.labels.items()},
            "rules": [p.spec for p in self.rules],
            "enrichers": [replace(p.spec, index=i) for i, p in enumerate(self.enrichers)],
            "models": [p.spec for p in self.models],
            "tests": [p.spec for p in self.tests],
        }


def _function_hint(message: str) -> str | None:
    """"did you mean `startsWith`?" for CEL's "no such method 'startswith'"."""
    import re

    m = re.search(r"no such (?:function|method) '([^']+)'", message)
    if not m:
        return None
    try:
        from activelabel.cel._functions import FUNCTIONS, METHODS
    except ImportError:  # pragma: no cover - depends on the CEL package's layout
        return None
    names = {n for n in FUNCTIONS if n.isidentifier()} | set(METHODS)
    return did_you_mean(m.group(1), sorted(names))


def canonical_form(
    api_version: str,
    kind: str,
    metadata: Metadata,
    *,
    labels: dict[str, LabelSpec],
    rules: list[RuleSpec],
    enrichers: list[EnricherSpec],
    models: list[ModelSpec],
    tests: list[PolicyTest],
) -> dict[str, Any]:
    """The merged policy as plain data with every default filled in (what the digest hashes).

    Formatting, comments, key order, how the policy is split into includes and
    whether a default is written out do not change it; enricher file contents do
    (through their SHA-256).
    """

    def expr(e: Any) -> str | None:
        return e.source.strip() if e is not None else None

    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": metadata.name,
            "version": metadata.version,
            "owner": metadata.owner,
            "description": metadata.description,
        },
        "labels": [
            {
                "name": l.name,
                "type": l.type,
                "values": list(l.values) if l.values is not None else None,
                "default": {"value": l.default} if l.has_default else None,
                "resolve": l.resolve,
                "description": l.description,
                "owner": l.owner,
                "sensitivity": l.sensitivity,
                "max_cardinality": l.max_cardinality,
                "overflow": l.overflow,
                "window": l.window,
                "from": expr(l.bucket_from),
                "bounds": list(l.bound_texts),
            }
            for l in labels.values()
        ],
        "enrichers": [
            {
                "name": e.name,
                "type": e.type,
                "file": e.file,
                "format": e.format,
                "key": expr(e.key),
                "key_field": e.key_field,
                "table": e.table,
                "key_column": e.key_column,
                "description": e.description,
                "sha256": e.sha256,
            }
            for e in enrichers
        ],
        "rules": [
            {
                "id": r.id,
                "label": r.label,
                "value": r.value,
                "value_expr": expr(r.value_expr),
                "when": expr(r.when),
                "confidence": r.confidence,
                "description": r.description,
            }
            for r in rules
        ],
        "models": [
            {
                "name": m.name,
                "label": m.label,
                "type": m.type,
                "path": m.path_text,
                "features": {k: expr(v) for k, v in m.features.items()},
                "min_confidence": m.min_confidence,
                "timeout_ms": m.timeout_ms,
                "on_error": m.on_error,
                "version": m.version,
                "description": m.description,
            }
            for m in models
        ],
        "tests": [{"name": t.name, "event": t.event, "expect": dict(t.expect)} for t in tests],
    }


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return {"$bytes": bytes(obj).hex()}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    return repr(obj)
