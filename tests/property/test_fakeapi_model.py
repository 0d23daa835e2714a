"""The fake of the fake: random Service writes checked against a plain dict model.

Each step writes through the official client (create, replace with a fresh or stale RV,
strategic/merge/JSON patches, delete) or through the test hooks, and predicts the outcome from
the model: success or the exact error code, whether the RV moves (no-op writes keep it),
and the generation. Invariants compare the model with the store through the hooks and
through an HTTP list, and check that replaying a watch over the whole history, with and
without a label selector, folds into exactly what a list returns.
"""

from __future__ import annotations

import http.client
import json
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import kubernetes
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from kubernetes.client.exceptions import ApiException

from reconciler.testing.fakeapi import ApiError, FakeApiServer

NAMESPACES = st.sampled_from(["ns1", "ns2"])
NAMES = st.sampled_from(["a", "b", "c"])
LABEL_KEYS = st.sampled_from(["app", "tier"])
LABEL_VALUES = st.sampled_from(["web", "db"])
LABELS = st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=2)
PORTS = st.lists(st.sampled_from([80, 443, 8080]), min_size=1, max_size=3, unique=True)
SELECTOR = "app=web"

Key = tuple[str, str]


@dataclass
class Modelled:
    labels: dict[str, str]
    ports: list[int]
    rv: int = 0
    uid: str = ""
    generation: int = 1


@dataclass
class Observed:
    """The parts of a stored Service the model predicts."""

    labels: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    rv: int = 0
    uid: str = ""
    generation: int = 0

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Observed:
        meta = obj["metadata"]
        return cls(
            labels=dict(meta.get("labels") or {}),
            ports=[p["port"] for p in obj["spec"].get("ports") or []],
            rv=int(meta["resourceVersion"]),
            uid=meta["uid"],
            generation=meta["generation"],
        )


def body(ns: str, name: str, labels: dict[str, str], ports: list[int], rv: str = "") -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": dict(labels)}
    if rv:
        meta["resourceVersion"] = rv
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"ports": [{"port": p} for p in ports]},
    }


class FakeApiMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fake = FakeApiServer().start()
        cfg = kubernetes.client.Configuration()
        cfg.host = self.fake.url
        self.client = kubernetes.client.ApiClient(cfg)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.model: dict[Key, Modelled] = {}
        self.start_rv = self.fake.resource_version
        self.last_rv = int(self.start_rv)

    def teardown(self) -> None:
        self.client.close()
        self.fake.stop()

    # ------------------------------------------------------------------ helpers

    def committed(self, key: Key, obj: dict[str, Any], want: Modelled) -> None:
        """Check a successful write against the prediction and record it."""
        seen = Observed.of(obj)
        old = self.model.get(key)
        changed = old is None or (old.labels, old.ports) != (want.labels, want.ports)
        if changed:
            assert seen.rv > self.last_rv, "every real write takes a new, larger RV"
            self.last_rv = seen.rv
            want.rv = seen.rv
            want.uid = old.uid if old else seen.uid
            if old is not None:
                want.generation = old.generation + (old.ports != want.ports)
        else:
            assert old is not None
            assert seen.rv == old.rv, "a no-op write keeps the RV"
            want.rv, want.uid, want.generation = old.rv, old.uid, old.generation
        assert (seen.labels, seen.ports) == (want.labels, want.ports)
        assert (seen.uid, seen.generation) == (want.uid, want.generation)
        self.model[key] = want

    def expect_error(self, code: int, call: Any, *args: Any, **kw: Any) -> None:
        with pytest.raises(ApiException) as failed:
            call(*args, **kw)
        assert failed.value.status == code, failed.value.body
        assert json.loads(failed.value.body)["code"] == code

    def raw(self, path: str) -> Any:
        parts = urlsplit(self.fake.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def replay(self, query: str, *, ordered: bool) -> tuple[dict[Key, dict[str, Any]], int]:
        """Fold a watch until a bookmark at the current RV; returns (state, bookmark RV).

        Replayed history arrives in RV order; synthetic ADDED events (RV 0) need not.
        """
        parts = urlsplit(self.fake.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
        state: dict[Key, dict[str, Any]] = {}
        last = 0
        try:
            conn.request(
                "GET",
                f"/api/v1/services?watch=1&allowWatchBookmarks=true&timeoutSeconds=30{query}",
            )
            response = conn.getresponse()
            assert response.status == 200
            # Move the RV on with a write the Service watch does not see, so the bookmark is due.
            node = {"apiVersion": "v1", "kind": "Node", "metadata": {"generateName": "n-"}}
            self.fake.create(node)
            assert self.fake.bookmark() >= 1  # earlier replays may not be unregistered yet
            while True:
                event = json.loads(response.readline())
                obj = event["object"]
                rv = int(obj["metadata"]["resourceVersion"])
                assert rv >= last or not ordered, "replayed events arrive in RV order"
                last = max(last, rv)
                if event["type"] == "BOOKMARK":
                    return state, rv
                assert (obj["kind"], obj["apiVersion"]) == ("Service", "v1")
                key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                if event["type"] == "DELETED":
                    assert key in state, "DELETED only for something the watcher had"
                    del state[key]
                else:
                    assert (key in state) == (event["type"] == "MODIFIED")
                    state[key] = obj
        finally:
            conn.close()

    # ------------------------------------------------------------------ rules

    @rule(ns=NAMESPACES, name=NAMES, labels=LABELS, ports=PORTS)
    def create(self, ns: str, name: str, labels: dict[str, str], ports: list[int]) -> None:
        key = (ns, name)
        if key in self.model:
            self.expect_error(
                409, self.core.create_namespaced_service, ns, body(*key, labels, ports)
            )
            return
        created = self.core.create_namespaced_service(
            ns, body(ns, name, labels, ports), _preload_content=False
        )
        self.committed(key, json.loads(created.data), Modelled(labels, ports))

    @rule(ns=NAMESPACES, name=NAMES, labels=LABELS, ports=PORTS, stale=st.booleans())
    def replace(
        self, ns: str, name: str, labels: dict[str, str], ports: list[int], stale: bool
    ) -> None:
        key = (ns, name)
        old = self.model.get(key)
        if old is None:
            call = self.core.replace_namespaced_service
            self.expect_error(404, call, name, ns, body(ns, name, labels, ports, "5"))
            return
        rv = str(old.rv - 1) if stale else str(old.rv)
        new = body(ns, name, labels, ports, rv)
        if stale:
            self.expect_error(409, self.core.replace_namespaced_service, name, ns, new)
            return
        replaced = self.core.replace_namespaced_service(name, ns, new, _preload_content=False)
        self.committed(key, json.loads(replaced.data), Modelled(labels, ports))

    @rule(
        ns=NAMESPACES,
        name=NAMES,
        changes=st.dictionaries(LABEL_KEYS, st.none() | LABEL_VALUES, min_size=1),
    )
    def merge_patch_labels(self, ns: str, name: str, changes: dict[str, str | None]) -> None:
        key = (ns, name)
        patch = {"metadata": {"labels": changes}}
        merge = "application/merge-patch+json"
        old = self.model.get(key)
        if old is None:
            call = self.core.patch_namespaced_service
            self.expect_error(404, call, name, ns, patch, _content_type=merge)
            return
        labels = {k: v for k, v in {**old.labels, **changes}.items() if v is not None}
        patched = self.core.patch_namespaced_service(
            name, ns, patch, _content_type=merge, _preload_content=False
        )
        self.committed(key, json.loads(patched.data), Modelled(labels, list(old.ports)))

    @rule(ns=NAMESPACES, name=NAMES, port=st.sampled_from([80, 443, 8080, 9090]))
    def strategic_patch_port(self, ns: str, name: str, port: int) -> None:
        key = (ns, name)
        patch = {"spec": {"ports": [{"port": port}]}}
        old = self.model.get(key)
        if old is None:
            self.expect_error(404, self.core.patch_namespaced_service, name, ns, patch)
            return
        ports = old.ports if port in old.ports else [*old.ports, port]
        patched = self.core.patch_namespaced_service(name, ns, patch, _preload_content=False)
        self.committed(key, json.loads(patched.data), Modelled(dict(old.labels), list(ports)))

    @rule(ns=NAMESPACES, name=NAMES, label=LABEL_KEYS)
    def json_patch_remove_label(self, ns: str, name: str, label: str) -> None:
        key = (ns, name)
        patch = [{"op": "remove", "path": f"/metadata/labels/{label}"}]
        old = self.model.get(key)
        if old is None or label not in old.labels:
            code = 404 if old is None else 422
            self.expect_error(code, self.core.patch_namespaced_service, name, ns, patch)
            return
        labels = {k: v for k, v in old.labels.items() if k != label}
        patched = self.core.patch_namespaced_service(name, ns, patch, _preload_content=False)
        self.committed(key, json.loads(patched.data), Modelled(labels, list(old.ports)))

    @rule(ns=NAMESPACES, name=NAMES)
    def delete(self, ns: str, name: str) -> None:
        key = (ns, name)
        if key not in self.model:
            self.expect_error(404, self.core.delete_namespaced_service, name, ns)
            return
        deleted = self.core.delete_namespaced_service(name, ns)
        assert deleted.metadata.uid == self.model.pop(key).uid
        self.last_rv += 1
        assert self.fake.resource_version == str(self.last_rv)

    @rule(ns=NAMESPACES, name=NAMES, labels=LABELS, ports=PORTS)
    def hook_apply(self, ns: str, name: str, labels: dict[str, str], ports: list[int]) -> None:
        key = (ns, name)
        applied = self.fake.apply(body(ns, name, labels, ports, "1"))
        self.committed(key, applied, Modelled(labels, ports))

    @rule(ns=NAMESPACES, name=NAMES)
    def hook_delete(self, ns: str, name: str) -> None:
        key = (ns, name)
        if key not in self.model:
            with pytest.raises(ApiError) as missing:
                self.fake.delete("Service", ns, name)
            assert missing.value.code == 404
            return
        self.fake.delete("Service", ns, name)
        del self.model[key]
        self.last_rv += 1

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def replay_matches_list(self, data: st.DataObject) -> None:
        selector = data.draw(st.sampled_from(["", SELECTOR]))
        query = f"&labelSelector={selector}" if selector else ""
        state, rv = self.replay(f"&resourceVersion={self.start_rv}{query}", ordered=True)
        self.last_rv = rv
        listed = self.raw(f"/api/v1/services?labelSelector={selector}")
        assert listed["metadata"]["resourceVersion"] == str(rv)
        expected = {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in listed["items"]}
        assert {k: {**v, "kind": "Service", "apiVersion": "v1"} for k, v in expected.items()} == {
            k: {**v, "kind": "Service", "apiVersion": "v1"} for k, v in state.items()
        }
        synthetic, _ = self.replay(f"&resourceVersion=0{query}", ordered=False)
        self.last_rv = int(self.fake.resource_version)
        assert synthetic.keys() == expected.keys()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def store_matches_model(self) -> None:
        expected = {
            key: Observed(m.labels, m.ports, m.rv, m.uid, m.generation)
            for key, m in self.model.items()
        }
        hooks = {
            (o["metadata"]["namespace"], o["metadata"]["name"]): Observed.of(o)
            for o in self.fake.objects("Service")
        }
        assert hooks == expected
        listed = self.raw("/api/v1/services")
        assert listed["metadata"]["resourceVersion"] == self.fake.resource_version
        over_http = {
            (o["metadata"]["namespace"], o["metadata"]["name"]): Observed.of(o)
            for o in listed["items"]
        }
        assert over_http == expected
        assert all("kind" not in o for o in listed["items"])
        assert int(self.fake.resource_version) == self.last_rv


# A loaded profile (HYPOTHESIS_PROFILE or CI) decides the example count; otherwise stay small.
_profile_chosen = "HYPOTHESIS_PROFILE" in os.environ or "CI" in os.environ
FakeApiMachine.TestCase.settings = (
    settings(stateful_step_count=15, deadline=None)
    if _profile_chosen
    else settings(max_examples=25, stateful_step_count=15, deadline=None)
)
TestFakeApiModel = FakeApiMachine.TestCase
