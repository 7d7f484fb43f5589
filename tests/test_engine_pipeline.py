"""The compile pipeline (plan → index → generate → exec), the injected clock on every path, and the record loop."""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from activelabel import Labeler, cel, load_policy_text
from activelabel.engine.compile import CompiledPolicy, compile_policy
from activelabel.engine.index import MIN_DISPATCH_RUN, Dispatch, index_plan, index_rules
from activelabel.engine.plan import RulePlan, compile_plan
from activelabel.engine.record_loop import RecordLoop
from activelabel.sources.jsonl import ReadLimits

INDEXED = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: indexed}
labels:
  tier: {type: enum, values: [gold, silver, bronze, none], default: none}
  agent: {type: enum, values: [bot, curl, browser]}
rules:
  - {id: t1, label: tier, value: gold, when: 'event.tenant == "acme"'}
  - {id: t2, label: tier, value: silver, when: 'event.tenant in ["b", "acme"]'}
  - {id: t3, label: tier, value: bronze, when: '"d" == event.tenant'}
  - {id: t4, label: tier, value: gold, when: 'event.status == 7'}
  - {id: a1, label: agent, value: bot, when: 'event.ua.matches("(?i)bot")'}
  - {id: a2, label: agent, value: curl, when: 'event.ua.matches("^curl/")'}
  - {id: a3, label: agent, value: browser, when: 'event.ua.matches("Mozilla")'}
"""

CLOCKED = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: clocked}
labels:
  era: {type: enum, values: [future, present], default: present}
  year: {type: int}
  by_model: {type: enum, values: [future, present]}
rules:
  - {id: e1, label: era, value: future, when: 'now > timestamp("2100-01-01T00:00:00Z")'}
  - {id: y1, label: year, value_expr: 'now.getFullYear()', when: 'has(event.want_year)'}
tests:
  - name: the injected clock says it is the future
    event: {want_year: true}
    expect: {era: future, year: 2101}
"""

FUTURE = datetime(2101, 6, 1, 12, 0, tzinfo=UTC)


def _rules(text: str, label: str) -> list[RulePlan]:
    plan = compile_plan(load_policy_text(text))
    return next(lp.rules for lp in plan.labels if lp.spec.name == label)


def test_the_index_pass_folds_a_run_of_equality_tests_on_one_field_into_one_lookup():
    """Three rules testing event.tenant become one dict step mapping each value to the earliest rule; the next field starts a new step."""
    steps = index_rules(_rules(INDEXED, "tier"))
    assert isinstance(steps[0], Dispatch) and steps[0].kind == "eq"
    assert [rp.spec.id for rp in steps[0].rules] == ["t1", "t2", "t3"]
    assert steps[0].table == {"acme": ("gold", steps[0].rules[0].source_idx), "b": ("silver", steps[0].rules[1].source_idx),
                              "d": ("bronze", steps[0].rules[2].source_idx)}
    assert isinstance(steps[1], RulePlan) and steps[1].spec.id == "t4"  # another field: not part of the run


def test_the_index_pass_folds_a_run_of_matches_into_one_regex_set_giving_the_earliest_rule():
    """Three `matches` rules on one field become one RE2 set pass that answers like the chain (earliest match wins)."""
    (step,) = index_rules(_rules(INDEXED, "agent"))
    assert isinstance(step, Dispatch) and step.kind == "rx" and step.matcher is not None
    assert step.matcher("curl/8 Mozilla-compatible bot")[0] == "bot"
    assert step.matcher("curl/8")[0] == "curl"
    assert step.matcher("lynx") is None


def test_runs_shorter_than_the_minimum_and_conflict_tracking_stay_rule_by_rule():
    """A run below MIN_DISPATCH_RUN is not folded, and with every rule evaluated (conflicts) nothing is."""
    rules = _rules(INDEXED, "tier")[: MIN_DISPATCH_RUN - 1]
    assert all(isinstance(s, RulePlan) for s in index_rules(rules))
    plan = compile_plan(load_policy_text(INDEXED))
    assert all(isinstance(s, RulePlan) for steps in index_plan(plan, every_rule=True) for s in steps)


def test_compile_policy_gives_a_compiled_policy_whose_function_labels_like_the_labeler():
    """compile_policy's function gives the same labels as Labeler.label, and its source is shown as the labeler's is."""
    policy = load_policy_text(INDEXED)
    compiled = compile_policy(policy)
    assert isinstance(compiled, CompiledPolicy)
    labeler = Labeler(policy)
    event = {"tenant": "b", "ua": "curl/8"}
    assert compiled.fn(dict(event))[0] == labeler.label(event).labels == {"tier": "silver", "agent": "curl"}
    assert compiled.source.startswith("def label_event(event):") and labeler.generated_source.startswith("def label_event(event):")


def test_generated_source_names_each_rule_id_with_its_file_and_line(write_policy):
    """Every rule of the policy appears in a comment of the generated function with its file and line, folded runs included."""
    path = write_policy(INDEXED)
    labeler = Labeler.from_file(path)
    source = labeler.generated_source
    for rule in labeler.policy.rules:
        assert f"rule {rule.id} ({path}:{rule.loc.line})" in source
    assert "3 rules as one dict lookup" in source and "3 rules as one RE2 set" in source


class Fault(BaseException):
    """A failure no handler of the engine absorbs: stands in for a crash inside a rule's evaluation."""


class Unhashable(str):
    """A field value whose hashing crashes, so the dict lookup of a folded run is where the traceback points."""

    def __hash__(self) -> int:
        raise Fault


def test_a_traceback_through_the_generated_function_can_be_read_back_to_the_rules(write_policy):
    """The line a traceback points at in the generated function sits under the comment naming the rules of that step."""
    path = write_policy(INDEXED)
    labeler = Labeler.from_file(path)
    with pytest.raises(Fault) as info:
        labeler.label({"tenant": Unhashable("acme"), "ua": "lynx"})
    frame = [f for f in traceback.extract_tb(info.tb) if f.filename.startswith("<activelabel policy")][-1]
    above = [line.strip() for line in labeler.generated_source.splitlines()[: frame.lineno - 1]]
    comment = next(line for line in reversed(above) if line.startswith("#"))
    lines = {r.id: r.loc.line for r in labeler.policy.rules}
    assert comment == ("# 3 rules as one dict lookup: "
                       + ", ".join(f"rule {rid} ({path}:{lines[rid]})" for rid in ("t1", "t2", "t3")))


def test_a_decision_holds_the_compiled_policy_and_stays_explainable_without_its_labeler():
    """A Decision keeps working (sources, explain) after its Labeler is gone: it holds the compiled policy."""
    decision = Labeler(load_policy_text(INDEXED)).label({"tenant": "acme", "ua": "Mozilla"})
    assert decision.sources == {"tier": "rule:t1", "agent": "rule:a3"}
    assert decision.explain()["labels"]["tier"]["lost"] == ["rule:t2"]


class YearModel:
    """A model plug-in (the ModelLabeler protocol) that answers from a feature reading CEL's `now`."""

    name = "year-model"
    label = "by_model"
    version = "1"

    def __init__(self) -> None:
        self.feature_programs = {"year": cel.compile("now.getFullYear()")}
        self.batch_calls = 0

    def predict(self, features: dict[str, Any]) -> tuple[Any, float] | None:
        year = features.get("year")
        return None if year is None else ("future" if year >= 2100 else "present", 0.9)

    def predict_batch(self, rows: list[dict[str, Any]]) -> list[tuple[Any, float] | None]:
        self.batch_calls += 1
        return [self.predict(r) for r in rows]

    def state(self) -> dict[str, Any]:
        return {"batch_calls": self.batch_calls}


def test_an_injected_now_reaches_label_explain_exact_batch_models_and_policy_tests():
    """With now injected as a day in 2101, label, explain, label_exact, label_batch (model features too) and run_tests all see 2101."""
    model = YearModel()
    labeler = Labeler(load_policy_text(CLOCKED), now=lambda: FUTURE, models=[model])
    event = {"want_year": True}
    want = {"era": "future", "year": 2101, "by_model": "future"}
    decision = labeler.label(event)
    assert decision.labels == want
    explained = decision.explain()["labels"]
    assert {name: e["value"] for name, e in explained.items()} == want
    assert explained["era"]["matched"] == ["rule:e1"] and explained["year"]["matched"] == ["rule:y1"]
    assert explained["by_model"]["candidates"][0]["value"] == "future"  # re-decided now, not only copied
    assert labeler.label_exact(event) == want
    batch = labeler.label_batch([event, {"other": 1}])
    assert model.batch_calls == 1  # the batch model path, where features were computed per batch
    assert [d.labels for d in batch] == [want, {"era": "future", "by_model": "future"}]
    (result,) = labeler.run_tests()
    assert result.passed, result.mismatches


def test_every_path_agrees_under_an_injected_clock_that_moves():
    """For a clock stepping across 2100, label == explain == exact == batch at every step (each path reads the same injected now)."""
    times = [datetime(2099, 12, 31, 23, 59, tzinfo=UTC), datetime(2100, 1, 1, 0, 1, tzinfo=UTC)]
    current = [times[0]]
    labeler = Labeler(load_policy_text(CLOCKED), now=lambda: current[0], models=[YearModel()])
    events = [{"want_year": True}, {}, {"want_year": False}]
    for t in times:
        current[0] = t
        for event in events:
            labels = labeler.label(event).labels
            explained = labeler.label(event).explain()["labels"]
            assert labels == {n: e["value"] for n, e in explained.items() if e["set"]}
            assert labels == labeler.label_exact(event)
            assert labels["era"] == ("future" if t.year >= 2100 else "present")
        assert [d.labels for d in labeler.label_batch(events)] == [labeler.label(e).labels for e in events]


class ListOutput:
    """A RecordOutput that keeps what reached it (the loop's test double, as consumertest.LogsSink is the Collector's)."""

    def __init__(self, refuse_over: int | None = None) -> None:
        self.lines: list[bytes] = []
        self.dead: list[tuple[Any, str]] = []
        self.refuse_over = refuse_over

    def write_many(self, where: list[Any], lines: list[bytes]) -> list[tuple[int, str, str]]:
        refused = []
        for i, line in enumerate(lines):
            if self.refuse_over is not None and len(line) > self.refuse_over:
                refused.append((i, "output_too_large", "over the limit"))
            else:
                self.lines.append(line)
        return refused

    def dead_letter(self, where: Any, raw: bytes | None, kind: str, reason: str) -> None:
        self.dead.append((where, kind))


RECORDS = [b'{"tenant": "acme", "ua": "curl/1"}', b"", b"not json", b"[1]", b'{"tenant": "b"}\r', b'{"tenant": "d",  "ua": "' + b"x" * 200 + b'"}']


def test_the_record_loop_writes_or_dead_letters_every_record_and_the_counts_add_up():
    """Each non-blank record ends in the output or the DLQ with a kind, and records_in == labeled + dead_lettered."""
    labeler = Labeler(load_policy_text(INDEXED))
    out = ListOutput()
    counts = RecordLoop(labeler, limits=ReadLimits()).run([("f", RECORDS)], out)
    assert counts.records_in == 5 and counts.labeled == 3 and counts.dead_lettered == 2
    assert counts.dead_letter_kinds == {"invalid_json": 1, "not_object": 1}
    assert [w for w, _ in out.dead] == [("f", 2), ("f", 3)]  # block origin and position: the file and its line
    assert [orjson.loads(line)["labels"]["tier"] for line in out.lines] == ["gold", "silver", "bronze"]
    assert labeler.stats().events == 3


def test_a_record_the_output_refuses_is_dead_lettered_and_still_counted_once():
    """An output refusing a labeled record (too large for its topic) sends it to the DLQ: the sums still hold."""
    out = ListOutput(refuse_over=150)
    counts = RecordLoop(Labeler(load_policy_text(INDEXED)), limits=ReadLimits()).run([("f", RECORDS)], out)
    assert counts.records_in == counts.labeled + counts.dead_lettered == 5
    assert counts.dead_letter_kinds["output_too_large"] == 1 and len(out.lines) == 2


def test_decision_mode_and_bulk_mode_of_the_loop_write_the_same_labels():
    """With --explain or a decision hook, the loop writes the same labels as the bulk path, plus label_meta."""
    bulk, explained = ListOutput(), ListOutput()
    seen: list[dict[str, Any]] = []
    RecordLoop(Labeler(load_policy_text(INDEXED))).run([("f", RECORDS)], bulk)
    RecordLoop(Labeler(load_policy_text(INDEXED)), explain=True,
               on_decision=lambda event, decision: seen.append(decision.labels)).run([("f", RECORDS)], explained)
    plain = [orjson.loads(line) for line in bulk.lines]
    rich = [orjson.loads(line) for line in explained.lines]
    assert [r["labels"] for r in rich] == [p["labels"] for p in plain] == seen
    assert all("label_meta" in r for r in rich)


def test_labeler_bulk_surface_counts_what_it_labels_and_reports_hits_per_source():
    """label_lines counts its events, and hits_by_source gives per label the sources that set it (what summaries print)."""
    labeler = Labeler(load_policy_text(INDEXED))
    events = [{"tenant": "acme"}, {"tenant": "zzz"}, {"tenant": "acme", "ua": "bot"}]
    result = labeler.label_lines([orjson.dumps(e) for e in events], events)
    assert len(result.lines) == 3 and result.failed == []
    assert labeler.stats().events == 3
    assert labeler.hits_by_source() == {"tier": {"rule:t1": 2, "default": 1}, "agent": {"rule:a1": 1}}
    assert ("rule:t1", "tier", 1.0) in labeler.source_table()


class LabelsOnly:
    """A door's labeler of the smaller shape (labels_only + label), as the stream worker accepts."""

    def __init__(self, labeler: Labeler) -> None:
        self._labeler = labeler

    def labels_only(self, event: dict[str, Any]) -> dict[str, Any]:
        return self._labeler.labels_only(event)

    def label(self, event: dict[str, Any]) -> Any:
        return self._labeler.label(event)


def test_a_labeler_of_the_smaller_shape_runs_through_the_same_loop_with_the_same_output():
    """A labeler offering only labels_only and label is adapted per event and writes exactly what the bulk path writes."""
    bulk, small = ListOutput(), ListOutput()
    a = RecordLoop(Labeler(load_policy_text(INDEXED))).run([("f", RECORDS)], bulk)
    b = RecordLoop(LabelsOnly(Labeler(load_policy_text(INDEXED)))).run([("f", RECORDS)], small)
    assert small.lines == bulk.lines and small.dead == bulk.dead
    assert (b.records_in, b.labeled, b.dead_lettered) == (a.records_in, a.labeled, a.dead_lettered)
