"""Policy reload without restart: refused policies keep the old one serving, good ones take over without drops."""

from __future__ import annotations

import logging
import shutil
import sys
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import BAD_POLICY, FAILING_TESTS_POLICY, POLICY, auth, build_app

from activelabel.errors import PolicyError
from activelabel.service import ServiceConfig
from activelabel.service.testing import serve_in_thread

PAY = {"path": "/pay/1", "status": 200}


def _variant(text: str, *, priority_for_pay: str) -> str:
    """The fixture policy with rule pay-any setting a different value (so its version changes)."""
    return text.replace("    value: high\n    when: event.path.startsWith(\"/pay\")\n", f"    value: {priority_for_pay}\n    when: event.path.startsWith(\"/pay\")\n")


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.yaml"
    shutil.copy(POLICY, path)
    return path


def _label(client: httpx.Client, event: dict) -> httpx.Response:
    return client.post("/v1/label", json=event, headers=auth("label-token"))


def test_bad_policy_is_refused_with_every_error_and_old_one_keeps_serving(policy_file, caplog):
    """Reloading an invalid policy answers 422 listing every error; labels still come from the old policy."""
    registry = CollectorRegistry()
    with serve_in_thread(build_app(policy_file, registry=registry)) as url, httpx.Client(base_url=url) as client:
        before = _label(client, PAY)
        old_version = before.json()["policy_version"]
        shutil.copy(BAD_POLICY, policy_file)
        with caplog.at_level(logging.INFO, logger="activelabel.service.reload"):
            r = client.post("/v1/policy/reload", headers=auth("admin-token"))
        assert r.status_code == 422
        body = r.json()
        assert body["accepted"] is False and body["old_version"] == old_version
        assert body["error"]["code"] == "policy_refused"
        messages = [e["message"] for e in body["errors"]]
        assert len(messages) == 3
        assert any("urgent" in m for m in messages)
        assert any("syntax" in m.lower() for m in messages)
        assert any("colour" in m for m in messages)
        assert all(e["line"] > 0 for e in body["errors"])
        after = _label(client, PAY)
        assert after.json() == before.json()
        assert after.headers["activelabel-policy-version"] == old_version
    assert "refused" in caplog.text and old_version in caplog.text
    assert registry.get_sample_value("activelabel_policy_reloads_total", {"outcome": "refused", "trigger": "api"}) == 1


def test_policy_whose_own_tests_fail_is_refused(policy_file):
    """A policy that is valid but fails its own tests: block is refused, naming the failing tests."""
    with serve_in_thread(build_app(policy_file)) as url, httpx.Client(base_url=url) as client:
        shutil.copy(FAILING_TESTS_POLICY, policy_file)
        r = client.post("/v1/policy/reload", headers=auth("admin-token"))
        assert r.status_code == 422
        text = " ".join(e["message"] for e in r.json()["errors"])
        assert "payment is critical" in text and "email is kept" in text
        assert _label(client, PAY).json()["labels"]["priority"] == "high"


def test_good_policy_takes_effect_and_both_versions_are_logged(policy_file, caplog):
    """Reloading a valid changed policy answers 200 and the next request uses it; the log names old and new versions."""
    registry = CollectorRegistry()
    with serve_in_thread(build_app(policy_file, registry=registry)) as url, httpx.Client(base_url=url) as client:
        old_version = _label(client, PAY).json()["policy_version"]
        policy_file.write_text(_variant(POLICY.read_text(), priority_for_pay="low"))
        with caplog.at_level(logging.INFO, logger="activelabel.service.reload"):
            r = client.post("/v1/policy/reload", headers=auth("admin-token"))
        assert r.status_code == 200
        new_version = r.json()["new_version"]
        assert new_version != old_version and r.json()["old_version"] == old_version
        after = _label(client, PAY)
        assert after.json()["labels"]["priority"] == "low"
        assert after.headers["activelabel-policy-version"] == new_version
        assert client.get("/v1/policy", headers=auth("label-token")).json()["version"] == new_version
        metrics = client.get("/metrics").text
    assert old_version in caplog.text and new_version in caplog.text and "accepted" in caplog.text
    assert registry.get_sample_value("activelabel_policy_reloads_total", {"outcome": "accepted", "trigger": "api"}) == 1
    assert registry.get_sample_value("activelabel_policy_info", {"name": "service-fixture", "version": new_version}) == 1
    assert f'version="{new_version}"' in metrics


def test_reloads_under_load_drop_no_request(policy_file):
    """While the policy is swapped back and forth, every concurrent label request is answered 200 by one of the versions."""
    base = POLICY.read_text()
    variants = [_variant(base, priority_for_pay="low"), base]
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url) as client:
            while not stop.is_set():
                r = _label(client, PAY)
                results.append((r.status_code, r.json().get("policy_version", "")))

    with serve_in_thread(build_app(policy_file)) as url, httpx.Client(base_url=url) as admin:
        versions = {_label(admin, PAY).json()["policy_version"]}
        workers = [threading.Thread(target=hammer, args=(url,)) for _ in range(3)]
        for w in workers:
            w.start()
        try:
            for i in range(6):
                policy_file.write_text(variants[i % 2])
                r = admin.post("/v1/policy/reload", headers=auth("admin-token"))
                assert r.status_code == 200
                versions.add(r.json()["new_version"])
        finally:
            stop.set()
            for w in workers:
                w.join()
    assert len(versions) == 2
    assert results and all(status == 200 for status, _ in results)
    assert {version for _, version in results} <= versions


def test_file_watch_reloads_on_change(policy_file):
    """With watch_policy on, editing the policy file swaps the serving policy without any call."""
    app = build_app(policy_file, config=ServiceConfig(watch_policy=True))
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        old_version = _label(client, PAY).json()["policy_version"]
        policy_file.write_text(_variant(POLICY.read_text(), priority_for_pay="low"))
        deadline = threading.Event()
        for _ in range(200):  # poll up to ~10 s for the watcher; no timing assertion
            r = _label(client, PAY)
            if r.json()["policy_version"] != old_version:
                break
            deadline.wait(0.05)
        assert r.json()["labels"]["priority"] == "low"


def test_service_does_not_start_on_a_bad_policy():
    """Building the service on an invalid policy raises PolicyError listing every problem."""
    with pytest.raises(PolicyError) as info:
        build_app(BAD_POLICY)
    assert len(info.value.issues) == 3


def test_file_watch_follows_included_files_in_other_directories(tmp_path, monkeypatch):
    """With watch_policy on, editing a file the policy includes from another (allowed) directory reloads the policy."""
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("ACTIVELABEL_ALLOW_PATHS", str(shared))  # what `activelabel --allow-path DIR serve` sets
    (shared / "rules.yaml").write_text(
        "rules:\n  - {id: slow, label: speed, value: slow, when: 'event.ms > 100'}\n"
    )
    main = tmp_path / "main"
    main.mkdir()
    policy_file = main / "policy.yaml"
    policy_file.write_text(
        "apiVersion: activelabel/v1\nkind: Policy\nmetadata: {name: included}\n"
        "include: [../shared/rules.yaml]\n"
        "labels:\n  speed: {type: enum, values: [slow, fast]}\n"
    )
    app = build_app(policy_file, config=ServiceConfig(watch_policy=True))
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        assert _label(client, {"ms": 500}).json()["labels"] == {"speed": "slow"}
        (shared / "rules.yaml").write_text(
            "rules:\n  - {id: slow, label: speed, value: fast, when: 'event.ms > 100'}\n"
        )
        wait = threading.Event()
        for _ in range(200):  # poll up to ~10 s for the watcher; no timing assertion
            labels = _label(client, {"ms": 500}).json()["labels"]
            if labels.get("speed") == "fast":
                break
            wait.wait(0.05)
        assert labels == {"speed": "fast"}


def test_file_watch_follows_a_kubernetes_configmap_update(tmp_path):
    """A ConfigMap-style update (new timestamped dir, atomic ..data symlink swap, old dir removed) reloads the policy."""
    import os

    mount = tmp_path / "policy"
    mount.mkdir()
    first = mount / "..2026_11_27_10_00_00.1"
    first.mkdir()
    shutil.copy(POLICY, first / "policy.yaml")
    os.symlink(first.name, mount / "..data")
    os.symlink("..data/policy.yaml", mount / "policy.yaml")
    app = build_app(mount / "policy.yaml", config=ServiceConfig(watch_policy=True))
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        assert _label(client, PAY).json()["labels"]["priority"] == "high"
        second = mount / "..2026_11_27_10_05_00.2"
        second.mkdir()
        (second / "policy.yaml").write_text(_variant(POLICY.read_text(), priority_for_pay="low"))
        os.symlink(second.name, mount / "..data_tmp")
        os.replace(mount / "..data_tmp", mount / "..data")
        shutil.rmtree(first)
        wait = threading.Event()
        for _ in range(200):  # poll up to ~10 s for the watcher; no timing assertion
            priority = _label(client, PAY).json()["labels"]["priority"]
            if priority == "low":
                break
            wait.wait(0.05)
        assert priority == "low"


def test_refused_policy_that_loaded_is_logged_with_its_version(policy_file, caplog):
    """A policy refused for failing its own tests is logged and answered with its candidate version next to the old one."""
    with serve_in_thread(build_app(policy_file)) as url, httpx.Client(base_url=url) as client:
        old_version = _label(client, PAY).json()["policy_version"]
        shutil.copy(FAILING_TESTS_POLICY, policy_file)
        with caplog.at_level(logging.INFO, logger="activelabel.service.reload"):
            body = client.post("/v1/policy/reload", headers=auth("admin-token")).json()
    assert body["new_version"].endswith("/3-failing-tests")
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused and old_version in refused[0] and body["new_version"] in refused[0]
