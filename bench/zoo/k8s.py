"""Kubernetes pod labeling (seed: "Kubernetes pod labeling"): nested AdmissionReviews, exists(), JSON lookup.

Events are the two real AdmissionReviews of ../shared/data/k8s_admission, varied:
namespace (7 in the table, 3 not: a miss ~30%, missing 3%), container images
from 8 registries (the 4-per-300 s guard overflows), privileged true / false /
the string "true" / securityContext absent, metadata.labels.env missing 40% or
outside the enum ("qa") 10%, containers missing or not a list 4%, an empty
container list 3% (the registry rule errors), operation CREATE/UPDATE/DELETE.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.zoo._common import Guard, key, no_guard

HERE = Path(__file__).resolve().parent
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "k8s_admission"
ENVS = frozenset(("prod", "staging", "dev", "test", "unknown"))
NAMESPACES = {"payments": ("payments-team", "prod"), "checkout": ("shop", "prod"), "search": ("search", "staging"),
              "ml": ("ml-platform", "dev"), "kube-system": ("platform", "prod"), "default": ("platform", "dev"),
              "batch": ("data", "qa")}


def materialize(d: Path) -> Path:
    (d / "namespaces.json").write_text(json.dumps({k: {"team": t, "tier": tier} for k, (t, tier) in NAMESPACES.items()}))
    shutil.copy(HERE / "k8s.yaml", d / "policy.yaml")
    return d / "policy.yaml"


def make_labeler(d: Path, *, guards: bool = True, clock: Callable[[], float] = time.monotonic,
                 **_: Any) -> Callable[[dict], dict]:
    table = json.loads((d / "namespaces.json").read_text())
    empty: dict = {}
    reg_guard = Guard(4, "other_registry", 300, clock) if guards else no_guard

    def privileged(containers: Any) -> bool:
        # exists(): true if any element is true; else an error if any element errored; else false.
        if containers.__class__ is not list:
            return False
        for c in containers:
            if c.__class__ is dict:
                sc = c.get("securityContext", empty)
                if sc.__class__ is dict and sc.get("privileged") is True:
                    return True
        return False

    def label(e: dict) -> dict:
        out: dict = {}
        req = e.get("request")
        req = req if req.__class__ is dict else empty
        obj = req.get("object")
        obj = obj if obj.__class__ is dict else empty
        spec = obj.get("spec")
        containers = spec.get("containers") if spec.__class__ is dict else None
        priv = privileged(containers)
        out["privileged"] = priv
        ns = table.get(key(req.get("namespace")), empty)
        team = ns.get("team")
        out["team"] = team if team.__class__ is str else "platform"
        meta = obj.get("metadata")
        labels = meta.get("labels") if meta.__class__ is dict else None
        env = labels.get("env") if labels.__class__ is dict else None
        if env.__class__ is not str or env not in ENVS:
            env = ns.get("tier")
            if env.__class__ is not str or env not in ENVS:
                env = "unknown"
        out["env"] = env
        if priv and env == "prod":
            out["risk"] = "block"
        elif priv or req.get("operation") == "DELETE":
            out["risk"] = "review"
        else:
            out["risk"] = "allow"
        if containers.__class__ is list and containers and containers[0].__class__ is dict:
            img = containers[0].get("image")
            if img.__class__ is str:
                out["registry"] = reg_guard(img.split("/")[0] if "/" in img else "docker.io")
        return out

    return label


def events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    bases = [json.loads((DATA / f).read_text()) for f in
             ("pod_with_privileged_containers.json", "pod_without_privileged_containers.json")]
    registries = ("", "ghcr.io/acme/", "quay.io/x/", "gcr.io/p/", "registry.k8s.io/", "docker.io/library/",
                  "harbor.corp/", "ecr.aws/a/")
    namespaces = [*NAMESPACES, "tenant-a", "tenant-b", "sandbox"]
    out = []
    for _ in range(n):
        e = copy.deepcopy(rng.choice(bases))
        req = e["request"]
        r = rng.random()
        if r < 0.03:
            del req["namespace"]
        else:
            req["namespace"] = rng.choice(namespaces)
        req["operation"] = rng.choice(("CREATE", "CREATE", "UPDATE", "DELETE"))
        obj = req["object"]
        r = rng.random()
        if r < 0.4:
            obj["metadata"].pop("labels", None)
        else:
            obj["metadata"]["labels"] = {"env": rng.choice(("prod", "dev", "test", "qa", "staging"))}
        spec = obj["spec"]
        r = rng.random()
        if r < 0.02:
            del spec["containers"]
            continue_spec = False
        elif r < 0.04:
            spec["containers"] = "nginx"
            continue_spec = False
        elif r < 0.07:
            spec["containers"] = []
            continue_spec = False
        else:
            continue_spec = True
        if continue_spec:
            for c in spec["containers"]:
                c["image"] = rng.choice(registries) + rng.choice(("nginx", "app", "redis")) + ":1"
                p = rng.random()
                if p < 0.3:
                    c.pop("securityContext", None)
                else:
                    c["securityContext"] = {"privileged": rng.choice((True, False, "true"))}
        out.append(e)
    return out
