"""Mutated policies (deletions, type swaps, garbage) are refused with a PolicyError, never a traceback."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activelabel import Labeler
from activelabel.errors import PolicyError
from activelabel.policy import load_policy_text

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = [REPO / "examples" / "edge" / "policy.yaml", REPO / "examples" / "bgl" / "policy.yaml"]
TEXTS = {p: p.read_text() for p in EXAMPLES}
DATA = {p: yaml.safe_load(t) for p, t in TEXTS.items()}

GARBAGE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from([
        "", "x" * 2000, "event.", "'a'.replace('a','aa')" * 3, "{{", "[", "has(", "1" * 5000, "labels.nope",
        "../../../../etc/passwd", "/dev/zero", "*", "\x00", "\u202e", "-1", "1e999", "NaN",
    ]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in a YAML tree (keys of mappings, indexes of lists)."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(data: Any, path: tuple[Any, ...], op: str, value: Any) -> Any:
    if not path:
        return value if op != "delete" else None
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "swap":  # the same content in another container type
        old = parent[last]
        parent[last] = (list(old.values()) if isinstance(old, dict) else {str(i): v for i, v in enumerate(old)}
                        if isinstance(old, list) else [old])
    elif op == "rename" and isinstance(parent, dict):
        parent[str(value)[:20] + "_"] = parent.pop(last)
    else:
        parent[last] = value
    return data


def _check(text: str, base: Path) -> None:
    """Loading, compiling and self-testing ``text`` gives a policy or a PolicyError with usable issues."""
    try:
        labeler = Labeler(load_policy_text(text, "policy.yaml", base_dir=base))
    except PolicyError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert isinstance(issue.message, str) and issue.message
            assert isinstance(issue.line, int)
        return
    labeler.run_tests()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(EXAMPLES), st.data(), st.sampled_from(["delete", "swap", "set", "rename"]), GARBAGE)
def test_structurally_mutated_examples_give_only_policy_errors(example: Path, data: st.DataObject, op: str, value: Any) -> None:
    """Deleting, retyping, renaming or replacing any value of a shipped example yields a PolicyError or a valid policy."""
    tree = copy.deepcopy(DATA[example])
    path = data.draw(st.sampled_from(_paths(tree)))
    try:
        mutated = _mutate(tree, path, op, value)
    except (TypeError, KeyError, IndexError):
        return  # the mutation does not apply at this spot
    text = yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False)
    _check(text, example.parent)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXAMPLES), st.data())
def test_textually_mutated_examples_give_only_policy_errors(example: Path, data: st.DataObject) -> None:
    """Cutting, duplicating or splicing garbage into the text of a shipped example yields a PolicyError or a valid policy."""
    text = TEXTS[example]
    start = data.draw(st.integers(min_value=0, max_value=len(text)))
    end = data.draw(st.integers(min_value=start, max_value=min(len(text), start + 200)))
    op = data.draw(st.sampled_from(["cut", "dup", "splice", "truncate"]))
    if op == "cut":
        text = text[:start] + text[end:]
    elif op == "dup":
        text = text[:end] + text[start:end] + text[end:]
    elif op == "truncate":
        text = text[:start]
    else:
        junk = data.draw(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
        text = text[:start] + junk + text[end:]
    _check(text, example.parent)


def test_the_shipped_examples_themselves_load() -> None:
    """The unmutated examples the fuzzers start from are valid policies (so mutations are what is tested)."""
    for example in EXAMPLES:
        assert load_policy_text(TEXTS[example], "policy.yaml", base_dir=example.parent).rules


BASE = """apiVersion: activelabel/v1
kind: Policy
metadata: {name: t}
labels:
  l: {type: string}
"""


def _issues(text: str) -> list[str]:
    try:
        Labeler(load_policy_text(text, "policy.yaml"))
    except PolicyError as exc:
        return [f"{i.line}: {i.message}" for i in exc.issues]
    raise AssertionError("the policy loaded")


def test_integers_wider_than_64_bits_are_refused_where_they_are_written() -> None:
    """An integer outside 64 bits (or past Python's 4,300-digit limit) is a positioned PolicyError, not a TypeError."""
    wide = BASE + "rules:\n  - {id: r, label: l, value: a}\ntests:\n  - {name: t, event: {n: 1180591620717411303424}, expect: {l: a}}\n"
    assert any("number out of range" in m and m.startswith("9:") for m in _issues(wide))
    huge = BASE + f"rules:\n  - {{id: r, label: l, value: a, confidence: {'9' * 5000}}}\n"
    assert any("number out of range" in m for m in _issues(huge))


def test_a_rule_with_an_empty_label_is_refused() -> None:
    """`label: ''` is an error naming the rule's line, not a KeyError from the warnings pass."""
    assert any("must name a label" in m for m in _issues(BASE + "rules:\n  - {id: r, label: '', value: a}\n"))


def test_control_characters_in_metadata_are_refused() -> None:
    """A NUL in `metadata.name` is a policy error rather than a ValueError while compiling the engine."""
    text = BASE.replace("{name: t}", '{name: "a\\0b"}') + "rules:\n  - {id: r, label: l, value: a}\n"
    assert any("must be printable text" in m for m in _issues(text))
