"""Rollout analysis on the same events: shadow diff, sticky canary, Argo-style verdicts, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from activelabel import Labeler
from activelabel.errors import RolloutConflictError, RolloutError
from activelabel.governance.rollout import (
    Rollout,
    RolloutSpec,
    bucket_of,
    mcnemar_p,
    read_state,
    resume_rollout,
)

REPO = Path(__file__).resolve().parents[1]
EDGE_TEXT = (REPO / "examples" / "edge" / "policy.yaml").read_text()
SPEC = {
    "key": "event.tenant_id",
    "steps": [0, 25, 100],
    "interval": "10s",
    "min_events": 200,
    "analysis": [
        {"metric": "label_change_rate", "label": "priority", "max": 0.02},
        {"metric": "rule_error_rate_increase", "max": 0.001},
        {"metric": "latency_p99_ratio", "max": 50},
    ],
    "failure_limit": 0,
    "consecutive_success_limit": 2,
}


def _policy(tmp_path: Path, name: str, *, version: str, extra_rule: str = "") -> Labeler:
    text = EDGE_TEXT.replace('version: "1"', f'version: "{version}"')
    if extra_rule:
        text = text.replace("  - id: server-error-critical", extra_rule + "  - id: server-error-critical")
    path = tmp_path / name
    path.write_text(text)
    (tmp_path / "known_clients.csv").write_text((REPO / "examples/edge/known_clients.csv").read_text())
    return Labeler.from_file(path)


THIRTY_PERCENT_HIGH = """  - id: every-third-tenant-high
    label: priority
    value: high
    when: event.n % 10 < 3
"""


def _events(n: int) -> list[dict[str, object]]:
    return [{"status": 200, "path": f"/page/{i}", "user_agent": "Mozilla/5.0", "bytes": 900, "n": i,
             "tenant_id": f"t{i % 97}", "client_ip": f"10.0.{i % 200}.{i % 7}"} for i in range(n)]


class FakeClock:
    """An injected monotonic clock the test advances (the rollout's only notion of elapsed time)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _drive(rollout: Rollout, clock: FakeClock, events: list[dict[str, object]], rounds: int) -> list[str]:
    states = []
    for r in range(rounds):
        for i, event in enumerate(events):
            rollout.label(event, record_id=f"r{r}-{i}")
        clock.now += 11
        states.append(rollout.tick())
        if states[-1] != "progressing":
            break
    return states


def test_a_candidate_that_changes_priority_on_30_percent_is_rolled_back_with_the_reason(tmp_path: Path) -> None:
    """label_change_rate 0.3 against max 0.02 rolls back at the first measurement, naming value and threshold."""
    serving = _policy(tmp_path, "v1.yaml", version="1")
    candidate = _policy(tmp_path, "v2.yaml", version="2", extra_rule=THIRTY_PERCENT_HIGH)
    clock = FakeClock()
    rollout = Rollout("r1", RolloutSpec.from_mapping(SPEC), serving=serving, candidate=candidate, clock=clock)
    states = _drive(rollout, clock, _events(500), rounds=3)
    assert states == ["rolled_back"]
    status = rollout.status()
    assert status["state"] == "rolled_back" and status["step"] == 0
    assert "label_change_rate[priority] failed at step 0%: measured 0.3" in status["reason"]
    assert "threshold <= 0.02" in status["reason"]
    report = rollout.report()
    assert report["labels"]["priority"]["changed"] == 150
    (transition,) = report["labels"]["priority"]["transitions"]
    assert (transition["from"], transition["to"], transition["count"]) == ("normal", "high", 150)
    assert report["labels"]["priority"]["changed_because"] == {"rule:every-third-tenant-high": 150}
    assert len(transition["examples"]) == 3
    # After the rollback every event is served by the old version again.
    decision, arm = rollout.label(_events(4)[1], record_id="later")
    assert arm == "serving" and decision.policy_version == serving.version


def test_an_equivalent_candidate_is_promoted_through_every_step(tmp_path: Path) -> None:
    """A candidate that only bumps metadata.version passes each step twice in a row and is promoted."""
    serving = _policy(tmp_path, "v1.yaml", version="1")
    candidate = _policy(tmp_path, "v2.yaml", version="2")
    clock = FakeClock()
    steps_seen: list[float] = []
    rollout = Rollout("r2", RolloutSpec.from_mapping(SPEC), serving=serving, candidate=candidate, clock=clock,
                      on_change=lambda r, what: steps_seen.append(r.step))
    states = _drive(rollout, clock, _events(300), rounds=10)
    assert states[-1] == "promoted"
    assert len(states) == 6  # 3 steps x 2 consecutive successes
    assert steps_seen == [25.0, 100.0, 100.0]
    assert rollout.label(_events(1)[0], record_id="x")[1] == "candidate"


def test_too_little_traffic_pauses_as_inconclusive_and_never_passes(tmp_path: Path) -> None:
    """Fewer events than min_events by the end of the interval pauses the rollout (flagger#32): no verdict."""
    serving = _policy(tmp_path, "v1.yaml", version="1")
    candidate = _policy(tmp_path, "v2.yaml", version="2")
    clock = FakeClock()
    rollout = Rollout("r3", RolloutSpec.from_mapping(SPEC), serving=serving, candidate=candidate, clock=clock)
    assert _drive(rollout, clock, _events(50), rounds=1) == ["paused"]
    assert rollout.status()["reason"].startswith("Inconclusive at step 0%: 50 events")
    clock.now += 100
    assert rollout.tick() == "paused"  # a paused rollout waits for an operator
    rollout.abort()
    assert rollout.status()["state"] == "aborted"


def test_the_canary_is_sticky_per_key_and_serves_about_its_share(tmp_path: Path) -> None:
    """The same tenant always lands on the same arm, and about 25% of tenants get the candidate at step 25%."""
    serving = _policy(tmp_path, "v1.yaml", version="1")
    candidate = _policy(tmp_path, "v2.yaml", version="2")
    rollout = Rollout("r4", RolloutSpec.from_mapping(SPEC), serving=serving, candidate=candidate, step_index=1)
    arms = {}
    for event in _events(970):
        _, arm = rollout.label(event, record_id=None)
        assert arms.setdefault(event["tenant_id"], arm) == arm
    share = sum(1 for a in arms.values() if a == "candidate") / len(arms)
    assert 0.1 < share < 0.4
    assert bucket_of("r4", "t1") == bucket_of("r4", "t1") != bucket_of("r5", "t1")


def test_a_persisted_rollout_resumes_at_the_same_step(tmp_path: Path) -> None:
    """A restarted process rebuilds the rollout from its state file at the step it had reached."""
    serving = _policy(tmp_path, "v1.yaml", version="1")
    candidate = _policy(tmp_path, "v2.yaml", version="2")
    clock = FakeClock()
    state_file = tmp_path / "rollout.json"
    rollout = Rollout("r6", RolloutSpec.from_mapping(SPEC), serving=serving, candidate=candidate, clock=clock,
                      state_file=state_file)
    _drive(rollout, clock, _events(300), rounds=2)
    assert rollout.step == 25.0
    assert read_state(state_file)["step_index"] == 1
    again = resume_rollout(state_file, serving=_policy(tmp_path, "v1.yaml", version="1"),
                           candidate=_policy(tmp_path, "v2.yaml", version="2"))
    assert again is not None and again.id == "r6" and again.step == 25.0 and again.state == "progressing"
    with pytest.raises(RolloutError, match="is for candidate"):
        resume_rollout(state_file, serving=serving, candidate=_policy(tmp_path, "v3.yaml", version="3"))


def test_sensitive_labels_report_counts_never_values(tmp_path: Path) -> None:
    """A pii label that changes shows up as a count with `*` transitions, never with its values."""
    serving = _policy(tmp_path, "v1.yaml", version="1")
    text = EDGE_TEXT.replace("value_expr: event.client_ip", "value_expr: event.client_ip + \"/x\"")
    (tmp_path / "v2.yaml").write_text(text)
    candidate = Labeler.from_file(tmp_path / "v2.yaml")
    rollout = Rollout("r7", RolloutSpec.from_mapping(SPEC), serving=serving, candidate=candidate)
    for i, event in enumerate(_events(20)):
        rollout.label(event, record_id=str(i))
    client = rollout.report()["labels"]["client"]
    assert client["sensitive"] and client["changed"] == 20
    assert client["transitions"][0]["from"] == "*" and client["transitions"][0]["to"] == "*"
    assert "10.0." not in str(rollout.report())


def test_a_bad_spec_is_refused_with_every_problem() -> None:
    """Unknown keys, falling steps, unknown metrics and a check without a threshold are all reported at once."""
    with pytest.raises(RolloutError) as info:
        RolloutSpec.from_mapping({"stepz": 1, "steps": [50, 5], "analysis": [{"metric": "nope"},
                                                                           {"metric": "latency_p99_ratio"}],
                                  "interval": "soon"})
    text = str(info.value)
    for expected in ("stepz: unknown key", "steps: [50, 5]: a strictly rising list", "analysis[0].metric: 'nope'",
                     "analysis[1]: latency_p99_ratio: give a `max` or a `min`", "interval: 'soon'"):
        assert expected in text
    assert len(info.value.problems) == 5


# What the review sent (finding 4, 5, 6 and `analysis: "oops"`): each is refused by the field it names,
# with the problem the user has to fix, and never as a Python exception from deep inside.
BAD_SPECS = [
    (["just"], "a rollout spec is a mapping (key, steps, interval, analysis, ...), not a list"),
    ({"key": "event.client_ip +++"}, "key: 'event.client_ip +++' is not valid CEL: unexpected '+'"),
    ({"key": "event."}, "key: 'event.' is not valid CEL"),
    ({"key": 42}, "key: 42: write record_id or a CEL expression over the event"),
    ({"key": "42"}, "key: '42' does not read the event: every entity would land on the same arm"),
    ({"key": "event.a + other.b"}, "key: 'event.a + other.b' reads other: a key can read only `event`"),
    ({"steps": "abc"}, "steps: 'abc': a strictly rising list"),
    ({"steps": [0, 5, 5]}, "steps: [0, 5, 5]: a strictly rising list"),
    ({"steps": [0, 50]}, "steps: [0, 50]: a strictly rising list of percentages from 0 to 100 that ends at 100"),
    ({"steps": [0, 150]}, "steps: [0, 150]: a strictly rising list"),
    ({"interval": "0s"}, "interval: '0s': a duration above 0"),
    ({"interval": "soon"}, "interval: 'soon': write a duration such as 30s"),
    ({"min_events": -5}, "min_events: -5: give 1 or more"),
    ({"failure_limit": "x"}, "failure_limit: 'x' is not a whole number (give 0 or more)"),
    ({"failure_limit": 1.5}, "failure_limit: 1.5 is not a whole number"),
    ({"consecutive_success_limit": 0}, "consecutive_success_limit: 0: give 1 or more"),
    ({"shadow_fraction": 0}, "shadow_fraction: 0: between 0 (exclusive) and 1"),
    ({"analysis": "oops"}, "analysis: 'oops': a list of checks"),
    ({"analysis": ["oops"]}, "analysis[0]: 'oops': a check is a mapping"),
    ({"analysis": [{"metric": "latency_p99_ratio", "max": "abc"}]}, "analysis[0].max: 'abc' is not a number"),
    ({"analysis": [{"metric": "latency_p99_ratio", "max": 2, "mx": 2}]}, "analysis[0].mx: unknown key"),
    ({"analysis": [{"metric": "accuracy_delta", "min": 0, "min_discordant": -1}]},
     "analysis[0].min_discordant: -1: give 0 or more"),
    ({"analysis": [{"metric": "label_change_rate", "max": 0.1}]}, "analysis[0].label: label_change_rate needs"),
    ({"analysis": [{"metric": "label_change_rate", "label": "nolabel", "max": 0.1}]},
     "analysis[0].label: 'nolabel' is not a label of the serving or the candidate policy (labels: client, priority)"),
    ({"analysis": [{"metric": "latency_p99_ratio", "max": 2}], "dry_run": ["accuracy_delta"]},
     "dry_run: ['accuracy_delta'] are not metrics in analysis (latency_p99_ratio)"),
    ({"dry_run": "accuracy_delta"}, "dry_run: 'accuracy_delta': a list of metric names"),
]


@pytest.mark.parametrize(("spec", "expected"), BAD_SPECS, ids=[e.split(":")[0] for _, e in BAD_SPECS])
def test_every_bad_spec_value_is_refused_by_its_field_path(spec: object, expected: str) -> None:
    with pytest.raises(RolloutError) as info:
        RolloutSpec.from_mapping(spec, labels={"priority", "client"})
    assert len(info.value.problems) == 1, info.value.problems
    assert info.value.problems[0].startswith(expected), info.value.problems[0]


def test_a_spec_with_many_problems_lists_them_all_at_once() -> None:
    spec = {"key": "42", "steps": [0, 5, 5], "interval": 0, "min_events": -5, "failure_limit": "x",
            "consecutive_success_limit": 0, "analysis": [{"metric": "label_change_rate", "label": "nolabel",
                                                          "max": "abc"}]}
    with pytest.raises(RolloutError) as info:
        RolloutSpec.from_mapping(spec, labels={"priority"})
    fields = [p.split(":")[0] for p in info.value.problems]
    assert fields == ["key", "steps", "interval", "min_events", "failure_limit", "consecutive_success_limit",
                      "analysis[0].max", "analysis[0].label"]


def test_a_good_spec_survives_its_own_persisted_form() -> None:
    """What a state file keeps (to_json) parses back to the same spec, a threshold of 0 included."""
    spec = RolloutSpec.from_mapping({**SPEC, "analysis": [*SPEC["analysis"],  # type: ignore[list-item]
                                                          {"metric": "dlq_rate_increase", "max": 0}]})
    assert RolloutSpec.from_mapping(spec.to_json(), labels={"priority"}) == spec


def test_a_finished_rollout_refuses_promote_abort_and_resume(tmp_path: Path) -> None:
    """Once rolled back it never changes again: each action says so instead of answering as if it acted."""
    serving = _policy(tmp_path, "v1.yaml", version="1")
    candidate = _policy(tmp_path, "v2.yaml", version="2")
    rollout = Rollout("r9", RolloutSpec.from_mapping(SPEC), serving=serving, candidate=candidate)
    rollout.abort("aborted by ops")
    for action in (rollout.promote, rollout.abort, rollout.resume):
        with pytest.raises(RolloutConflictError, match=r"^rollout r9 is already aborted \(aborted by ops\)"):
            action()
    assert rollout.status()["state"] == "aborted"


def test_mcnemar_is_exact_on_small_counts() -> None:
    """The exact McNemar p-value matches the binomial tail: 0 of 10 discordant is significant, 5/5 is not."""
    assert mcnemar_p(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_p(5, 5) == 1.0


def test_rollout_report_prints_plain_tables_and_an_html_heatmap_chromium_paints(tmp_path: Path) -> None:
    """`rollout report --from` prints unwrapped text to a pipe and writes a page whose heatmap Chromium paints red."""
    import shutil
    import subprocess
    import sys

    import numpy as np
    import orjson
    from PIL import Image

    serving = _policy(tmp_path, "v1.yaml", version="1")
    candidate = _policy(tmp_path, "v2.yaml", version="2", extra_rule=THIRTY_PERCENT_HIGH)
    rollout = Rollout("r8", RolloutSpec.from_mapping(SPEC), serving=serving, candidate=candidate)
    for i, event in enumerate(_events(400)):
        rollout.label(event, record_id=f"id-{i}")
    saved = tmp_path / "report.json"
    saved.write_bytes(orjson.dumps(rollout.report()))
    page = tmp_path / "rollout.html"
    done = subprocess.run([sys.executable, "-m", "activelabel", "rollout", "report", "--from", str(saved),
                           "--html", str(page)], capture_output=True, text=True, check=True,
                          env={"COLUMNS": "40", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src")})
    assert "priority: transitions old -> new" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("normal"))
    assert row.split()[:3] == ["normal", "high", "120"] and "id-0" in row  # one unwrapped line, examples included
    assert "\x1b[" not in done.stdout
    chromium = shutil.which("chromium")
    assert chromium, "headless Chromium is needed for this test (apt-get install chromium)"
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400",
                    f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = int(((rgb[..., 0] > 190) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)).sum())
    assert red > 500, "the transition heatmap's full-count cell is painted"


@pytest.mark.parametrize(("content", "expected"), [
    (b"- just\n", "spec.yaml: a rollout spec is a mapping (key, steps, interval, analysis, ...), not a list"),
    (b"\xff\xfe\x00bad", "cannot read the spec"),
    (b"key: [unclosed\n", "is not YAML"),
])
def test_rollout_start_refuses_a_bad_spec_file_before_calling_the_service(tmp_path: Path, content: bytes,
                                                                          expected: str) -> None:
    """Checked locally first: the (unreachable) URL is never tried, no traceback, exit 1."""
    from typer.testing import CliRunner

    from activelabel.cli.main import _register, app

    _register()
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(content)
    result = CliRunner().invoke(app, ["rollout", "start", str(tmp_path / "cand.yaml"), "--url", "http://127.0.0.1:1",
                                      "--spec", str(spec)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error:" in result.output and expected in result.output and "cannot reach" not in result.output
