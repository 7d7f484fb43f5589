"""Checks over the merged policy: references, constants, uniqueness, enricher tables.

Files are merged in include order (`Merger.add`); `Merger.check` then runs
every check that needs the whole policy and reports through the `Reporter`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from activelabel.errors import CELSyntaxError

from ._build import FileDoc, Pending
from ._files import ALLOW_HINT, MAX_TABLE_FILE_BYTES, check_regular, outside
from ._report import Reporter
from ._spec import RESERVED_NAMES, EnricherSpec, LabelSpec, ModelSpec, PolicyTest, RuleSpec
from ._suggest import did_you_mean
from ._values import coerce, constant_problem
from ._yaml import Loc, expr_position

# Identifiers CEL itself defines (type names usable in `type(x) == int`).
CEL_BUILTIN_IDENTS = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "dyn"}
)


class Merger:
    """Merges file docs in order, then runs the checks that need the whole policy."""

    def __init__(self, rep: Reporter, roots: tuple[Path, ...] = ()) -> None:
        self.rep = rep
        self.roots = roots  # folders tables may be read from (the policy's own first); empty: anywhere
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
        self.order = list(self.labels)
        self.position = {name: i for i, name in enumerate(self.order)}
        self._unique_enrichers()
        # Incomplete enricher entries keep their names in scope, so rules using them are not also reported.
        scope = set(RESERVED_NAMES) | (self.declared_enrichers - set(RESERVED_NAMES))
        for p in self.labels.values():
            self.check_refs(p, p.spec.name, scope, rule_id=None)
        self.check_rules(scope)
        for p in self.enrichers:
            self.check_refs(p, None, {"event", "now"}, rule_id=None, what="an enricher key")
            self.read_table(p)
        self.check_models(scope)
        self.check_tests()

    def _unique_enrichers(self) -> None:
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

    def _reported_at(self, loc: Loc) -> bool:
        return any((i.file, i.line, i.column) == (loc.file, loc.line, loc.column) for i in self.rep.issues)

    def label_problem(self, name: str, loc: Loc, rule_id: str | None, where: str = "") -> LabelSpec | None:
        p = self.labels.get(name)
        if p is None:
            self.rep.add(f"unknown label `{name}`{where}", loc, rule_id=rule_id, suggestion=did_you_mean(name, self.labels))
            return None
        spec: LabelSpec = p.spec
        return spec

    def check_rules(self, scope: set[str]) -> None:
        ids: dict[str, Pending] = {}
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
            elif "label" in p.locs and not self._reported_at(p.locs["label"]):
                self.rep.add("`label` of a rule must name a label, not be empty", p.locs["label"], rule_id=rid)
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
        self.rules = [replace(p, spec=replace(p.spec, index=i)) for i, p in enumerate(self.rules)]

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
                if Loc(node.loc.file, line, col) in p.extra.get("regex_spots", ()):
                    continue  # the same bad pattern, already reported while reading the file
                self.rep.add(
                    f"in `{field_name}`: {exc.message}",
                    Loc(node.loc.file, line, col),
                    rule_id=rule_id,
                    suggestion=_function_hint(exc.message),
                )
            except Exception as exc:  # noqa: BLE001 - a compiler bug must not hide the rest of the report
                self.rep.add(f"in `{field_name}`: cannot compile: {exc}", expr.loc, rule_id=rule_id)

    def _check_refs(
        self, p: Pending, own_label: str | None, scope: set[str], *, rule_id: str | None, what: str | None,
        bad_fields: set[str],
    ) -> None:  # fmt: skip
        order = self.order
        own_index = self.position.get(own_label) if own_label is not None else None
        for field_name, path, loc, member_loc in p.refs:
            root = path[0].lstrip(".")  # `.event` is CEL's root-scoped `event`
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
                elif own_index is not None and self.position[name] >= own_index:
                    bad_fields.add(field_name)
                    which = "the label being set here" if name == own_label else f"declared after `{own_label}`"
                    self.rep.add(
                        f"`{field_name}` reads `labels.{name}`, {which}; only labels declared earlier can be read",
                        member_loc,
                        rule_id=rule_id,
                        suggestion=None if name == own_label else f"declare `{name}` before `{own_label}` under `labels:`",
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
        from activelabel.enrich import EnricherError, build_enricher, read_table_file

        spec: EnricherSpec = p.spec
        if spec.type == "pii":
            p.spec = replace(spec, _rows={})  # reads no file
            return
        where = p.locs.get("file", spec.loc)
        if self.roots and outside(spec.path, self.roots):
            self.rep.add(
                f"enricher `{spec.name}`: table `{spec.path}` is outside the policy's folder ({self.roots[0]})",
                where, suggestion=f"move it into {self.roots[0]}, or {ALLOW_HINT}",
            )
            return
        try:
            check_regular(spec.path, MAX_TABLE_FILE_BYTES)
        except FileNotFoundError:
            pass  # the table reader says so, with its own hint
        except OSError as exc:
            self.rep.add(f"enricher `{spec.name}`: cannot read table `{spec.path}`: {exc.strerror or exc}", where)
            return
        if spec.type == "novelty":
            from activelabel.enrich._novelty import read_novelty_file

            try:
                index, digest = read_novelty_file(spec.path)
            except EnricherError as exc:
                self.rep.add(f"enricher `{spec.name}`: {exc}", where, suggestion=exc.suggestion)
                return
            p.spec = replace(spec, sha256=digest, _rows=index)
            return
        try:
            table = read_table_file(
                spec.path, spec.format, key_field=spec.key_field, table=spec.table, key_column=spec.key_column
            )
            if spec.type != "lookup":
                build_enricher(spec.type, spec.name, table.rows)  # e.g. every cidr key must be a network
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
            if spec.type in ("sklearn", "onnx") and not _is_file(spec.path):
                self.rep.add(f"model `{spec.name}`: file `{spec.path_text}` not found ({spec.path})", p.locs.get("path", spec.loc))
            self.check_refs(p, label.name if label else None, scope, rule_id=None, what="a model feature")
        self.models = [replace(p, spec=replace(p.spec, index=i)) for i, p in enumerate(self.models)]

    def check_tests(self) -> None:
        names: dict[str, PolicyTest] = {}
        for i, p in enumerate(self.tests):
            spec: PolicyTest = p.spec
            first = names.setdefault(spec.name, spec)
            if first is not spec:  # results are reported by name, so two tests may not share one
                self.rep.add(f"duplicate test name `{spec.name}` (first at {first.loc})", spec.loc)
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
    from activelabel import cel

    return did_you_mean(m.group(1), sorted(cel.function_names()))


def _is_file(path: Path) -> bool:
    """`Path.is_file`, but a name the OS refuses (too long, a loop of links) is "not a file" rather than an OSError."""
    try:
        return path.is_file()
    except OSError:
        return False
