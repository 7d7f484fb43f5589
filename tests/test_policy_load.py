"""Loading valid policies into the specs the engine compiles (activelabel.policy, Contract 2)."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from activelabel.policy import Policy, did_you_mean, load_policy, load_policy_text

FIXTURES = Path(__file__).parent / "fixtures" / "policies"

HEADER = "apiVersion: activelabel/v1\nkind: Policy\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = HEADER if text.startswith(HEADER) else ""
    path.write_text(head + textwrap.dedent(text[len(head):]))
    return path


@pytest.fixture()
def edge(tmp_path: Path) -> Path:
    """A copy of the edge fixture (policy + include + CSV) in a temporary directory."""
    shutil.copytree(FIXTURES / "edge", tmp_path / "edge")
    return tmp_path / "edge" / "policy.yaml"


def test_labels_keep_declaration_order_with_included_labels_first(edge: Path) -> None:
    """Labels come in declaration order, with an included file's labels before the includer's."""
    policy = load_policy(edge)
    assert isinstance(policy, Policy)
    assert list(policy.labels) == ["tenant_tier", "priority", "latency_band", "customer_domain"]
    assert [spec.index for spec in policy.labels.values()] == [0, 1, 2, 3]


def test_label_fields_and_defaults(edge: Path) -> None:
    """Every label field is read, and the documented defaults fill the ones left out."""
    policy = load_policy(edge)
    prio = policy.labels["priority"]
    assert prio.type == "enum"
    assert prio.values == ("critical", "high", "normal", "low")
    assert prio.default == "normal" and prio.has_default
    assert prio.resolve == "first_match"
    assert prio.owner == "payments-sre"
    assert prio.description == "Routing priority for the ingress."
    assert prio.sensitivity == "internal"
    tier = policy.labels["tenant_tier"]
    assert tier.default is None and not tier.has_default
    domain = policy.labels["customer_domain"]
    assert (domain.max_cardinality, domain.overflow, domain.window, domain.sensitivity) == (1000, "__other__", 3600.0, "pii")


def test_bucket_label_names_and_bounds(edge: Path) -> None:
    """A bucket label exposes its `from` expression, float bounds and bucket names."""
    band = load_policy(edge).labels["latency_band"]
    assert band.bucket_from is not None and band.bucket_from.source == "event.latency_ms"
    assert band.bucket_from.ast is not None
    assert band.bounds == (100.0, 500.0, 1000.0)
    assert band.bucket_names == ("<100", "100-500", "500-1000", ">=1000")
    assert band.bucket_of(20) == "<100" and band.bucket_of(500) == "500-1000" and band.bucket_of(5000) == ">=1000"


def test_bucket_names_keep_bounds_as_written(tmp_path: Path) -> None:
    """Bucket names use each bound's YAML text, so `0.5` and `1e3` stay as written."""
    path = write(
        tmp_path / "p.yaml",
        HEADER
        + """
        labels:
          size:
            type: bucket
            from: event.size
            bounds: [0.5, 10, 1e3]
        """,
    )
    size = load_policy(path).labels["size"]
    assert size.bounds == (0.5, 10.0, 1000.0)
    assert size.bucket_names == ("<0.5", "0.5-10", "10-1e3", ">=1e3")


def test_rules_in_file_order_with_includes_resolved(edge: Path) -> None:
    """Rules come in file order (included first), each with its constant or parsed expressions."""
    policy = load_policy(edge)
    assert [r.id for r in policy.rules] == ["tier-from-table", "pay-5xx", "gold-tenant", "domain"]
    assert [r.index for r in policy.rules] == [0, 1, 2, 3]
    table, pay = policy.rules[0], policy.rules[1]
    assert table.value_expr is not None and table.value_expr.source == "tenant.tier"
    assert table.when is not None and table.when.ast is not None
    assert pay.value == "critical" and pay.value_expr is None and pay.confidence == 0.99
    assert policy.rules[2].confidence == 1.0


def test_specs_know_where_they_were_written(edge: Path) -> None:
    """Each spec's `.loc` names the file (the included one for included specs), line and column."""
    policy = load_policy(edge)
    tier_rule = policy.rules[0]
    assert tier_rule.loc.file.endswith("registry.yaml") and tier_rule.loc.line == 11
    assert policy.labels["priority"].loc.file == str(edge)
    assert (policy.labels["priority"].loc.line, policy.labels["priority"].loc.column) == (8, 3)
    assert policy.rules[1].when is not None
    assert (policy.rules[1].when.loc.line, policy.rules[1].when.loc.column) == (29, 11)


def test_enricher_file_is_relative_to_the_including_file(edge: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An enricher path is resolved from the file that declares it, not the working directory."""
    monkeypatch.chdir(tmp_path)
    policy = load_policy(edge)
    (spec,) = policy.enrichers
    assert spec.name == "tenant" and spec.format == "csv" and spec.key.source == "event.tenant_id"
    assert spec.path == edge.parent / "data" / "tenants.csv"
    assert spec.build().lookup("t1") == {"tenant_id": "t1", "tier": "gold", "region": "eu"}


def test_policy_tests_and_metadata(edge: Path) -> None:
    """The `tests:` block and `metadata` are parsed; a null expectation means the label is absent."""
    policy = load_policy(edge)
    assert [t.name for t in policy.tests] == ["payment failure is critical", "unknown tenant has no tier"]
    assert policy.tests[0].event == {"path": "/pay/1", "status": 503, "tenant_id": "t1", "latency_ms": 20}
    assert policy.tests[1].expect == {"tenant_tier": None, "priority": "normal", "latency_band": "500-1000"}
    assert policy.metadata.name == "edge-requests" and policy.metadata.version == "7"
    assert policy.source == str(edge) and policy.base_dir == edge.parent


def test_version_is_digest_plus_metadata_version(edge: Path) -> None:
    """`version` is "sha256:<hex>" of the canonical form, plus "/<metadata.version>"."""
    policy = load_policy(edge)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", policy.digest)
    assert policy.version == policy.digest + "/7"
    assert policy.canonical()["labels"][0]["name"] == "tenant_tier"


def test_version_ignores_formatting_comments_and_written_defaults(tmp_path: Path) -> None:
    """Comments, key order, flow vs block style and explicitly written defaults leave the digest unchanged."""
    a = write(
        tmp_path / "a.yaml",
        HEADER
        + """
        labels:
          p: {type: enum, values: [x, y]}
        rules:
          - {id: r, label: p, value: x, when: "event.a == 1"}
        """,
    )
    b = write(
        tmp_path / "b.yaml",
        """
        # same policy, written differently
        kind: Policy
        apiVersion: activelabel/v1
        rules:
          - when: event.a == 1     # a comment
            value: x
            label: p
            id: r
            confidence: 1
        labels:
          p:
            values:
              - x
              - y
            type: enum
            resolve: first_match
            sensitivity: internal
        """,
    )
    assert load_policy(a).digest == load_policy(b).digest
    assert load_policy(a).version == load_policy(a).digest


def test_version_changes_with_logic_and_enricher_data(edge: Path) -> None:
    """Changing a rule or the contents of an enricher's table changes the digest."""
    before = load_policy(edge).digest
    csv_path = edge.parent / "data" / "tenants.csv"
    csv_path.write_text(csv_path.read_text() + "t4,gold,us\n")
    after_data = load_policy(edge).digest
    edge.write_text(edge.read_text().replace("confidence: 0.99", "confidence: 0.9"))
    after_rule = load_policy(edge).digest
    assert len({before, after_data, after_rule}) == 3


def test_diamond_include_is_merged_once(tmp_path: Path) -> None:
    """A file included through two paths is merged once, not reported as a duplicate."""
    write(tmp_path / "common.yaml", "labels:\n  base: {type: bool}\n")
    write(tmp_path / "a.yaml", "include: [common.yaml]\nlabels:\n  a: {type: bool}\n")
    write(tmp_path / "b.yaml", "include: [common.yaml]\nlabels:\n  b: {type: bool}\n")
    root = write(tmp_path / "root.yaml", HEADER + "include: [a.yaml, b.yaml]\n")
    assert list(load_policy(root).labels) == ["base", "a", "b"]


def test_load_policy_text_resolves_paths_from_base_dir(tmp_path: Path) -> None:
    """`load_policy_text` names the text in errors and resolves relative paths from `base_dir`."""
    (tmp_path / "t.json").write_text('{"t1": {"tier": "gold"}}')
    text = HEADER + textwrap.dedent(
        """
        enrichers:
          - {name: tenant, type: lookup, file: t.json, key: event.tenant_id}
        labels:
          tier: {type: string}
        rules:
          - {id: r, label: tier, value_expr: tenant.tier}
        """
    )
    policy = load_policy_text(text, filename="inline.yaml", base_dir=tmp_path)
    assert policy.source == "inline.yaml"
    assert policy.enrichers[0].build().lookup("t1") == {"tier": "gold"}


def test_scalar_types_follow_yaml_1_2(tmp_path: Path) -> None:
    """Enum values like `yes`/`no`/`on`/`off` stay strings, and float labels hold floats."""
    path = write(
        tmp_path / "p.yaml",
        HEADER
        + """
        labels:
          answer: {type: enum, values: [yes, no, on, off], default: no}
          flag: {type: bool, default: false}
          score: {type: float, default: 1}
          count: {type: int}
        rules:
          - {id: s, label: score, value: 2}
          - {id: c, label: count, value: 3}
        """,
    )
    policy = load_policy(path)
    assert policy.labels["answer"].values == ("yes", "no", "on", "off")
    assert policy.labels["answer"].default == "no"
    assert policy.labels["flag"].default is False and policy.labels["flag"].has_default
    assert policy.labels["score"].default == 1.0 and isinstance(policy.labels["score"].default, float)
    assert isinstance(policy.rules[0].value, float) and policy.rules[1].value == 3


def test_explicit_null_default_means_absent(tmp_path: Path) -> None:
    """`default: null` is the same as leaving the default out: the label stays absent."""
    path = write(tmp_path / "p.yaml", HEADER + "labels:\n  a: {type: string, default: null}\n")
    label = load_policy(path).labels["a"]
    assert label.default is None and not label.has_default


def test_rules_may_read_labels_declared_earlier(tmp_path: Path) -> None:
    """A rule may read `labels.<name>` of a label declared before its own label."""
    path = write(
        tmp_path / "p.yaml",
        HEADER
        + """
        labels:
          tier: {type: enum, values: [gold, silver]}
          priority: {type: enum, values: [high, low]}
        rules:
          - {id: r, label: priority, value: high, when: 'labels.tier == "gold" && has(labels.tier)'}
        """,
    )
    assert load_policy(path).rules[0].label == "priority"


def test_models_are_parsed_with_defaults(tmp_path: Path) -> None:
    """Models are shape-checked: path relative to the policy, features as CEL, documented defaults."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "clf.skops").write_bytes(b"model")
    path = write(
        tmp_path / "p.yaml",
        HEADER
        + """
        labels:
          intent: {type: enum, values: [buy, browse]}
        models:
          - name: intent-clf
            label: intent
            type: sklearn
            path: models/clf.skops
            features: {n_items: size(event.items), path: event.path}
          - name: online
            label: intent
            type: river
            path: models/online.pkl
            min_confidence: 0.7
            timeout_ms: 5
            on_error: browse
            breaker_failures: 3
            breaker_cooldown_s: 10
        """,
    )
    clf, online = load_policy(path).models
    assert clf.path == tmp_path / "models" / "clf.skops" and clf.type == "sklearn"
    assert list(clf.features) == ["n_items", "path"] and clf.features["n_items"].source == "size(event.items)"
    assert (clf.min_confidence, clf.timeout_ms, clf.on_error, clf.abstains_on_error) == (0.0, 50.0, "abstain", True)
    assert (online.min_confidence, online.timeout_ms, online.on_error, online.abstains_on_error) == (0.7, 5.0, "browse", False)
    assert (clf.breaker_failures, online.breaker_failures, online.breaker_cooldown_s) == (None, 3, 10.0)


def test_did_you_mean_suggests_the_closest_name() -> None:
    """`did_you_mean` proposes the closest candidate, or nothing when none is close."""
    assert did_you_mean("priorty", ["priority", "tenant_tier"]) == "did you mean `priority`?"
    assert did_you_mean("zzz", ["priority", "tenant_tier"]) is None


def test_dependencies_list_every_file_the_policy_reads(edge: Path) -> None:
    """`dependencies` names the policy files and enricher tables, resolved, for reload watchers."""
    policy = load_policy(edge)
    root = edge.parent.resolve()
    assert policy.dependencies == (root / "policy.yaml", root / "registry.yaml", root / "data" / "tenants.csv")
    assert policy.files == (str(edge), str(edge.parent / "registry.yaml"))


def test_public_names_are_sorted_and_exported() -> None:
    """`activelabel.policy.__all__` is sorted and every name in it exists."""
    import activelabel.enrich
    import activelabel.policy

    for module in (activelabel.policy, activelabel.enrich):
        assert module.__all__ == sorted(module.__all__)
        assert all(hasattr(module, name) for name in module.__all__)


def test_yaml_merge_keys_share_rule_fields(tmp_path: Path) -> None:
    """`<<: *anchor` fills in the keys a rule does not write itself."""
    path = write(
        tmp_path / "p.yaml",
        HEADER
        + """
        labels:
          p: {type: enum, values: [a, b]}
        rules:
          - &base {id: one, label: p, value: a, confidence: 0.5, when: event.x > 1}
          - <<: *base
            id: two
            value: b
        """,
    )
    one, two = load_policy(path).rules
    assert (two.id, two.value, two.confidence) == ("two", "b", 0.5)
    assert one.when is not None and two.when is not None and two.when.source == one.when.source


def test_include_patterns_expand_in_name_order(tmp_path: Path) -> None:
    """An include with a glob pattern merges every matching file, sorted by name."""
    write(tmp_path / "labels" / "20-b.yaml", "labels:\n  b: {type: bool}\n")
    write(tmp_path / "labels" / "10-a.yaml", "labels:\n  a: {type: bool}\n")
    root = write(tmp_path / "root.yaml", HEADER + "include: [labels/*.yaml, '*.yaml']\nlabels:\n  c: {type: bool}\n")
    write(tmp_path / "30-d.yaml", "labels:\n  d: {type: bool}\n")
    assert list(load_policy(root).labels) == ["a", "b", "d", "c"]  # the including file never includes itself


def test_json_schema_describes_the_format() -> None:
    """`policy_json_schema` gives a JSON-serialisable schema with the loader's keys and defaults."""
    import json

    from activelabel.policy import policy_json_schema

    schema = json.loads(json.dumps(policy_json_schema()))
    props = schema["properties"]
    assert props["apiVersion"] == {"const": "activelabel/v1"}
    assert props["rules"]["items"]["required"] == ["id", "label"]
    assert props["labels"]["additionalProperties"]["properties"]["resolve"]["default"] == "first_match"
    assert "lookup" in props["enrichers"]["items"]["properties"]["type"]["enum"]


def test_a_loaded_policy_pickles(edge: Path) -> None:
    """A policy survives pickling (worker processes), tables and positions included."""
    import pickle

    policy = load_policy(edge)
    copy = pickle.loads(pickle.dumps(policy))
    assert copy.version == policy.version
    assert copy.rules[0].loc == policy.rules[0].loc
    assert copy.enrichers[0].build().lookup("t2")["tier"] == "silver"
