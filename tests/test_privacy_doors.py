"""Every front door and output, walked with canary values in a pii and a secret label.

The harness: each door is a function registered with ``@door("name")`` that
drives the door as an uncleared reader would (a real HTTP server on a free
port, a real OTLP receiver, real protobuf) and returns every text that reader
can see. One parametrized test checks that no canary appears in clear in any
of them, and that the door did write (the public label is there), so a door
that silently writes nothing cannot pass. To add a door: write one more
``@door`` function; the checks apply to it automatically.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from activelabel.governance import OutputGuard, Protector, PseudonymKey
from activelabel.governance.protect import pseudonym
from activelabel.policy import load_policy
from activelabel.service import ServiceConfig, create_app, parse_token_table
from activelabel.service.config import OtlpConfig
from activelabel.service.testing import OtlpReceiver, serve_in_thread

# Valid as header values and Kubernetes label values, so no door can hide them by accident of syntax.
PII_CANARY = "cnry-pii-7f3a9c0e"
SECRET_CANARY = "cnry-secret-1b2d4e6f"
CANARIES = (PII_CANARY, SECRET_CANARY)
PUBLIC_VALUE = "gold"
KEY_SECRET = "test-only-pseudonym-key-0123456789abcdef"

POLICY = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: doors}
labels:
  tier: {type: string, sensitivity: public}
  client: {type: string, sensitivity: pii}
  key_owner: {type: string, sensitivity: secret}
rules:
  - {id: tier, label: tier, value: gold, when: "true"}
  - {id: c-event, label: client, value_expr: event.client, when: has(event.client)}
  - {id: c-header, label: client, value_expr: 'event.headers["x-client"]', when: 'has(event.headers) && "x-client" in event.headers'}
  - {id: c-attr, label: client, value_expr: 'event.attributes["client"]', when: 'has(event.attributes) && "client" in event.attributes'}
  - id: c-k8s
    label: client
    value_expr: 'event.object.metadata.annotations["client"]'
    when: 'has(event.object) && has(event.object.metadata) && has(event.object.metadata.annotations) && "client" in event.object.metadata.annotations'
  - {id: k-event, label: key_owner, value_expr: event.key_owner, when: has(event.key_owner)}
  - {id: k-header, label: key_owner, value_expr: 'event.headers["x-key-owner"]', when: 'has(event.headers) && "x-key-owner" in event.headers'}
  - {id: k-attr, label: key_owner, value_expr: 'event.attributes["key_owner"]', when: 'has(event.attributes) && "key_owner" in event.attributes'}
  - id: k-k8s
    label: key_owner
    value_expr: 'event.object.metadata.annotations["key_owner"]'
    when: 'has(event.object) && has(event.object.metadata) && has(event.object.metadata.annotations) && "key_owner" in event.object.metadata.annotations'
"""

TOKENS = {
    "app-token": {"scopes": ["label"], "name": "app"},
    "pii-token": {"scopes": ["label"], "clearances": ["pii"], "name": "analyst"},
    "secret-token": {"scopes": ["label"], "clearances": ["secret"], "name": "auditor"},
}


@dataclass
class Env:
    url: str
    receiver: OtlpReceiver
    policy_path: Path
    protector: Protector
    cli: CliRun | None = None
    kafka: str | None = None


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("doors")
    policy_path = root / "policy.yaml"
    policy_path.write_text(POLICY, encoding="utf-8")
    key_file = root / "pseudonym.keys"
    key_file.write_text(f"k1={KEY_SECRET}\n", encoding="utf-8")
    with OtlpReceiver() as receiver:
        config = ServiceConfig(pseudonym_key_file=key_file, otlp=OtlpConfig(forward_endpoint=receiver.endpoint))
        app = create_app(policy_path, tokens=parse_token_table(TOKENS, origin="test tokens"), config=config)
        with serve_in_thread(app) as url:
            yield Env(url, receiver, policy_path, Protector.configured(key_file))


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


DoorFn = Callable[[Env], list[str]]
DOORS: dict[str, DoorFn] = {}


def door(name: str) -> Callable[[DoorFn], DoorFn]:
    def register(fn: DoorFn) -> DoorFn:
        DOORS[name] = fn
        return fn

    return register


EVENT = {"path": "/pay", "client": PII_CANARY, "key_owner": SECRET_CANARY}


@door("v1_label")
def _v1_label(env: Env) -> list[str]:
    single = httpx.post(env.url + "/v1/label", json=EVENT, headers=bearer("app-token"))
    batch = httpx.post(env.url + "/v1/label", json={"events": [EVENT, EVENT]}, headers=bearer("app-token"))
    return [single.text, batch.text, str(dict(single.headers))]


@door("v1_label_explain")
def _v1_label_explain(env: Env) -> list[str]:
    r = httpx.post(env.url + "/v1/label?explain=true", json=EVENT, headers=bearer("app-token"))
    return [r.text]


@door("ext_authz_headers")
def _ext_authz(env: Env) -> list[str]:
    headers = {"x-activelabel-token": "app-token", "host": "shop", "x-client": PII_CANARY, "x-key-owner": SECRET_CANARY}
    r = httpx.get(env.url + "/v1/extauthz/pay", headers=headers)
    # Only the headers this service sets go upstream; the client's own request headers are Envoy's business.
    return [f"{k}: {v}" for k, v in r.headers.items()]


@door("admission_patch")
def _admission(env: Env) -> list[str]:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "operation": "CREATE",
            "object": {"kind": "Pod", "metadata": {"name": "p", "annotations": {"client": PII_CANARY, "key_owner": SECRET_CANARY}}},
        },
    }
    r = httpx.post(env.url + "/v1/admission", json=review, headers=bearer("app-token"))
    patch = base64.b64decode(r.json()["response"]["patch"]).decode()
    return [patch]


@door("otlp_export")
def _otlp(env: Env) -> list[str]:
    before = len(env.receiver.trace_requests())
    attrs = [{"key": "client", "value": {"stringValue": PII_CANARY}}, {"key": "key_owner", "value": {"stringValue": SECRET_CANARY}}]
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "s", "kind": 2,
        "startTimeUnixNano": "1", "endTimeUnixNano": "2", "attributes": attrs}]}]}]}  # fmt: skip
    r = httpx.post(env.url + "/v1/traces", content=orjson.dumps(body), headers={**bearer("app-token"), "content-type": "application/json"})
    assert r.status_code == 200
    requests = env.receiver.wait_for(lambda rc: rc.trace_requests()[before:] or None)
    spans = [s for req in requests for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    # The exported span's own attributes carry the canaries (the client sent them); the label.* ones must not.
    return [f"{kv.key}={kv.value}" for s in spans for kv in s.attributes if kv.key.startswith("label.")]


@door("metrics")
def _metrics(env: Env) -> list[str]:
    httpx.post(env.url + "/v1/label", json=EVENT, headers=bearer("app-token"))
    text = httpx.get(env.url + "/metrics").text
    # The public label's name is there (metrics name labels, never values); no value is.
    return [text.replace('label="tier"', f'label="tier" {PUBLIC_VALUE}')]


@door("record_loop_output")
def _record_loop(env: Env) -> list[str]:
    """The function the label/stream record loop calls (`OutputGuard.record`), at the policy's default clearance."""
    policy = load_policy(env.policy_path)
    guard = OutputGuard.of(policy, door="label-file", protector=env.protector)
    from activelabel.engine import Labeler

    decision = Labeler(policy).label(EVENT)
    out = guard.record({"path": "/pay"}, decision.labels, explain=decision.explain())
    return [orjson.dumps(out.fields).decode()]


# ---- the command-line doors: one run of each command, as a user without clearance would run it ----

CLI = [sys.executable, "-m", "activelabel"]
BAD_LINE = b'{"not json'


@dataclass
class CliRun:
    """The files and streams of every command run once over the door events."""

    root: Path
    outputs: dict[str, str]


def _cli(root: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "ACTIVELABEL_PSEUDONYM_KEY"}
    done = subprocess.run([*CLI, *args], input=stdin, capture_output=True, cwd=root, env=env, timeout=120, check=False)
    assert done.returncode == 0, f"activelabel {' '.join(args)} failed: {done.stderr.decode()[-2000:]}"
    return done


@pytest.fixture(scope="module")
def cli_run(env: Env) -> CliRun:
    """Label the door events with `activelabel label` (file, stdout, --explain, --record) and run every reader of its outputs."""
    root = env.policy_path.parent
    keys = str(root / "pseudonym.keys")
    pol = str(env.policy_path)
    events = [{**EVENT, "id": f"r{i}"} for i in range(6)]
    data = root / "events.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n" + BAD_LINE + b"\n")
    o: dict[str, str] = {}
    done = _cli(root, "label", str(data), "-p", pol, "-o", "out.jsonl", "--dlq", "out.dlq.jsonl", "--explain",
                "--record", "store.db", "--id-field", "id", "--pseudonym-key-file", keys)
    o["label_file"] = (root / "out.jsonl").read_text()
    o["label_summary"] = done.stdout.decode() + done.stderr.decode()
    o["dlq_file"] = (root / "out.dlq.jsonl").read_text()
    done = _cli(root, "label", "-p", pol, "--dlq", "stdin.dlq.jsonl", stdin=orjson.dumps(EVENT) + b"\n")
    o["label_stdout"] = done.stdout.decode() + done.stderr.decode()
    o["store"] = _sqlite_text(root / "store.db")
    for i in range(3):  # ground truth for the pii and secret labels, as a reviewer would give it
        _cli(root, "feedback", "add", "--store", "store.db", "--id", f"r{i}", "--label", "client", "--value", PII_CANARY)
        _cli(root, "feedback", "add", "--store", "store.db", "--id", f"r{i}", "--label", "key_owner", "--value", SECRET_CANARY)
    (root / "truth.jsonl").write_text("".join(
        orjson.dumps({"id": f"r{i}", "label": lab, "value": v}).decode() + "\n"
        for i in range(3) for lab, v in (("client", PII_CANARY), ("key_owner", SECRET_CANARY), ("tier", PUBLIC_VALUE))))
    done = _cli(root, "explain", orjson.dumps(EVENT).decode(), "-p", pol, "--pseudonym-key-file", keys)
    o["explain_terminal"] = done.stdout.decode() + done.stderr.decode()
    o["explain_json"] = _cli(root, "explain", "--json", orjson.dumps(EVENT).decode(), "-p", pol).stdout.decode()
    changed = root / "changed.yaml"
    changed.write_text(POLICY.replace("value: gold", "value: platinum").replace("value_expr: event.client", "value_expr: event.client + \"-x\"")
                       .replace("value_expr: event.key_owner", "value_expr: event.key_owner + \"-x\""), encoding="utf-8")
    o["diff"] = _cli(root, "diff", pol, str(changed), str(data)).stdout.decode()
    o["diff_json"] = _cli(root, "diff", "--json", pol, str(changed), str(data)).stdout.decode()
    for fmt, extra in (("report_terminal", []), ("report_json", ["--json"])):
        done = _cli(root, "report", "--store", "store.db", *extra, "--pseudonym-key-file", keys)
        o[fmt] = done.stdout.decode() + done.stderr.decode()
    _cli(root, "report", "--store", "store.db", "--html", "report.html", "--json")
    o["report_html"] = (root / "report.html").read_text()
    done = _cli(root, "report", "--labeled", "out.jsonl", "--truth", "truth.jsonl", "--id-field", "id", "--policy", pol, "--json")
    o["report_labeled_file"] = done.stdout.decode() + done.stderr.decode()
    for lab in ("client", "key_owner", "tier"):
        done = _cli(root, "review", "export", "--store", "store.db", "--label", lab, "--budget", "5",
                    "-o", f"review-{lab}.json", "--include-reviewed", "--text-field", "path")
        o[f"review_{lab}"] = "\n".join([done.stdout.decode(), done.stderr.decode(), (root / f"review-{lab}.json").read_text(),
                                        (root / f"review-{lab}.xml").read_text()])
    return CliRun(root, o)


def _sqlite_text(path: Path) -> str:
    """Every cell of every table of a SQLite file, as text: what anyone who can read the file sees."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(str(row) for t in tables for row in db.execute(f"SELECT * FROM {t}"))
    finally:
        db.close()


def _cli_door(name: str, key: str, note: str, wrote: str | None = None) -> None:
    """A door over one CLI output; ``wrote``: a text that proves it wrote, for outputs that show no label value."""

    def run(env: Env) -> list[str]:
        assert env.cli is not None
        text = env.cli.outputs[key]
        if wrote is not None:
            assert wrote in text, f"{name}: expected {wrote!r} in the output"
            return [text, PUBLIC_VALUE]
        return [text]

    run.__doc__ = note
    DOORS[name] = run


for _door in [
    ("cli_label_file", "label_file", "`activelabel label -o FILE --explain`: labels, label_meta and the event's copies of them"),
    ("cli_label_stdout", "label_stdout", "`activelabel label` to stdout, with its summary on stderr"),
    ("cli_label_summary", "label_summary", "the end-of-run summary of `label`", "rule:c-event"),
    ("cli_store", "store", "the decision store `label --record` writes (every cell of the SQLite file)"),
    ("cli_explain_terminal", "explain_terminal", "`activelabel explain` as a table"),
    ("cli_explain_json", "explain_json", "`activelabel explain --json`"),
    ("cli_diff", "diff", "`activelabel diff OLD NEW DATA` (terminal)"),
    ("cli_diff_json", "diff_json", "`activelabel diff --json`"),
    ("cli_report_terminal", "report_terminal", "`activelabel report --store` with ground truth for the pii and secret labels"),
    ("cli_report_json", "report_json", "`activelabel report --json`"),
    ("cli_report_html", "report_html", "`activelabel report --html`"),
    ("cli_report_labeled_file", "report_labeled_file", "`activelabel report --labeled --truth --policy`"),
    ("cli_review_client", "review_client", "`review export` of the pii label: table, tasks, labeling config", "<TextArea"),
    ("cli_review_key_owner", "review_key_owner", "`review export` of the secret label: table, tasks, labeling config", "<TextArea"),
    ("cli_review_tier", "review_tier", "`review export` of the public label (its events carry the pii and secret values)"),
]:
    _cli_door(*_door)


@door("cli_diff_structural")
def _diff_structural(env: Env) -> list[str]:
    """`activelabel diff` of two versions whose pii/secret labels change constant values (a rule's value, a default)."""
    root = env.policy_path.parent
    old, new = root / "const-old.yaml", root / "const-new.yaml"
    extra = "  - {id: k-const, label: key_owner, value: %s, when: 'has(event.vip)'}\n"
    old.write_text(POLICY.replace("value: gold", "value: silver").replace("sensitivity: pii}", f"sensitivity: pii, default: {PII_CANARY}-old}}")
                   + extra % (SECRET_CANARY + "-old"), encoding="utf-8")
    new.write_text(POLICY.replace("sensitivity: pii}", f"sensitivity: pii, default: {PII_CANARY}}}") + extra % SECRET_CANARY, encoding="utf-8")
    texts = []
    for args in ([], ["--json"]):
        done = _cli(root, "diff", *args, str(old), str(new))
        texts.append(done.stdout.decode() + done.stderr.decode())
    assert all("rule k-const: changed" in t and "label client: changed" in t for t in texts), texts
    return texts


@door("cli_dlq_file")
def _dlq(env: Env) -> list[str]:
    """The DLQ of `label`: no label of a dead letter is written there; its ``raw`` is the input line, kept as it came."""
    assert env.cli is not None
    text = env.cli.outputs["dlq_file"]
    records = [orjson.loads(line) for line in text.splitlines()]
    assert [r["raw"] for r in records] == [BAD_LINE.decode()], "the DLQ keeps the original bytes of a bad line"
    # The raw bytes are input (the DLQ's readers are cleared for the input); everything the DLQ adds is checked.
    return [orjson.dumps({k: v for k, v in r.items() if k != "raw"}).decode() for r in records] + [PUBLIC_VALUE]


@door("audit_log_full")
def _audit_log(env: Env) -> list[str]:
    """The decision audit log at the Full level (labels and inputs), given the privacy protector: every segment line."""
    import tempfile

    from activelabel.engine import Labeler
    from activelabel.governance import audit_privacy
    from activelabel.governance.audit import AuditLog, LevelPolicy

    policy = load_policy(env.policy_path)
    decision = Labeler(policy).label(EVENT)
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog(tmp, level_policy=LevelPolicy.from_mapping({"rules": [{"level": "Full"}]}), **audit_privacy(policy, env.protector))
        with log:
            log.log_decision(decision, door="cli", policy_name="doors", record_id="r1", event=EVENT)
        texts = [p.read_text() for p in sorted(Path(tmp).rglob("*")) if p.is_file() and "keys" not in p.parts]
    [record] = [orjson.loads(line) for t in texts for line in t.splitlines() if '"kind":"decision"' in line.replace(" ", "")]
    assert record["result"]["client"].startswith("hm1:k1:"), "Full records carry the pii label's pseudonym, not an erasure"
    assert record["input"]["client"].startswith("hm1:k1:"), "the field the pii label is computed from is protected too"
    assert "key_owner" not in record["result"] and "/result/key_owner" in record["erased"]
    return texts


# ---- the Kafka doors: the stream worker's output topic and DLQ topic, on a real broker ----

from test_stream_kafka import config as kafka_config  # noqa: E402 - the broker fixtures of the stream tests
from test_stream_kafka import kafka, produce, read_topic  # noqa: E402,F401 - `kafka` is a fixture used by name


def _kafka_topics(bootstrap: str) -> tuple[str, str, str]:
    from confluent_kafka.admin import AdminClient, NewTopic

    n = len(DOORS) + int.from_bytes(os.urandom(3), "big")
    names = (f"pin-{os.getpid()}-{n}", f"pout-{os.getpid()}-{n}", f"pdlq-{os.getpid()}-{n}")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in names]).values():
        future.result(timeout=30)
    return names


@door("kafka_output_and_dlq")
def _kafka(env: Env) -> list[str]:
    """`StreamWorker` with its default guard (the policy's clearance, no key: masks): output values, keys, headers; the DLQ's headers."""
    from activelabel.engine import Labeler
    from activelabel.stream import StreamWorker

    assert env.kafka is not None
    names = _kafka_topics(env.kafka)
    produce(env.kafka, names[0], [{"key": b"k1", "value": orjson.dumps(EVENT)}, {"key": b"k2", "value": BAD_LINE},
                                  {"key": b"k3", "value": orjson.dumps({**EVENT, "explain": True})}])
    cfg = kafka_config(env.kafka, names, max_messages=3, explain=True, key_label="tier")
    stats = StreamWorker(Labeler(load_policy(env.policy_path)), cfg).run(handle_signals=False)
    assert (stats["labeled"], stats["dead_lettered"]) == (2, 1)
    assert stats["privacy"]["declared_leaks"] == 0 and stats["privacy"]["protected_labels"] == ["client", "key_owner"]
    out = read_topic(env.kafka, names[1])
    dead = read_topic(env.kafka, names[2])
    assert [m.value() for m in dead] == [BAD_LINE], "the DLQ topic keeps the original bytes (input) of a bad message"
    assert {m.key() for m in out} == {PUBLIC_VALUE.encode()}, "--key-label tier keys the output by the public label"
    texts = [m.value().decode() for m in out] + [m.key().decode() for m in out]
    texts += [f"{k}={v!r}" for m in [*out, *dead] for k, v in (m.headers() or [])]
    return texts


@pytest.mark.parametrize("name", sorted(DOORS))
def test_no_canary_in_clear_at_any_door(env: Env, request: pytest.FixtureRequest, name: str) -> None:
    """No pii or secret canary reaches an uncleared reader in clear, and the door did write its labels."""
    if name.startswith("cli_"):
        env.cli = request.getfixturevalue("cli_run")  # the commands run once, for every CLI door
    if name.startswith("kafka_"):
        env.kafka = request.getfixturevalue("kafka")
    texts = DOORS[name](env)
    seen = "\n".join(texts)
    for canary in CANARIES:
        assert canary not in seen, f"{name} wrote a sensitive value in clear"
    assert PUBLIC_VALUE in seen, f"{name} wrote nothing to check"


def test_uncleared_reader_gets_the_keyed_pseudonym_and_no_secret(env: Env) -> None:
    """An uncleared token gets the pii label as its hm1 pseudonym under the configured key, and no secret label."""
    labels = httpx.post(env.url + "/v1/label", json=EVENT, headers=bearer("app-token")).json()["labels"]
    assert labels["client"] == pseudonym(PseudonymKey("k1", KEY_SECRET.encode()), PII_CANARY)
    assert "key_owner" not in labels


def test_cleared_readers_see_what_they_are_cleared_for(env: Env) -> None:
    """A pii clearance shows the pii label in clear but not the secret; a secret clearance shows both."""
    pii = httpx.post(env.url + "/v1/label", json=EVENT, headers=bearer("pii-token")).json()["labels"]
    secret = httpx.post(env.url + "/v1/label", json=EVENT, headers=bearer("secret-token")).json()["labels"]
    assert pii["client"] == PII_CANARY and "key_owner" not in pii
    assert secret["client"] == PII_CANARY and secret["key_owner"] == SECRET_CANARY


def test_ext_authz_lists_the_withheld_header_for_removal(env: Env) -> None:
    """The secret label's header is listed for Envoy to strip, so a client cannot smuggle its own value upstream."""
    r = httpx.get(env.url + "/v1/extauthz/", headers={"x-activelabel-token": "app-token", "x-client": PII_CANARY, "x-key-owner": SECRET_CANARY})
    assert "x-label-key-owner" in r.headers["x-envoy-auth-headers-to-remove"]
    assert r.headers["x-label-client"].startswith("hm1:k1:")


def _pseudonym_in_subprocess(key: str, value: str) -> str:
    code = "import sys; from activelabel.governance import Protector; print(Protector.configured().pseudonymize(sys.argv[1]))"
    env = {**os.environ, "ACTIVELABEL_PSEUDONYM_KEY": key, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", code, value], env=env, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


def test_pseudonyms_are_stable_across_processes_and_differ_by_key() -> None:
    """The same key gives the same pseudonym in another process; another key gives another one."""
    here = Protector([PseudonymKey("k1", KEY_SECRET.encode())]).pseudonymize(PII_CANARY)
    assert _pseudonym_in_subprocess(f"k1={KEY_SECRET}", PII_CANARY) == here
    other = _pseudonym_in_subprocess("k2=" + "another-test-only-key-fedcba9876543210", PII_CANARY)
    assert other != here and other.startswith("hm1:k2:")


def test_service_refuses_to_start_with_a_missing_key_file(tmp_path: Path) -> None:
    """A pseudonym key file that is named but missing stops the service at start with a clear error."""
    from activelabel.errors import PseudonymKeyError

    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    config = ServiceConfig(pseudonym_key_file=tmp_path / "nope.keys")
    with pytest.raises(PseudonymKeyError, match="cannot read pseudonym key file"):
        create_app(policy, no_auth=True, config=config)


def test_serve_stops_at_start_on_an_unusable_key(tmp_path: Path) -> None:
    """`activelabel serve` with a too-short $ACTIVELABEL_PSEUDONYM_KEY exits 2 with what to do, before serving anything."""
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = {**os.environ, "ACTIVELABEL_PSEUDONYM_KEY": "k1=short"}
    cmd = [sys.executable, "-m", "activelabel", "serve", "--policy", str(policy), "--no-auth", "--port", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 2
    assert "at least 32" in done.stderr and "Traceback" not in done.stderr


def test_a_pii_label_as_kafka_key_is_refused_at_the_label_declaration(env: Env, tmp_path: Path) -> None:
    """`activelabel stream --key-label client` (a pii label) stops at start, naming policy file:line and what to use instead."""
    done = subprocess.run([*CLI, "stream", "--input-topic", "a", "--output-topic", "b", "--policy", str(env.policy_path),
                           "--key-label", "client", "--bootstrap", "127.0.0.1:1"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    line = next(n for n, text in enumerate(POLICY.splitlines(), 1) if text.strip().startswith("client:"))
    assert f"{env.policy_path}:{line}:" in done.stderr and "cannot be used as a Kafka message key" in done.stderr
    assert "public or internal" in done.stderr and "Traceback" not in done.stderr


def test_serve_counts_undeclared_pii_in_recorded_decisions_on_metrics(tmp_path: Path) -> None:
    """A validated e-mail in an undeclared field of a recorded event shows on /metrics as M9's undeclared count, by detector, never by value."""
    from activelabel.service.config import StoreConfig

    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    config = ServiceConfig(store=StoreConfig(path=str(tmp_path / "d.db")))
    app = create_app(policy, no_auth=True, config=config)
    with serve_in_thread(app) as url:
        for _ in range(2):
            r = httpx.post(url + "/v1/label", json={**EVENT, "note": "write to canary.m9@example.org"})
            assert r.status_code == 200
        text = httpx.get(url + "/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("activelabel_pii_undeclared_total{"))
    assert 'detector="EMAIL_ADDRESS"' in line and line.endswith(" 2.0")
    assert "canary.m9@example.org" not in text and PII_CANARY not in text
    stored = _sqlite_text(tmp_path / "d.db")
    assert PII_CANARY not in stored and SECRET_CANARY not in stored, "the service's store keeps labels protected"


def test_label_clearance_option_shows_cleared_labels_and_pseudonyms_are_stable_across_runs(env: Env, tmp_path: Path) -> None:
    """`label --clearance pii` writes the pii label in clear but not the secret; two runs with one key give one pseudonym, another key another."""
    data = tmp_path / "in.jsonl"
    data.write_bytes(orjson.dumps(EVENT) + b"\n")
    keys = env.policy_path.parent / "pseudonym.keys"
    other = tmp_path / "other.keys"
    other.write_text("k2=another-test-only-key-fedcba9876543210\n", encoding="utf-8")

    def labels(*args: str) -> dict[str, str]:
        done = _cli(tmp_path, "label", str(data), "-p", str(env.policy_path), "-q", *args)
        return orjson.loads(done.stdout)["labels"]

    cleared = labels("--clearance", "pii")
    assert cleared["client"] == PII_CANARY and "key_owner" not in cleared
    first, second, third = (labels("--pseudonym-key-file", str(k)) for k in (keys, keys, other))
    assert first["client"] == second["client"] == pseudonym(PseudonymKey("k1", KEY_SECRET.encode()), PII_CANARY)
    assert third["client"].startswith("hm1:k2:") and third["client"] != first["client"]


def test_label_stops_at_start_on_a_missing_key_file_or_unknown_clearance(env: Env, tmp_path: Path) -> None:
    """A named key file that is missing, or an unknown --clearance, stops `label` with exit 2 and writes no output."""
    data = tmp_path / "in.jsonl"
    data.write_bytes(orjson.dumps(EVENT) + b"\n")
    for args, says in ((["--pseudonym-key-file", str(tmp_path / "nope.keys")], "cannot read pseudonym key file"),
                       (["--clearance", "top"], "unknown sensitivity 'top'")):
        cmd = [*CLI, "label", str(data), "-p", str(env.policy_path), "-o", str(tmp_path / "o.jsonl"), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "o.jsonl").exists()


def test_an_escaped_copy_of_a_protected_value_in_the_event_is_replaced_too(env: Env) -> None:
    """The event's copy of a pii value written with JSON escapes (\\u002d for '-') still leaves as the pseudonym."""
    from activelabel.engine import Labeler

    policy = load_policy(env.policy_path)
    guard = OutputGuard.of(policy, door="label-file", protector=env.protector)
    raw = b'{"path": "/pay", "note": "seen cnry\\u002dpii\\u002d7f3a9c0e here", "client": "' + PII_CANARY.encode() + b'"}'
    event = orjson.loads(raw)
    line = guard.line(raw, event, Labeler(policy).label(event).labels)
    out = orjson.loads(line)
    assert PII_CANARY not in line.decode() and PII_CANARY not in out["note"]
    assert out["note"] == "seen " + out["labels"]["client"] + " here"
