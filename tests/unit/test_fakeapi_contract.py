"""Contract tests for the fake API server, driven through the unmodified official client.

They pin the behaviour of kube-api-fake.md sections 3 and 4 that the informer and the
controller rely on. Wire-level details the client hides (``watch=True`` spelling, chunked
framing, list items without ``kind``) are checked with ``http.client``. Watches are ended with
``close_watches()`` (a clean server-side end) rather than by waiting for timeouts, so the
whole file runs in a few seconds.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import kubernetes
import pytest
import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from reconciler.testing.fakeapi import ApiError, FakeApiServer

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def api_client(fake: FakeApiServer) -> Iterator[kubernetes.client.ApiClient]:
    cfg = kubernetes.client.Configuration()
    cfg.host = fake.url
    client = kubernetes.client.ApiClient(cfg)
    yield client
    client.close()


@pytest.fixture
def core(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


def service(name: str, ns: str = "ns1", labels: dict[str, str] | None = None, **spec: Any) -> dict:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"ports": [{"port": 80}], **spec},
    }
    return body


def raw_json(response: Any) -> Any:
    """The body of a ``_preload_content=False`` response as JSON."""
    return json.loads(response.data)


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


class Collector:
    """Runs ``Watch().stream`` in a thread and records events or the exception it raises.

    ``finish()`` ends every watch cleanly on the server side; everything queued before that
    point has been delivered, so the recorded list is exact without any sleeps.
    """

    def __init__(self, fake: FakeApiServer, func: Callable[..., Any], *args: Any, **kw: Any):
        self.fake = fake
        self.watch = watch.Watch()
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        kw.setdefault("timeout_seconds", 20)
        kw.setdefault("_request_timeout", (5, 30))
        before = fake.watch_count
        self.thread = threading.Thread(target=self._run, args=(func, args, kw), daemon=True)
        self.thread.start()
        assert fake.wait_for_watches(before + 1), "the watch never opened"

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        try:
            for event in self.watch.stream(func, *args, **kw):
                self.events.append(event)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 10) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the watch did not end"

    def finish(self) -> list[dict[str, Any]]:
        self.fake.close_watches()
        self.join()
        if self.error is not None:
            raise self.error
        return self.events

    def summary(self) -> list[tuple[str, str]]:
        return [(e["type"], e["raw_object"]["metadata"].get("name", "")) for e in self.finish()]


def connect(fake: FakeApiServer) -> http.client.HTTPConnection:
    parts = urlsplit(fake.url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)


# --------------------------------------------------------------------------- CRUD per kind


def test_service_create_sets_server_fields_and_allocates_a_cluster_ip(
    core: kubernetes.client.CoreV1Api,
) -> None:
    created = raw_json(
        core.create_namespaced_service(
            "ns1", service("web", labels={"app": "web"}), _preload_content=False
        )
    )
    meta, spec = created["metadata"], created["spec"]
    assert (created["kind"], created["apiVersion"]) == ("Service", "v1")
    assert meta["namespace"] == "ns1"
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 1
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert RFC3339.match(meta["creationTimestamp"])
    assert spec["clusterIP"].startswith("10.96.")
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["ipFamilies"] == ["IPv4"]
    assert spec["type"] == "ClusterIP"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    headless = core.create_namespaced_service("ns1", service("db", clusterIP="None"))
    assert headless.spec.cluster_ip == "None"
    external = core.create_namespaced_service(
        "ns1", service("ext", type="ExternalName", externalName="example.com")
    )
    assert external.spec.cluster_ip is None
    lb = core.create_namespaced_service("ns1", service("lb", type="LoadBalancer"))
    assert 30000 <= lb.spec.ports[0].node_port <= 32767
    assert lb.spec.cluster_ip != created["spec"]["clusterIP"]


def test_a_cluster_ip_is_held_until_its_service_goes(core: kubernetes.client.CoreV1Api) -> None:
    """The API server's allocator: a taken IP is refused (422), freed by a delete or by a change
    to ExternalName, and never handed out while held."""
    core.create_namespaced_service("ns1", service("a", clusterIP="10.96.0.50"))
    with pytest.raises(ApiException) as taken:
        core.create_namespaced_service("ns2", service("b", "ns2", clusterIP="10.96.0.50"))
    assert taken.value.status == 422
    assert "provided IP is already allocated" in status_of(taken.value)["message"]
    core.delete_namespaced_service("a", "ns1")
    assert core.create_namespaced_service("ns2", service("b", "ns2", clusterIP="10.96.0.50"))
    external = {"type": "ExternalName", "externalName": "example.com", "clusterIP": ""}
    core.patch_namespaced_service("b", "ns2", {"spec": external})
    assert core.create_namespaced_service("ns1", service("c", clusterIP="10.96.0.50"))
    allocated = {
        core.create_namespaced_service("ns3", service(f"s{i}", "ns3")).spec.cluster_ip
        for i in range(20)
    }
    assert len(allocated) == 20 and "10.96.0.50" not in allocated


def test_service_read_list_replace_patch_delete(core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_service("ns1", service("web", labels={"app": "web"}))
    core.create_namespaced_service("ns2", service("web", "ns2"))
    assert [s.metadata.name for s in core.list_namespaced_service("ns1").items] == ["web"]
    everywhere = core.list_service_for_all_namespaces()
    assert [(s.metadata.namespace, s.metadata.name) for s in everywhere.items] == [
        ("ns1", "web"),
        ("ns2", "web"),
    ]

    current = core.read_namespaced_service("web", "ns1")
    current.metadata.labels["tier"] = "front"
    relabelled = core.replace_namespaced_service("web", "ns1", current)
    assert relabelled.metadata.generation == 1  # metadata-only change
    relabelled.spec.ports.append(kubernetes.client.V1ServicePort(port=443, name="https"))
    relabelled.spec.ports[0].name = "http"
    respecced = core.replace_namespaced_service("web", "ns1", relabelled)
    assert respecced.metadata.generation == 2
    assert int(respecced.metadata.resource_version) > int(relabelled.metadata.resource_version)

    # strategic merge (the client's default for dict bodies): ports merge by `port`
    merged = core.patch_namespaced_service(
        "web", "ns1", {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}
    )
    assert [(p.port, p.name, p.target_port) for p in merged.spec.ports] == [
        (80, "http", 80),
        (443, "https", 8443),
    ]
    # merge patch replaces lists whole and deletes with null
    replaced = core.patch_namespaced_service(
        "web",
        "ns1",
        {"metadata": {"labels": {"tier": None}}, "spec": {"ports": [{"port": 8080}]}},
        _content_type="application/merge-patch+json",
    )
    assert [p.port for p in replaced.spec.ports] == [8080]
    assert replaced.metadata.labels == {"app": "web"}
    # JSON patch (a list body), including a failing `test`
    patched = core.patch_namespaced_service(
        "web", "ns1", [{"op": "add", "path": "/metadata/labels/canary", "value": "yes"}]
    )
    assert patched.metadata.labels == {"app": "web", "canary": "yes"}
    with pytest.raises(ApiException) as failed:
        core.patch_namespaced_service(
            "web", "ns1", [{"op": "test", "path": "/metadata/labels/app", "value": "db"}]
        )
    assert failed.value.status == 422

    deleted = core.delete_namespaced_service("web", "ns1")
    assert isinstance(deleted, kubernetes.client.V1Service)  # client 37 types it so
    assert deleted.metadata.name == "web"
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_service("web", "ns1")
    assert missing.value.status == 404


def test_not_found_and_conflicts_are_status_objects(core: kubernetes.client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_service("nope", "ns1")
    assert status_of(missing.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'services "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "services"},
        "code": 404,
    }
    with pytest.raises(ApiException) as put_missing:
        core.replace_namespaced_service("nope", "ns1", service("nope"))
    assert put_missing.value.status == 404

    first = core.create_namespaced_service("ns1", service("web"))
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_service("ns1", service("web"))
    assert exists.value.status == 409
    assert status_of(exists.value)["reason"] == "AlreadyExists"

    core.patch_namespaced_service("web", "ns1", {"metadata": {"labels": {"a": "b"}}})
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_service("web", "ns1", first)
    body = status_of(stale.value)
    assert (stale.value.status, body["reason"]) == (409, "Conflict")
    assert body["message"] == (
        'Operation cannot be fulfilled on services "web": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    first.metadata.resource_version = None  # empty RV: unconditional
    assert not core.replace_namespaced_service("web", "ns1", first).metadata.labels


def test_generate_name_and_no_op_writes(core: kubernetes.client.CoreV1Api) -> None:
    made = core.create_namespaced_service(
        "ns1", {"metadata": {"generateName": "web-"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert re.fullmatch(r"web-[a-z0-9]{5}", made.metadata.name)
    again = core.replace_namespaced_service(made.metadata.name, "ns1", made)
    assert again.metadata.resource_version == made.metadata.resource_version


def test_service_status_subresource(core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_service("ns1", service("web", type="LoadBalancer"))
    ingress = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}
    ignored = core.patch_namespaced_service("web", "ns1", ingress)
    assert ignored.status.load_balancer.ingress is None
    updated = core.patch_namespaced_service_status(
        "web", "ns1", {**ingress, "spec": {"type": "ClusterIP"}}
    )
    assert updated.status.load_balancer.ingress[0].ip == "192.0.2.1"
    assert updated.spec.type == "LoadBalancer"  # /status changes only status
    assert core.read_namespaced_service_status("web", "ns1").status.load_balancer.ingress


def test_server_side_apply_needs_a_field_manager_and_creates(
    core: kubernetes.client.CoreV1Api,
) -> None:
    body = service("web", labels={"app": "web"})
    apply = "application/apply-patch+yaml"
    with pytest.raises(ApiException) as no_manager:
        core.patch_namespaced_service("web", "ns1", body, _content_type=apply)
    assert no_manager.value.status == 422
    assert "fieldManager: Required value" in status_of(no_manager.value)["message"]
    created = core.patch_namespaced_service(
        "web", "ns1", body, field_manager="test", _content_type=apply
    )
    assert created.metadata.uid
    assert created.spec.cluster_ip
    body["metadata"]["labels"]["tier"] = "front"
    applied = core.patch_namespaced_service(
        "web", "ns1", body, field_manager="test", _content_type=apply
    )
    assert applied.metadata.labels == {"app": "web", "tier": "front"}
    assert applied.metadata.uid == created.metadata.uid


def test_endpointslices(api_client: kubernetes.client.ApiClient) -> None:
    discovery = kubernetes.client.DiscoveryV1Api(api_client)
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
    created = discovery.create_namespaced_endpoint_slice("ns1", slice_)
    assert created.metadata.generation == 1
    other = {**slice_, "metadata": {"name": "db-x", "labels": {"kubernetes.io/service-name": "db"}}}
    discovery.create_namespaced_endpoint_slice("ns1", other)
    selected = discovery.list_namespaced_endpoint_slice(
        "ns1", label_selector="kubernetes.io/service-name=web"
    )
    assert [s.metadata.name for s in selected.items] == ["web-abc"]
    assert len(discovery.list_endpoint_slice_for_all_namespaces().items) == 2

    # endpoints is an atomic list: a strategic merge patch replaces it
    patched = discovery.patch_namespaced_endpoint_slice(
        "web-abc", "ns1", {"endpoints": [{"addresses": ["10.0.0.2"]}]}
    )
    assert [e.addresses for e in patched.endpoints] == [["10.0.0.2"]]
    assert patched.metadata.generation == 2
    patched.endpoints[0].conditions = kubernetes.client.V1EndpointConditions(ready=False)
    replaced = discovery.replace_namespaced_endpoint_slice("web-abc", "ns1", patched)
    assert replaced.endpoints[0].conditions.ready is False
    with pytest.raises(ApiException) as missing:
        discovery.replace_namespaced_endpoint_slice(
            "nope", "ns1", {**slice_, "metadata": {"name": "nope"}}
        )
    assert missing.value.status == 404
    gone = discovery.delete_namespaced_endpoint_slice("web-abc", "ns1")
    assert gone.status == "Success"


def test_nodes_are_cluster_scoped_with_a_status_subresource(
    core: kubernetes.client.CoreV1Api,
) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"zone": "a"}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]},
    }
    created = core.create_node(node)
    assert created.metadata.namespace is None
    assert created.status.addresses[0].address == "192.0.2.10"  # Node create keeps status
    core.create_node({**node, "metadata": {"name": "node-b"}, "spec": {"unschedulable": True}})
    assert [n.metadata.name for n in core.list_node(label_selector="zone=a").items] == ["node-a"]
    cordoned = core.list_node(field_selector="spec.unschedulable=true").items
    assert [n.metadata.name for n in cordoned] == ["node-b"]

    ready = {"type": "Ready", "status": "True"}
    core.patch_node_status("node-a", {"status": {"conditions": [ready]}})
    both = core.patch_node_status(
        "node-a", {"status": {"conditions": [{"type": "MemoryPressure", "status": "False"}]}}
    )
    assert [c.type for c in both.status.conditions] == ["Ready", "MemoryPressure"]
    ignored = core.patch_node("node-a", {"status": {"conditions": None}})
    assert len(ignored.status.conditions) == 2
    core.delete_node("node-b")
    assert [n.metadata.name for n in core.list_node().items] == ["node-a"]


def test_core_and_events_v1_events_share_storage(
    api_client: kubernetes.client.ApiClient, core: kubernetes.client.CoreV1Api
) -> None:
    events = kubernetes.client.EventsV1Api(api_client)
    core.create_namespaced_event(
        "ns1",
        {
            "metadata": {"name": "web.1"},
            "involvedObject": {"kind": "Service", "name": "web", "namespace": "ns1"},
            "reason": "Programmed",
            "message": "farm created",
            "type": "Normal",
            "source": {"component": "kube-nftlb"},
        },
    )
    events.create_namespaced_event(
        "ns1",
        {
            "metadata": {"name": "db.1"},
            "regarding": {"kind": "Service", "name": "db", "namespace": "ns1"},
            "reason": "Failed",
            "note": "nftlb said no",
            "type": "Warning",
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "reportingController": "kube-nftlb",
            "reportingInstance": "kube-nftlb-0",
            "action": "Program",
        },
    )
    # Raw JSON: like a real server, the v1 view of a core Event without eventTime has
    # "eventTime": null, which the client's EventsV1Event model refuses to deserialise.
    as_v1 = raw_json(
        events.list_namespaced_event(
            "ns1", field_selector="regarding.name=web", _preload_content=False
        )
    )["items"]
    assert [(e["metadata"]["name"], e["note"], e["regarding"]["name"]) for e in as_v1] == [
        ("web.1", "farm created", "web")
    ]
    assert as_v1[0]["eventTime"] is None
    assert as_v1[0]["deprecatedSource"]
    typed = events.list_namespaced_event("ns1", field_selector="reportingController=kube-nftlb")
    assert [(e.metadata.name, e.note) for e in typed.items] == [("db.1", "nftlb said no")]
    as_core = core.list_namespaced_event("ns1", field_selector="involvedObject.name=db").items
    assert [(e.metadata.name, e.message, e.reason) for e in as_core] == [
        ("db.1", "nftlb said no", "Failed")
    ]
    warnings = core.list_event_for_all_namespaces(field_selector="type=Warning,reason=Failed")
    assert [e.metadata.name for e in warnings.items] == ["db.1"]
    with pytest.raises(ApiException) as unknown:
        core.list_namespaced_event("ns1", field_selector="spec.nope=1")
    assert unknown.value.status == 400
    assert status_of(unknown.value)["message"] == "field label not supported: spec.nope"
    # PUT creates Events, as on a real server
    put = core.replace_namespaced_event(
        "web.2", "ns1", {"metadata": {"name": "web.2"}, "involvedObject": {"name": "web"}}
    )
    assert put.metadata.uid


def test_leases_support_the_leader_election_pattern(
    api_client: kubernetes.client.ApiClient,
) -> None:
    leases = kubernetes.client.CoordinationV1Api(api_client)
    body = {"metadata": {"name": "kube-nftlb"}, "spec": {"holderIdentity": "a"}}
    created = leases.create_namespaced_lease("kube-system", body)
    created.spec.holder_identity = "b"
    renewed = leases.replace_namespaced_lease("kube-nftlb", "kube-system", created)
    assert renewed.spec.holder_identity == "b"
    with pytest.raises(ApiException) as stale:
        leases.replace_namespaced_lease("kube-nftlb", "kube-system", created)
    assert status_of(stale.value)["message"].startswith(
        'Operation cannot be fulfilled on leases.coordination.k8s.io "kube-nftlb"'
    )
    assert status_of(stale.value)["details"] == {
        "name": "kube-nftlb",
        "group": "coordination.k8s.io",
        "kind": "leases",
    }
    made = leases.replace_namespaced_lease("other", "kube-system", {"metadata": {"name": "other"}})
    assert made.metadata.uid  # PUT to a missing Lease creates it
    assert leases.delete_namespaced_lease("other", "kube-system").status == "Success"


def test_finalizers_defer_deletion(fake: FakeApiServer, core: kubernetes.client.CoreV1Api) -> None:
    svc = service("web")
    svc["metadata"]["finalizers"] = ["example.com/hold"]
    core.create_namespaced_service("ns1", svc)
    collector = Collector(fake, core.list_namespaced_service, "ns1")
    pending = core.delete_namespaced_service("web", "ns1")
    assert pending.metadata.deletion_timestamp is not None
    assert core.read_namespaced_service("web", "ns1").metadata.deletion_timestamp
    core.patch_namespaced_service(
        "web",
        "ns1",
        {"metadata": {"finalizers": None}},
        _content_type="application/merge-patch+json",
    )
    with pytest.raises(ApiException):
        core.read_namespaced_service("web", "ns1")
    assert collector.summary() == [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "web")]


# --------------------------------------------------------------------------- resourceVersions


def test_resource_versions_are_one_global_increasing_integer(
    fake: FakeApiServer, api_client: kubernetes.client.ApiClient, core: kubernetes.client.CoreV1Api
) -> None:
    leases = kubernetes.client.CoordinationV1Api(api_client)
    seen = [
        core.create_namespaced_service("ns1", service("a")).metadata.resource_version,
        leases.create_namespaced_lease(
            "ns1", {"metadata": {"name": "l"}}
        ).metadata.resource_version,
        core.patch_namespaced_service(
            "a", "ns1", {"metadata": {"labels": {"x": "1"}}}
        ).metadata.resource_version,
        core.create_node({"metadata": {"name": "n"}}).metadata.resource_version,
    ]
    core.delete_namespaced_service("a", "ns1")
    numbers = [int(rv) for rv in seen]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)
    listed = core.list_namespaced_service("ns1").metadata.resource_version
    assert int(listed) == numbers[-1] + 1 == int(fake.resource_version)


def test_watch_from_a_list_rv_sees_exactly_the_later_changes(
    fake: FakeApiServer, core: kubernetes.client.CoreV1Api
) -> None:
    for name in ("a", "b"):
        core.create_namespaced_service("ns1", service(name))
    listed = core.list_namespaced_service("ns1").metadata.resource_version
    b_rv = core.read_namespaced_service("b", "ns1").metadata.resource_version
    core.create_namespaced_service("ns1", service("c"))
    core.patch_namespaced_service("a", "ns1", {"metadata": {"labels": {"x": "1"}}})
    core.delete_namespaced_service("b", "ns1")
    core.create_namespaced_service("other", service("d", "other"))

    collector = Collector(fake, core.list_namespaced_service, "ns1", resource_version=listed)
    core.patch_namespaced_service("c", "ns1", {"metadata": {"labels": {"x": "2"}}})
    events = collector.finish()
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "c"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
        ("MODIFIED", "c"),
    ]
    rvs = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)
    assert rvs[0] > int(listed)
    deleted = events[2]["raw_object"]
    assert int(deleted["metadata"]["resourceVersion"]) > int(b_rv)  # DELETED carries a new RV
    assert (deleted["kind"], deleted["apiVersion"]) == ("Service", "v1")
    assert collector.watch.resource_version == str(rvs[-1])


def test_watch_without_rv_starts_with_synthetic_added(
    fake: FakeApiServer, core: kubernetes.client.CoreV1Api
) -> None:
    fake.seed([service("b"), service("a"), service("x", "elsewhere")])
    collector = Collector(fake, core.list_namespaced_service, "ns1")
    core.create_namespaced_service("ns1", service("c"))
    assert collector.summary() == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]
    zero = Collector(fake, core.list_service_for_all_namespaces, resource_version="0")
    assert zero.summary() == [("ADDED", "x"), ("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]


def test_bookmarks_only_when_asked_and_the_rv_advanced(
    fake: FakeApiServer, core: kubernetes.client.CoreV1Api
) -> None:
    core.create_namespaced_service("ns1", service("a"))
    listed = core.list_namespaced_service("ns1").metadata.resource_version
    asking = Collector(
        fake, core.list_namespaced_service, "ns1", resource_version=listed,
        allow_watch_bookmarks=True,
    )  # fmt: skip
    silent = Collector(fake, core.list_namespaced_service, "ns1", resource_version=listed)
    assert fake.bookmark() == 0  # nothing happened since the list
    fake.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}})
    assert fake.bookmark() == 1
    assert fake.bookmark() == 0  # already told
    events = asking.finish()
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert events[0]["object"] == {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": fake.resource_version},
    }
    assert asking.watch.resource_version == fake.resource_version
    assert silent.finish() == []
    request = next(r for r in fake.requests if r.query.get("allowWatchBookmarks"))
    assert request.query["allowWatchBookmarks"] == "True"


def test_expired_history_is_a_410_for_the_client(
    fake: FakeApiServer, core: kubernetes.client.CoreV1Api
) -> None:
    core.create_namespaced_service("ns1", service("a"))
    old = core.list_namespaced_service("ns1").metadata.resource_version
    core.create_namespaced_service("ns1", service("b"))
    fake.expire_history()
    with pytest.raises(ApiException) as expired:
        for _ in watch.Watch().stream(
            core.list_namespaced_service, "ns1", resource_version=old, timeout_seconds=5
        ):
            pass
    assert expired.value.status == 410
    assert (
        expired.value.reason
        == f"Expired: too old resource version: {old} ({fake.resource_version})"
    )
    # without timeout_seconds the client silently retries once with the same RV, then raises
    fake.clear_requests()
    with pytest.raises(ApiException) as retried:
        for _ in watch.Watch().stream(core.list_namespaced_service, "ns1", resource_version=old):
            pass
    assert retried.value.status == 410
    assert [r.query["resourceVersion"] for r in fake.requests] == [old, old]
    # a resume from the current RV is fine
    current = core.list_namespaced_service("ns1").metadata.resource_version
    collector = Collector(fake, core.list_namespaced_service, "ns1", resource_version=current)
    core.delete_namespaced_service("a", "ns1")
    assert collector.summary() == [("DELETED", "a")]


def test_history_ring_is_bounded() -> None:
    with FakeApiServer(history_size=3) as small:
        small.seed([service(name) for name in "abcde"])  # RVs 2..6; the ring keeps 4..6
        conn = connect(small)
        for rv, first in [("2", "ERROR"), ("3", "ADDED")]:
            conn.request("GET", f"/api/v1/services?watch=1&resourceVersion={rv}&timeoutSeconds=1")
            response = conn.getresponse()
            assert json.loads(response.readline())["type"] == first
            conn.close()


def test_expired_wire_form_is_200_with_one_error_event(fake: FakeApiServer) -> None:
    fake.seed([service("a"), service("b")])
    fake.expire_history()
    conn = connect(fake)
    conn.request("GET", "/api/v1/namespaces/ns1/services?watch=1&resourceVersion=2")
    response = conn.getresponse()
    assert response.status == 200
    lines = response.read().splitlines()  # ends cleanly after the event
    assert [json.loads(line) for line in lines] == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "too old resource version: 2 (3)",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]
    conn.close()


# --------------------------------------------------------------------------- selectors


def test_label_selectors_on_lists(fake: FakeApiServer, core: kubernetes.client.CoreV1Api) -> None:
    fake.seed(
        [
            service("web", labels={"app": "web", "tier": "front"}),
            service("db", labels={"app": "db", "tier": "back"}),
            service("cache", labels={"app": "cache", "canary": "yes"}),
            service("bare"),
        ]
    )

    def names(selector: str) -> list[str]:
        return [
            s.metadata.name
            for s in core.list_namespaced_service("ns1", label_selector=selector).items
        ]

    assert names("app=web") == ["web"]
    assert names("app==web") == ["web"]
    assert names("app!=web") == ["bare", "cache", "db"]
    assert names("app in (web, db)") == ["db", "web"]
    assert names("app notin (web,db)") == ["bare", "cache"]
    assert names("tier") == ["db", "web"]
    assert names("!canary,app") == ["db", "web"]
    assert names("app,tier=back") == ["db"]
    assert names("") == ["bare", "cache", "db", "web"]
    for bad, message in [
        ("app in", "unable to parse requirement: found '' expected: '('"),
        ("app=web,", "found '', expected: identifier after ','"),
        ("app=(x", None),
    ]:
        with pytest.raises(ApiException) as error:
            names(bad)
        body = status_of(error.value)
        assert (error.value.status, body["reason"]) == (400, "BadRequest")
        if message:
            assert body["message"] == message


def test_field_selectors_on_lists(fake: FakeApiServer, core: kubernetes.client.CoreV1Api) -> None:
    fake.seed([service("web"), service("db"), service("web", "ns2")])
    found = core.list_service_for_all_namespaces(field_selector="metadata.name=web").items
    assert [s.metadata.namespace for s in found] == ["ns1", "ns2"]
    found = core.list_service_for_all_namespaces(
        field_selector="metadata.namespace!=ns2,metadata.name!=web"
    ).items
    assert [s.metadata.name for s in found] == ["db"]
    with pytest.raises(ApiException) as unknown:
        core.list_namespaced_service("ns1", field_selector="spec.type=ClusterIP")
    assert status_of(unknown.value)["message"] == (
        '"spec.type" is not a known field selector: only "metadata.name", "metadata.namespace"'
    )
    with pytest.raises(ApiException) as garbled:
        core.list_namespaced_service("ns1", field_selector="metadata.name")
    assert garbled.value.status == 400


def test_selector_watches_apply_the_deleted_added_edge_rule(
    fake: FakeApiServer, core: kubernetes.client.CoreV1Api
) -> None:
    fake.seed([service("web", labels={"app": "web"})])
    rv = core.list_namespaced_service("ns1").metadata.resource_version
    selective = Collector(
        fake, core.list_namespaced_service, "ns1", label_selector="app=web", resource_version=rv
    )
    everything = Collector(fake, core.list_namespaced_service, "ns1", resource_version=rv)
    moved_out = core.patch_namespaced_service("web", "ns1", {"metadata": {"labels": {"app": "x"}}})
    core.patch_namespaced_service("web", "ns1", {"metadata": {"labels": {"other": "1"}}})
    core.patch_namespaced_service("web", "ns1", {"metadata": {"labels": {"app": "web"}}})
    events = selective.finish()
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]
    left = events[0]["raw_object"]["metadata"]
    assert left["labels"] == {"app": "web"}  # the last state that matched...
    assert left["resourceVersion"] == moved_out.metadata.resource_version  # ...at the new RV
    assert [e["type"] for e in everything.finish()] == ["MODIFIED"] * 3


def test_item_path_watch_is_a_name_field_selector(fake: FakeApiServer) -> None:
    fake.seed([service("db"), service("web")])
    conn = connect(fake)
    conn.request("GET", "/api/v1/namespaces/ns1/services/web?watch=true&timeoutSeconds=10")
    response = conn.getresponse()
    first = json.loads(response.readline())
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "web")
    fake.patch("Service", "ns1", "db", {"metadata": {"labels": {"a": "1"}}})
    fake.patch("Service", "ns1", "web", {"metadata": {"labels": {"a": "1"}}})
    second = json.loads(response.readline())
    assert (second["type"], second["object"]["metadata"]["name"]) == ("MODIFIED", "web")
    conn.close()
    assert fake.wait_for_watches(0)  # the fake notices the client hanging up


# --------------------------------------------------------------------------- wire details


@pytest.mark.parametrize("flag", ["True", "true", "1", "t", "T", "TRUE"])
def test_every_parse_bool_spelling_of_watch_streams(fake: FakeApiServer, flag: str) -> None:
    fake.seed([service("web")])
    conn = connect(fake)
    conn.request("GET", f"/api/v1/namespaces/ns1/services?watch={flag}&timeoutSeconds=10")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.getheader("Content-Type") == "application/json"
    event = json.loads(response.readline())
    assert event["type"] == "ADDED"
    assert (event["object"]["kind"], event["object"]["apiVersion"]) == ("Service", "v1")
    conn.close()


def test_watch_flag_false_lists_and_garbage_is_400(fake: FakeApiServer) -> None:
    fake.seed([service("web")])
    conn = connect(fake)
    conn.request("GET", "/api/v1/namespaces/ns1/services?watch=false")
    listed = json.loads(conn.getresponse().read())
    assert listed["kind"] == "ServiceList"
    conn.request("GET", "/api/v1/namespaces/ns1/services?watch=yes")
    response = conn.getresponse()
    assert response.status == 400
    assert json.loads(response.read())["reason"] == "BadRequest"
    conn.close()


def test_list_items_carry_no_kind(fake: FakeApiServer, core: kubernetes.client.CoreV1Api) -> None:
    fake.seed([service("web")])
    body = raw_json(core.list_namespaced_service("ns1", _preload_content=False))
    assert (body["kind"], body["apiVersion"]) == ("ServiceList", "v1")
    assert body["metadata"] == {"resourceVersion": fake.resource_version}
    assert "kind" not in body["items"][0]
    assert "apiVersion" not in body["items"][0]
    slices = raw_json(
        kubernetes.client.DiscoveryV1Api(core.api_client).list_endpoint_slice_for_all_namespaces(
            _preload_content=False
        )
    )
    assert (slices["kind"], slices["apiVersion"]) == ("EndpointSliceList", "discovery.k8s.io/v1")


def test_timeout_seconds_ends_cleanly_with_a_bookmark_just_before(fake: FakeApiServer) -> None:
    fake.seed([service("web")])
    rv = fake.resource_version
    fake.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}})  # RV moves on
    conn = connect(fake)
    started = time.monotonic()
    conn.request(
        "GET",
        f"/api/v1/namespaces/ns1/services?watch=1&timeoutSeconds=1&resourceVersion={rv}"
        "&allowWatchBookmarks=true",
    )
    response = conn.getresponse()
    lines = response.read().splitlines()  # raises IncompleteRead without the zero chunk
    elapsed = time.monotonic() - started
    assert [json.loads(line)["type"] for line in lines] == ["BOOKMARK"]
    assert 0.5 < elapsed < 5
    conn.request("GET", "/api/v1/namespaces/ns1/services")  # the connection is reusable
    assert json.loads(conn.getresponse().read())["kind"] == "ServiceList"
    conn.close()


# --------------------------------------------------------------------------- failure hooks


def test_drop_watches_is_a_protocol_error_in_the_client(
    fake: FakeApiServer, core: kubernetes.client.CoreV1Api
) -> None:
    fake.seed([service("web")])
    collector = Collector(fake, core.list_namespaced_service, "ns1")
    deadline = time.monotonic() + 5
    while not collector.events and time.monotonic() < deadline:  # the stream is flowing
        time.sleep(0.01)
    assert fake.drop_watches() == 1
    assert fake.watch_count == 0
    collector.join()
    assert isinstance(collector.error, urllib3.exceptions.ProtocolError)
    assert [e["type"] for e in collector.events] == ["ADDED"]
    assert fake.wait_for_watches(0)
    assert fake.watch_count == 0


def test_stalled_watch_trips_the_client_read_timeout(
    fake: FakeApiServer, core: kubernetes.client.CoreV1Api
) -> None:
    fake.seed([service("web")])
    collector = Collector(
        fake, core.list_namespaced_service, "ns1", timeout_seconds=30, _request_timeout=(1, 1)
    )
    stop = threading.Event()

    def churn() -> None:  # an event every 0.2 s keeps a healthy stream under the 1 s timeout
        n = 0
        while not stop.is_set():
            n += 1
            fake.patch("Service", "ns1", "web", {"metadata": {"labels": {"n": str(n)}}})
            stop.wait(0.2)

    writer = threading.Thread(target=churn, daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + 5
        while len(collector.events) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert collector.error is None
        assert len(collector.events) >= 6
        assert fake.stall_watches(5) == 1
        collector.join()
    finally:
        stop.set()
        writer.join()
    assert isinstance(collector.error, urllib3.exceptions.ReadTimeoutError)


def test_fail_next(fake: FakeApiServer, api_client: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    leases = kubernetes.client.CoordinationV1Api(api_client)
    fake.fail_next("list", 500)
    with pytest.raises(ApiException) as failed:
        core.list_namespaced_service("ns1")
    assert failed.value.status == 500
    assert status_of(failed.value)["reason"] == "InternalError"
    assert core.list_namespaced_service("ns1").items == []  # only the next one

    fake.fail_next("create", 429, path_contains="/leases")
    core.create_namespaced_service("ns1", service("web"))  # not matched
    with pytest.raises(ApiException) as throttled:
        leases.create_namespaced_lease("ns1", {"metadata": {"name": "l"}})
    assert throttled.value.status == 429
    assert throttled.value.headers["Retry-After"] == "1"
    leases.create_namespaced_lease("ns1", {"metadata": {"name": "l"}})

    fake.fail_next("watch", 410, message="too old resource version: 1 (2)")
    with pytest.raises(ApiException) as expired:
        for _ in watch.Watch().stream(
            core.list_namespaced_service, "ns1", resource_version="1", timeout_seconds=5
        ):
            pass
    assert expired.value.status == 410

    with pytest.raises(ValueError, match="unknown verb"):
        fake.fail_next("GETS", 500)


# --------------------------------------------------------------------------- hooks


def test_hooks_share_state_and_events_with_http(
    fake: FakeApiServer, core: kubernetes.client.CoreV1Api
) -> None:
    seeded = fake.seed(
        [
            {
                **service("web", type="LoadBalancer"),
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}},
            },
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
        ]
    )
    assert seeded[0]["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.7"}]
    assert core.read_namespaced_service("web", "ns1").status.load_balancer.ingress[0].ip
    collector = Collector(
        fake, core.list_namespaced_service, "ns1", resource_version=fake.resource_version
    )
    changed = service("web", type="LoadBalancer", ports=[{"port": 81}])
    changed["metadata"]["resourceVersion"] = "1"  # ignored by apply
    fake.apply(changed)
    fake.apply(service("db"))
    with pytest.raises(ApiError) as stale:
        fake.update(
            {**service("db"), "metadata": {**service("db")["metadata"], "resourceVersion": "2"}}
        )
    assert stale.value.code == 409
    fake.delete("Service", "ns1", "db")
    with pytest.raises(ApiError):
        fake.delete("Service", "ns1", "db")
    assert collector.summary() == [("MODIFIED", "web"), ("ADDED", "db"), ("DELETED", "db")]
    [web] = fake.objects("Service")
    assert web["spec"]["ports"][0]["port"] == 81
    assert web["status"]["loadBalancer"]["ingress"]
    web["metadata"]["name"] = "mutated"  # copies, not the store
    assert fake.get("Service", "ns1", "web") is not None
    assert fake.get("Service", "ns1", "mutated") is None
    assert [n["metadata"]["name"] for n in fake.objects("Node")] == ["n1"]


def test_requests_log_and_watch_count(
    fake: FakeApiServer, core: kubernetes.client.CoreV1Api
) -> None:
    core.list_namespaced_service("ns1", label_selector="app=web")
    assert fake.requests[-1] == (
        "GET",
        "/api/v1/namespaces/ns1/services",
        {"labelSelector": "app=web"},
    )
    assert fake.watch_count == 0
    collector = Collector(fake, core.list_namespaced_service, "ns1")
    assert fake.watch_count == 1
    collector.finish()
    assert fake.wait_for_watches(0)
    assert fake.watch_count == 0
