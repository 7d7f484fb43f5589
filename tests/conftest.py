"""Shared fixtures: paths to the repository, the shared data, and policy writing."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
EXAMPLES = REPO / "examples"


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[..., Path]:
    """Write a policy YAML (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "policy.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


def edge_variant(tmp_path: Path, name: str, version: str, extra_rule: str = "") -> Path:
    """The shipped edge policy with another metadata.version and, optionally, one rule placed before the priority rules.

    The rollout, shadow and audit tests use it as a candidate: a new version only, or one that changes `priority`.
    """
    edge = EXAMPLES / "edge"
    text = (edge / "policy.yaml").read_text().replace('version: "1"', f'version: "{version}"')
    if extra_rule:
        text = text.replace("  - id: server-error-critical", extra_rule + "  - id: server-error-critical")
    (tmp_path / "known_clients.csv").write_bytes((edge / "known_clients.csv").read_bytes())
    path = tmp_path / name
    path.write_text(text)
    return path
