"""`activelabel pii audit`: inject honeytokens into replayed traffic and report the M9 leak numbers.

Numbers only: no canary, label value or event field is ever printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from activelabel.cli._common import fail, out
from activelabel.cli.main import app
from activelabel.errors import ActiveLabelError, PolicyError

pii_app = typer.Typer(help="PII checks: leak counts (M9) measured with canaries.", no_args_is_help=True)
app.add_typer(pii_app, name="pii")


def _read_events(inputs: list[Path], limit: int) -> list[Any]:
    events: list[Any] = []
    for path in inputs:
        if not path.exists():
            fail(f"input {path} does not exist")
        with path.open("rb") as fh:
            for raw in fh:
                if len(events) >= limit:
                    return events
                try:
                    events.append(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    continue  # the replay skips what `label` would dead-letter
    return events


@pii_app.command("audit")
def audit(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL traffic to replay (a sample is enough).")],
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy YAML file.")] = Path("policy.yaml"),
    canaries: Annotated[int, typer.Option("--canaries", help="Honeytokens to inject (cards, e-mails, IBANs in turn).")] = 30,
    limit: Annotated[int, typer.Option("--limit", help="Most events replayed.")] = 2000,
    field: Annotated[list[str] | None, typer.Option("--field", help="Free-text field to inject into (repeatable; default: message, msg, body, log, request...).")] = None,
    clearance: Annotated[str | None, typer.Option("--clearance", help="Clearance of the audited output (default: the policy's outputs.clearance).")] = None,
    pseudonym_key_file: Annotated[Path | None, typer.Option("--pseudonym-key-file", help="Pseudonym keys (<key id>=<secret> lines).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the canary generator (default: random).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Inject canaries, run them through `label` (file output) and the record loop, count what leaked."""
    from activelabel.governance.pii_audit import run_audit

    if canaries < 1:
        fail("--canaries must be at least 1", 2)
    if not policy.exists():
        fail(f"policy file {policy} does not exist (pass --policy PATH to a policy YAML)")
    events = _read_events(inputs, limit)
    if not events:
        fail("no JSON events in the inputs to replay")
    try:
        result = run_audit(policy, events, canaries=canaries, seed=seed, fields=field or (), clearance=clearance, key_file=pseudonym_key_file)
    except PolicyError as exc:
        fail(str(exc))
    except (ActiveLabelError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    if as_json:
        out.print_json(orjson.dumps(result).decode())
        return
    out.print(f"pii audit: {result['events']} events, clearance {result['clearance']}, "
              f"redact: {'on' if result['redaction'] else 'off'}, pseudonym key: {'yes' if result['pseudonym_key'] else 'no (masking)'}",
              highlight=False, markup=False, soft_wrap=True)  # fmt: skip
    out.print(f"{'door':<14}{'records':>9}{'declared leaks':>16}{'undeclared pii':>16}{'canaries caught':>17}{'recall':>8}", highlight=False, markup=False, soft_wrap=True)
    for door in result["doors"]:
        recall = "-" if door["canary_recall"] is None else f"{door['canary_recall']:.2f}"
        caught = f"{door['canaries_caught']}/{door['canaries_injected']}"
        out.print(f"{door['door']:<14}{door['records_out']:>9}{door['declared_leaks']:>16}{door['undeclared_pii']:>16}{caught:>17}{recall:>8}",
                  highlight=False, markup=False, soft_wrap=True)  # fmt: skip
    out.print(f"detectors find {result['detector_recall']:.2f} of the canaries in the replayed text; "
              "a canary is caught when no output writes it in clear (redact: decides that)", highlight=False, markup=False, soft_wrap=True)
    for door in result["doors"]:
        if door["undeclared_pii_by_field"]:
            where = ", ".join(f"{k.split('/', 1)[1]} x{n}" for k, n in door["undeclared_pii_by_field"].items())
            out.print(f"undeclared pii at {door['door']}: {where}", highlight=False, markup=False, soft_wrap=True)
