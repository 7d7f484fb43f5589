"""The core install runs the engine and the CLI; a feature of a missing extra names the extra to install.

Absence is simulated: each command runs in a subprocess that first sets ``sys.modules[name] = None``
for the modules of the extras it should not have, which makes Python refuse to import them exactly
as it does when a package is not installed (the suite's own venv has every extra). The real
installs are measured in docs/performance.md's install-footprint note.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from activelabel._extras import MODULE_EXTRAS

REPO = Path(__file__).resolve().parents[1]
EDGE = REPO / "examples" / "edge"
EXAMPLES = REPO / "examples"
FIXTURES = Path(__file__).parent / "fixtures" / "loop"


def run_without(modules: list[str], args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`activelabel ARGS` in a subprocess where ``modules`` cannot be imported (simulated absence)."""
    code = (f"import sys\nfor name in {modules!r}:\n    sys.modules[name] = None\n"
            f"sys.argv = ['activelabel', *{args!r}]\n"
            "from activelabel.cli.main import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=180,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, check=False)


def modules_of(*extras: str) -> list[str]:
    return sorted(m for m, extra in MODULE_EXTRAS.items() if extra in extras)


EVERY_EXTRA = modules_of("service", "kafka", "ml", "report")


def test_the_core_runs_demo_label_validate_test_explain_diff_and_report_without_any_extra(tmp_path):
    """With every extra's modules absent, the core commands still work end to end."""
    policy = str(EDGE / "policy.yaml")
    events = str(EDGE / "requests.jsonl")
    for args in (["demo", "--output", str(tmp_path / "demo.jsonl")],
                 ["label", "-p", policy, events, "-o", str(tmp_path / "out.jsonl"), "--record", str(tmp_path / "s.db")],
                 ["validate", policy],
                 ["test", policy],
                 ["explain", "--policy", policy, '{"status": 503, "path": "/x", "user_agent": "curl/8"}'],
                 ["diff", policy, policy, events],
                 ["report", "--store", str(tmp_path / "s.db"), "--json"]):
        res = run_without(EVERY_EXTRA, args, tmp_path)
        assert res.returncode == 0, (args, res.stderr[-1500:])
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 600


@pytest.mark.parametrize(("extra", "args"), [
    ("service", ["serve", "--policy", str(EDGE / "policy.yaml"), "--port", "0"]),
    ("kafka", ["stream", "--policy", str(EDGE / "policy.yaml"), "--bootstrap", "127.0.0.1:1",
               "--input-topic", "in", "--output-topic", "out"]),
    ("report", ["report", "--store", "STORE", "--html", "r.html"]),
    ("ml", ["train", "--store", "STORE", "--label", "category", "--feature", "msg=event.content"]),
    ("audit", ["label", "--policy", str(EXAMPLES / "edge" / "policy.yaml"), str(EXAMPLES / "edge" / "requests.jsonl"),
               "-o", "out.jsonl", "--audit", "audit-dir"]),
])
def test_a_command_needing_a_missing_extra_says_which_to_install(tmp_path, extra, args):
    """`serve`, `stream`, `report --html`, `train` and `label --audit` without their extra exit 1 naming `pip install 'activelabel[EXTRA]'`."""
    from activelabel.quality.store import DecisionStore
    from loop_store import recorded_store

    store = recorded_store(tmp_path)
    with DecisionStore(store) as db:
        for rid, value in (("e01", "KERNDTLB"), ("e02", "none"), ("e03", "KERNSTOR")):
            db.add_ground_truth(rid, "category", value)
    args = [str(store) if a == "STORE" else a for a in args]
    res = run_without(modules_of(extra), args, tmp_path)
    assert res.returncode == 1, res.stderr[-1500:]
    assert f"pip install 'activelabel[{extra}]'" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_model_bearing_policy_without_the_ml_extra_is_refused_naming_it(tmp_path):
    """`validate` of a policy with a `models:` entry, scikit-learn absent, is a policy error naming [ml]."""
    artifact = tmp_path / "m.joblib"
    artifact.write_bytes(b"not loaded: the loader stops at the missing import")
    policy = tmp_path / "policy.yaml"
    policy.write_text((FIXTURES / "policy.yaml").read_text() + f"""models:
  - name: category_model
    label: category
    type: sklearn
    path: {artifact.name}
    features:
      msg: event.content
""")
    res = run_without(modules_of("ml"), ["validate", str(policy)], tmp_path)
    assert res.returncode == 1
    assert "model category_model" in res.stderr and "pip install 'activelabel[ml]'" in res.stderr


@pytest.mark.parametrize(("package", "extra"), [("activelabel.service", "service"), ("activelabel.stream", "kafka")])
def test_importing_a_front_door_without_its_extra_names_the_extra(tmp_path, package, extra):
    """`import activelabel.service` (or `.stream`) without its extra raises an ImportError naming it."""
    code = (f"import sys\nfor name in {modules_of(extra)!r}:\n    sys.modules[name] = None\n"
            "from activelabel.errors import MissingExtraError\n"
            f"try:\n    import {package}\nexcept MissingExtraError as exc:\n"
            "    assert isinstance(exc, ImportError)\n    print(exc.extra, exc)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{extra} ") and f"pip install 'activelabel[{extra}]'" in res.stdout


def test_pyproject_extras_cover_every_mapped_module_and_test_pulls_all():
    """Each extra the code names exists in pyproject.toml, `all` combines them, and `test` installs `all`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(MODULE_EXTRAS.values()) <= set(extras)
    assert extras["all"] == ["activelabel[service,kafka,ml,report,audit]"]
    assert "activelabel[all]" in extras["test"]
    core = " ".join(project["dependencies"])
    for heavy in ("scikit-learn", "onnxruntime", "river", "matplotlib", "confluent-kafka", "opentelemetry-sdk",
                  "starlette", "pyarrow"):
        assert heavy not in core
