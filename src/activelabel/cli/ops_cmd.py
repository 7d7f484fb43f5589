"""`activelabel ops rules|dashboards`: Prometheus rules and Grafana dashboards as code (docs/production.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from activelabel.cli._common import err, fail, print_policy_error
from activelabel.cli.main import app
from activelabel.errors import PolicyError, SLOSpecError

ops_app = typer.Typer(help="Operate activelabel: Prometheus rules and Grafana dashboards from the metrics it exports.",
                      no_args_is_help=True)
app.add_typer(ops_app, name="ops")

SloOption = Annotated[Path | None, typer.Option("--slo", help="SLO spec YAML (objectives, burn windows, thresholds); default: the seed's targets.")]


def _spec(slo: Path | None):  # type: ignore[no-untyped-def]
    from activelabel.observability.slo import load_slo_spec

    if slo is not None and not slo.exists():
        fail(f"SLO spec {slo} does not exist (omit --slo for the defaults; see docs/production.md)")
    try:
        return load_slo_spec(slo)
    except SLOSpecError as exc:
        fail(str(exc), code=2)


def _label_names(policy: Path | None) -> list[str] | None:
    if policy is None:
        return None
    from activelabel.policy import load_policy

    if not policy.exists():
        fail(f"policy file {policy} does not exist (pass --policy PATH to a policy YAML)")
    try:
        return list(load_policy(policy).labels)
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(1) from exc


@ops_app.command("rules")
def rules(
    output: Annotated[Path, typer.Option("--output", "-o", help="Rules file to write (Prometheus rule_files format).")],
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="Limit the per-label alerts to this policy's labels.")] = None,
    slo: SloOption = None,
    tests: Annotated[bool, typer.Option("--tests", help="Also write the matching `promtool test rules` file, <output stem>_test.yaml.")] = False,
) -> None:
    """Write recording rules per SLI (M1-M10), burn-rate alerts on the two SLOs and the plain alerts."""
    from activelabel.observability.rules import build_rules, render_yaml
    from activelabel.observability.rules_tests import build_rule_tests

    spec = _spec(slo)
    labels = _label_names(policy)
    source = f"--slo {slo}" if slo else "default SLO spec"
    header = (f"Written by `activelabel ops rules` ({source}{f', --policy {policy}' if policy else ''}); do not edit by hand.\n"
              "Check: promtool check rules <this file>. Runbooks: docs/runbooks.md.")
    data = build_rules(spec, labels)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(render_yaml(data, header), encoding="utf-8")
        written = [output]
        if tests:
            test_path = output.with_name(f"{output.stem}_test.yaml")
            test_path.write_text(render_yaml(build_rule_tests(spec, output.name),
                                             f"Written by `activelabel ops rules --tests` for {output.name}.\n"
                                             f"Run: promtool test rules {test_path.name}"), encoding="utf-8")
            written.append(test_path)
    except OSError as exc:
        fail(f"cannot write {exc.filename}: {exc.strerror}")
    n_rules = sum(len(g["rules"]) for g in data["groups"])
    n_alerts = sum(1 for g in data["groups"] for r in g["rules"] if "alert" in r)
    err.print(f"wrote {n_rules} rules ({n_alerts} alerts) in {len(data['groups'])} groups: "
              + ", ".join(str(p) for p in written), highlight=False, markup=False)


@ops_app.command("dashboards")
def dashboards(
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write executive.json, on-call.json, debug.json into.")],
    slo: SloOption = None,
) -> None:
    """Write the Grafana dashboards (executive, on-call, debug) as JSON; import them or provision the directory."""
    from activelabel.observability.dashboards import build_dashboards, render_json

    spec = _spec(slo)
    try:
        output.mkdir(parents=True, exist_ok=True)
        for name, dashboard in build_dashboards(spec).items():
            path = output / f"{name}.json"
            path.write_text(render_json(dashboard), encoding="utf-8")
            err.print(f"wrote {path} (uid {dashboard['uid']}, {len(dashboard['panels'])} panels)", highlight=False, markup=False)
    except OSError as exc:
        fail(f"cannot write {exc.filename}: {exc.strerror}")
