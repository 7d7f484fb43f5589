"""google/cel-spec simple conformance cases run against activelabel.cel (see docs/cel.md)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from activelabel import cel
from activelabel.errors import CELEvalError, CELSyntaxError
from cel_conformance import KNOWN_DEVIATIONS, UNSUPPORTED_REQUIRES, decode, load_cases, same_value

CASES = load_cases()
_RESULTS: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))


def _case_id(case: dict[str, Any]) -> str:
    return f"{case['file']}/{case['section']}/{case['name']}"


@pytest.fixture(scope="module", autouse=True)
def conformance_summary(request: pytest.FixtureRequest) -> Any:
    """Print passed / failed / skipped per file once the module's cases have run."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["", "CEL conformance (google/cel-spec simple tests; failed includes known deviations run as xfail)",
             f"{'file':<14}{'passed':>8}{'failed':>8}{'skipped':>9}{'pass %':>8}"]
    total: dict[str, int] = defaultdict(int)
    for file, counts in sorted(_RESULTS.items()):
        for k, v in counts.items():
            total[k] += v
        lines.append(_row(file, counts))
    lines.append(_row("all", total))
    text = "\n".join(lines) + "\n"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:  # pragma: no cover - pytest without its usual plugins
        print(text)
        return
    with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
        reporter.write_line(text)


def _row(name: str, counts: dict[str, int]) -> str:
    run = counts["passed"] + counts["failed"]
    pct = f"{100.0 * counts['passed'] / run:.1f}" if run else "-"
    return f"{name:<14}{counts['passed']:>8}{counts['failed']:>8}{counts['skipped']:>9}{pct:>8}"


def _skip_reason(case: dict[str, Any]) -> str | None:
    unsupported = UNSUPPORTED_REQUIRES.intersection(case.get("requires", []))
    if unsupported:
        return f"requires {', '.join(sorted(unsupported))} (unsupported, see docs/cel.md)"
    if case.get("check_only"):
        return "check_only: needs the CEL type checker (unsupported, see docs/cel.md)"
    return None


def _run(case: dict[str, Any]) -> Any:
    bindings = {k: decode(v) for k, v in case.get("bindings", {}).items()}
    program = cel.compile(case["expr"], macros=not case.get("disable_macros", False))
    return program.evaluate(bindings)


def _param(case: dict[str, Any]) -> Any:
    reason = KNOWN_DEVIATIONS.get(_case_id(case))
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(case, id=_case_id(case), marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_conformance(case: dict[str, Any]) -> None:
    """The expression evaluates to the case's expected value, or fails when the case expects an error."""
    counts = _RESULTS[case["file"]]
    reason = _skip_reason(case)
    if reason is not None:
        counts["skipped"] += 1
        pytest.skip(reason)
    counts["failed"] += 1  # corrected below once the case has passed
    if case["expected_kind"] == "eval_error":
        with pytest.raises((CELEvalError, CELSyntaxError)):
            _run(case)
    else:
        expected = decode(case["expected"])
        actual = _run(case)
        assert same_value(expected, actual), f"{case['expr']!r}: expected {expected!r}, got {actual!r}"
    counts["failed"] -= 1
    counts["passed"] += 1
