"""docs/service.md stays true: its YAML snippets parse and its service config is accepted."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from activelabel.service import ServiceConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "service.md"
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_every_yaml_snippet_parses():
    """Every ```yaml block of docs/service.md is valid YAML (config snippets users copy)."""
    assert len(YAML_BLOCKS) >= 5
    for block in YAML_BLOCKS:
        yaml.safe_load(block.replace("<base64 CA of the serving certificate>", "x"))


def test_documented_service_config_is_accepted():
    """The documented --config example, with every field, validates as a ServiceConfig."""
    (block,) = [b for b in YAML_BLOCKS if b.startswith("host:")]
    config = ServiceConfig.model_validate(yaml.safe_load(block))
    assert config == ServiceConfig()
