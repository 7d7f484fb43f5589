"""End to end against a real Label Studio: our ML backend predicts, Label Studio's webhook brings answers back.

    # a Label Studio of its own (a separate venv: it pins Django and friends)
    python -m venv /tmp/ls-venv && /tmp/ls-venv/bin/pip install label-studio
    LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true LABEL_STUDIO_USERNAME=loop@example.com \\
      LABEL_STUDIO_PASSWORD=loop-pass-123 LABEL_STUDIO_USER_TOKEN=<40 hex> \\
      USE_DEFAULT_BANNED_SUBNETS=false SSRF_PROTECTION_ENABLED=false \\
      /tmp/ls-venv/bin/label-studio start --no-browser --port 18080 --data-dir /tmp/lsdata &  # loopback backend allowed
    .venv/bin/python bench/label_studio_e2e.py --ls-url http://127.0.0.1:18080 --token <40 hex>

Steps, each checked: record the fixture decisions in a store; `review export` tasks;
create a Label Studio project with our labeling config; connect our ML backend
(`review ml-backend`'s server) and a webhook to it; import the tasks; ask Label
Studio to fetch predictions (it calls our `/predict`); create an annotation through
Label Studio's API (Label Studio posts `ANNOTATION_CREATED` to our `/webhook`); and
see the ground truth in our store. Not in the test suite because Label Studio is not
a dependency (it needs its own environment and ~30 s to start); run it by hand.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from activelabel.policy import load_policy  # noqa: E402
from activelabel.quality.review import label_studio_config, label_studio_tasks, select_for_review  # noqa: E402
from activelabel.quality.review_server import LabelStudioBackend  # noqa: E402
from activelabel.quality.store import DecisionStore  # noqa: E402
from loop_store import FIXTURES, recorded_store  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ls-url", default="http://127.0.0.1:18080")
    ap.add_argument("--token", required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    ls = httpx.Client(base_url=args.ls_url, headers={"Authorization": f"Token {args.token}"}, timeout=30)
    version = ls.get("/api/version").json().get("release")
    print(f"Label Studio {version} at {args.ls_url}")
    with tempfile.TemporaryDirectory() as tmp:
        store = DecisionStore(recorded_store(Path(tmp)), policy=load_policy(FIXTURES / "policy.yaml"))
        backend = LabelStudioBackend(FIXTURES / "policy.yaml", store, "category")
        url = backend.start()
        items = select_for_review(list(store.decisions()), label="category", budget=4, strategy="uncertainty")
        tasks = label_studio_tasks(items, text_field="content")
        for t in tasks:
            t.pop("predictions", None)  # predictions must come from the backend, not from the file
        registry = store.registry()
        assert registry is not None
        config = label_studio_config("category", registry.labels["category"].values or [])
        project = ls.post("/api/projects", json={"title": "activelabel e2e", "label_config": config}).json()
        pid = project["id"]
        print(f"project {pid} created")
        ml = ls.post("/api/ml", json={"project": pid, "url": url, "title": "activelabel"})
        assert ml.status_code in (200, 201), ml.text
        print(f"ML backend connected: {ml.json().get('state')} ({url})")
        hook = ls.post("/api/webhooks/", json={"project": pid, "url": url + "/webhook", "send_payload": True,
                                               "send_for_all_actions": False,
                                               "actions": ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]})
        assert hook.status_code in (200, 201), hook.text
        imp = ls.post(f"/api/projects/{pid}/import", json=tasks)
        assert imp.status_code in (200, 201), imp.text
        task_list = ls.get("/api/tasks", params={"project": pid, "page_size": 100}).json()
        task_list = task_list.get("tasks", task_list) if isinstance(task_list, dict) else task_list
        print(f"{len(task_list)} tasks imported")
        act = ls.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                      json={"selectedItems": {"all": True, "excluded": []}})
        assert act.status_code == 200, act.text
        predictions = ls.get("/api/predictions", params={"project": pid}).json()
        print(f"{len(predictions)} predictions from our /predict, e.g. "
              f"{predictions[0]['result'] if predictions else None} score {predictions[0]['score'] if predictions else None}")
        assert len(predictions) == len(task_list), "Label Studio did not store a prediction per task"
        first = task_list[0]
        rid = first["data"]["activelabel_id"]
        ann = ls.post(f"/api/tasks/{first['id']}/annotations", json={"result": [
            {"from_name": "category", "to_name": "text", "type": "choices", "value": {"choices": ["APPREAD"]}}]})
        assert ann.status_code in (200, 201), ann.text
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and not store.ground_truth("category"):
            time.sleep(0.2)  # Label Studio posts the webhook asynchronously: poll the store until it lands
        truth = store.ground_truth("category")
        print(f"webhook actions received: {[p.get('action') for p in backend.received]}")
        print(f"ground truth in our store: {[(t.record_id, t.value, t.who, t.how) for t in truth]}")
        ok = [(t.record_id, t.value) for t in truth] == [(rid, "APPREAD")]
        ls.delete(f"/api/projects/{pid}")
        backend.stop()
        store.close()
    print("END TO END:", "passed" if ok else "FAILED")
    print(orjson.dumps({"label_studio": version, "predictions": len(predictions), "ground_truth": len(truth),
                        "passed": ok}).decode())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
