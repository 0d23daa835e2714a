"""Parsing Services, EndpointSlices and Nodes from the API's JSON, junk included."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from reconciler.core.farms import Family, Protocol
from reconciler.core.kube import (
    ClusterState,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Node,
    NodeAddress,
    Service,
    ServicePort,
    TargetRef,
    parse_endpoint_slice,
    parse_node,
    parse_objects,
    parse_service,
)
from reconciler.core.problems import ObjectRef, Problem


def service(**spec: Any) -> dict[str, Any]:
    spec.setdefault("clusterIP", "10.96.0.10")
    spec.setdefault("ports", [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "u-1",
            "resourceVersion": "42",
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"b": "2", "a": "1"},
        },
        "spec": spec,
    }


def endpoint_slice(
    endpoints: list[Any] | None = None,
    ports: list[Any] | None = None,
    address_type: str = "IPv4",
    name: str = "web-abc",
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "resourceVersion": "7",
            "labels": {"kubernetes.io/service-name": "web"},
            "annotations": {
                "endpoints.kubernetes.io/last-change-trigger-time": "2024-01-01T00:00:01Z"
            },
        },
        "addressType": address_type,
        "endpoints": endpoints
        if endpoints is not None
        else [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}, "nodeName": "n1"}],
        "ports": ports
        if ports is not None
        else [{"name": "http", "protocol": "TCP", "port": 8080}],
    }


def node(addresses: list[Any], name: str = "n1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "3"},
        "status": {"addresses": addresses},
    }


def parse_ok(obj: dict[str, Any]) -> Service:
    svc, problems = parse_service(obj)
    assert problems == []
    assert svc is not None
    return svc


def reasons(problems: list[Problem]) -> list[str]:
    return [p.reason for p in problems]


# -- Service ---------------------------------------------------------------------------------------


def test_a_complete_service_is_parsed_field_by_field() -> None:
    obj = service(
        type="LoadBalancer",
        clusterIPs=["10.96.0.10", "fd00::10"],
        ipFamilies=["IPv4", "IPv6"],
        ports=[
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web", "nodePort": 30080},
            {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 5353, "nodePort": 30053},
        ],
        externalIPs=["203.0.113.7"],
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 75}},
        externalTrafficPolicy="Local",
        internalTrafficPolicy="Local",
    )
    obj["status"] = {
        "loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"hostname": "lb.example.com"}]}
    }
    svc = parse_ok(obj)
    assert svc == Service(
        namespace="shop",
        name="web",
        uid="u-1",
        resource_version="42",
        type="LoadBalancer",
        cluster_ips=("10.96.0.10", "fd00::10"),
        ip_families=(Family.IPV4, Family.IPV6),
        ports=(
            ServicePort("http", Protocol.TCP, 80, "web", 30080),
            ServicePort("dns", Protocol.UDP, 53, 5353, 30053),
        ),
        external_ips=("203.0.113.7",),
        load_balancer_ips=("198.51.100.1",),
        session_affinity="ClientIP",
        affinity_timeout=75,
        external_traffic_policy="Local",
        internal_traffic_policy="Local",
        labels=(("app", "web"), ("tier", "front")),
        annotations=(("a", "1"), ("b", "2")),
        creation_timestamp="2024-01-01T00:00:00Z",
    )
    assert svc.key == ("shop", "web")
    assert svc.label("app") == "web"
    assert svc.label("nope") is None
    assert svc.annotation("a") == "1"
    assert not svc.is_headless
    assert svc.cluster_ip(Family.IPV6) == "fd00::10"


def test_defaults_of_a_minimal_service() -> None:
    svc = parse_ok(
        {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert svc.type == "ClusterIP"
    assert svc.cluster_ips == ()
    assert svc.is_headless  # nothing to program without a cluster IP
    assert svc.ports == (ServicePort("", Protocol.TCP, 80, None, None),)
    assert svc.session_affinity == "None"
    assert svc.affinity_timeout is None
    assert svc.external_traffic_policy == "Cluster"
    assert svc.internal_traffic_policy == "Cluster"
    assert svc.labels == svc.annotations == ()
    assert svc.uid == svc.resource_version == svc.creation_timestamp == ""


def test_a_missing_namespace_is_default_as_kubectl_applies_it() -> None:
    svc = parse_ok({"metadata": {"name": "web"}, "spec": {}})
    assert svc.key == ("default", "web")


def test_cluster_ips_fall_back_to_cluster_ip_and_families_are_inferred() -> None:
    svc = parse_ok(service(clusterIP="FD00::0:1"))
    assert svc.cluster_ips == ("fd00::1",)
    assert svc.ip_families == (Family.IPV6,)
    assert svc.cluster_ip(Family.IPV4) is None


def test_cluster_ips_win_over_cluster_ip_and_keep_the_primary_first() -> None:
    svc = parse_ok(service(clusterIP="fd00::1", clusterIPs=["fd00::1", "10.96.0.1"]))
    assert svc.cluster_ips == ("fd00::1", "10.96.0.1")
    assert svc.ip_families == (Family.IPV6, Family.IPV4)


def test_ipv6_spellings_count_once() -> None:
    svc = parse_ok(
        service(clusterIPs=["FD00::1", "fd00:0::1"], externalIPs=["2001:DB8::1", "2001:db8::1"])
    )
    assert svc.cluster_ips == ("fd00::1",)
    assert svc.external_ips == ("2001:db8::1",)


def test_headless_service() -> None:
    svc = parse_ok(service(clusterIP="None", clusterIPs=["None"], ipFamilies=["IPv4"], ports=[]))
    assert svc.cluster_ips == ("None",)
    assert svc.is_headless
    assert svc.ip_families == (Family.IPV4,)
    assert svc.cluster_ip(Family.IPV4) is None


def test_unallocated_cluster_ip_counts_as_headless() -> None:
    assert parse_ok(service(clusterIP="")).is_headless


def test_external_name_service() -> None:
    obj = service(type="ExternalName", externalName="db.example.com", ports=[])
    del obj["spec"]["clusterIP"]
    svc = parse_ok(obj)
    assert svc.type == "ExternalName"
    assert svc.cluster_ips == ()
    assert svc.ip_families == ()


def test_legacy_global_traffic_policy_is_cluster() -> None:
    assert parse_ok(service(externalTrafficPolicy="Global")).external_traffic_policy == "Cluster"


@pytest.mark.parametrize(
    ("field", "value", "attribute", "default"),
    [
        ("type", "Magic", "type", "ClusterIP"),
        ("sessionAffinity", "Sticky", "session_affinity", "None"),
        ("externalTrafficPolicy", "Nearest", "external_traffic_policy", "Cluster"),
        ("internalTrafficPolicy", 3, "internal_traffic_policy", "Cluster"),
    ],
)
def test_unknown_enum_values_fall_back_with_a_problem(
    field: str, value: Any, attribute: str, default: str
) -> None:
    svc, problems = parse_service(service(**{field: value}))
    assert svc is not None
    assert getattr(svc, attribute) == default
    assert reasons(problems) == ["InvalidField"]
    assert problems[0].key == f"spec.{field}"
    assert problems[0].ref == ObjectRef("Service", "shop", "web")
    assert str(value) in problems[0].message


def test_unknown_protocol_drops_only_that_port() -> None:
    svc, problems = parse_service(
        service(ports=[{"name": "q", "protocol": "QUIC", "port": 443}, {"name": "h", "port": 80}])
    )
    assert svc is not None
    assert [p.name for p in svc.ports] == ["h"]
    assert reasons(problems) == ["UnknownProtocol"]
    assert problems[0].value == "QUIC"
    assert problems[0].allowed == ("TCP", "UDP", "SCTP")


@pytest.mark.parametrize("port", [0, 65536, -1, "80", 80.0, True, None, [80]])
def test_a_port_that_is_not_1_to_65535_is_dropped(port: Any) -> None:
    svc, problems = parse_service(
        service(ports=[{"name": "bad", "port": port}, {"name": "good", "port": 8443}])
    )
    assert svc is not None
    assert [p.name for p in svc.ports] == ["good"]
    assert reasons(problems) == ["InvalidPort"]
    assert problems[0].key == "spec.ports[0].port"


def test_bad_target_and_node_ports_are_dropped_but_the_port_stays() -> None:
    svc, problems = parse_service(
        service(ports=[{"name": "h", "port": 80, "targetPort": 0, "nodePort": "x"}])
    )
    assert svc is not None
    assert svc.ports == (ServicePort("h", Protocol.TCP, 80, None, None),)
    assert sorted(p.key for p in problems) == ["spec.ports[0].nodePort", "spec.ports[0].targetPort"]


def test_lowercase_protocol_is_accepted() -> None:
    assert parse_ok(service(ports=[{"port": 53, "protocol": "udp"}])).ports[0].protocol is (
        Protocol.UDP
    )


def test_unparseable_ips_are_left_out_with_problems() -> None:
    svc, problems = parse_service(
        service(
            clusterIPs=["10.96.0.300", "fd00::1"],
            externalIPs=["203.0.113.1", "not-an-ip", "fe80::1%eth0", 7],
        )
    )
    assert svc is not None
    assert svc.cluster_ips == ("fd00::1",)
    assert svc.external_ips == ("203.0.113.1",)
    assert reasons(problems) == ["InvalidIP"] * 4


def test_load_balancer_hostname_only_entries_are_skipped_quietly() -> None:
    obj = service(type="LoadBalancer")
    obj["status"] = {"loadBalancer": {"ingress": [{"hostname": "a.example.com"}]}}
    assert parse_ok(obj).load_balancer_ips == ()


def test_affinity_timeout_of_the_wrong_type_is_dropped() -> None:
    svc, problems = parse_service(
        service(
            sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": "10"}}
        )
    )
    assert svc is not None
    assert svc.session_affinity == "ClientIP"
    assert svc.affinity_timeout is None
    assert reasons(problems) == ["InvalidField"]


def test_labels_and_annotations_keep_only_strings() -> None:
    obj = service()
    obj["metadata"]["annotations"] = {"ok": "yes", "n": 5, "nil": None}
    svc, problems = parse_service(obj)
    assert svc is not None
    assert svc.annotations == (("ok", "yes"),)
    assert reasons(problems) == ["InvalidField", "InvalidField"]


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        "web",
        {},
        {"name": None},
        {"name": 5},
        {"name": "Web"},
        {"name": "1web"},
        {"name": "w" * 64},
        {"name": "web", "namespace": "n" * 64},
        {"name": "web", "namespace": "Shop"},
        {"name": "web", "namespace": 7},
    ],
)
def test_a_service_without_a_valid_identity_is_skipped(metadata: Any) -> None:
    obj = service()
    obj["metadata"] = metadata
    svc, problems = parse_service(obj)
    assert svc is None
    assert reasons(problems) == ["InvalidObject"]


def test_63_character_names_are_valid() -> None:
    obj = service()
    obj["metadata"] = {"name": "w" * 63, "namespace": "n" * 63}
    assert parse_ok(obj).key == ("n" * 63, "w" * 63)


@pytest.mark.parametrize("junk", [None, 5, "spec", [], [1, 2]])
def test_junk_in_place_of_objects_and_lists_never_raises(junk: Any) -> None:
    for path in (("spec",), ("status",), ("spec", "ports"), ("spec", "clusterIPs")):
        obj = service()
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = junk
        svc, _ = parse_service(obj)
        assert svc is not None
        assert svc.key == ("shop", "web")


def test_parse_service_of_a_non_object() -> None:
    svc, problems = parse_service([])  # type: ignore[arg-type]
    assert svc is None
    assert reasons(problems) == ["InvalidObject"]


# -- EndpointSlice ---------------------------------------------------------------------------------


def test_endpoint_slice_fields() -> None:
    obj = endpoint_slice(
        endpoints=[
            {
                "addresses": ["10.244.0.5"],
                "conditions": {"ready": False, "serving": True, "terminating": True},
                "nodeName": "n1",
                "zone": "z1",
                "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "p1"},
            }
        ],
        ports=[{"name": "http", "protocol": "TCP", "port": 8080}, {"port": None}],
    )
    s, problems = parse_endpoint_slice(obj)
    assert problems == []
    assert s == EndpointSlice(
        namespace="shop",
        name="web-abc",
        resource_version="7",
        service_name="web",
        address_type="IPv4",
        endpoints=(
            Endpoint(
                addresses=("10.244.0.5",),
                ready=False,
                serving=True,
                terminating=True,
                node_name="n1",
                zone="z1",
                target_ref=TargetRef("Pod", "shop", "web-1", "p1"),
            ),
        ),
        ports=(EndpointPort("http", Protocol.TCP, 8080), EndpointPort("", Protocol.TCP, None)),
        trigger_time="2024-01-01T00:00:01Z",
        labels=(("kubernetes.io/service-name", "web"),),
    )
    assert s.service_key == ("shop", "web")


#: Item 4 of issue 12. Each row: conditions as the API serves them -> (ready, serving,
#: terminating), and the kube-proxy behaviour it mirrors (pkg/proxy/endpointslicecache.go:
#: `ready := Ready == nil || *Ready`, `serving := Serving == nil || *Serving`,
#: `terminating := Terminating != nil && *Terminating`; the API reference: "nil ... should be
#: interpreted as unknown" and consumers treat it as true for ready and serving).
CONDITION_CASES = [
    (None, (True, True, False), "no conditions at all: ready, serving, not terminating"),
    ({}, (True, True, False), "empty conditions: the same nil rules"),
    ({"ready": False}, (False, True, False), "serving unset means serving, not ready's value"),
    ({"ready": True}, (True, True, False), "ready given, serving unset: serving"),
    ({"ready": False, "serving": True}, (False, True, False), "both given: taken as given"),
    ({"serving": False}, (True, False, False), "ready unset means ready even when not serving"),
    (
        {"ready": False, "terminating": True},
        (False, True, True),
        "terminating, serving unset: serving and terminating, so drained to when none is ready",
    ),
    (
        {"ready": None, "serving": None, "terminating": None},
        (True, True, False),
        "explicit nulls are unset",
    ),
    ({"terminating": False}, (True, True, False), "terminating false: not terminating"),
]


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [pytest.param(c, e, id=why) for c, e, why in CONDITION_CASES],
)
def test_condition_nil_rules(conditions: Any, expected: tuple[bool, bool, bool]) -> None:
    raw: dict[str, Any] = {"addresses": ["10.244.0.5"]}
    if conditions is not None:
        raw["conditions"] = conditions
    s, problems = parse_endpoint_slice(endpoint_slice(endpoints=[raw]))
    assert problems == []
    assert s is not None
    e = s.endpoints[0]
    assert (e.ready, e.serving, e.terminating) == expected


def test_a_non_boolean_condition_counts_as_nil_with_a_problem() -> None:
    s, problems = parse_endpoint_slice(
        endpoint_slice(endpoints=[{"addresses": ["10.244.0.5"], "conditions": {"ready": "no"}}])
    )
    assert s is not None
    assert s.endpoints[0].ready is True
    assert reasons(problems) == ["InvalidField"]


def test_slice_without_service_name_label_is_skipped() -> None:
    obj = endpoint_slice()
    obj["metadata"]["labels"] = {"app": "web"}
    s, problems = parse_endpoint_slice(obj)
    assert s is None
    assert reasons(problems) == ["MissingServiceName"]
    assert problems[0].ref == ObjectRef("EndpointSlice", "shop", "web-abc")


def test_slice_with_unknown_address_type_is_skipped() -> None:
    s, problems = parse_endpoint_slice(endpoint_slice(address_type="IPv5"))
    assert s is None
    assert reasons(problems) == ["InvalidAddressType"]


def test_ipv6_slice_addresses_are_canonical_and_other_families_dropped() -> None:
    s, problems = parse_endpoint_slice(
        endpoint_slice(
            address_type="IPv6",
            endpoints=[
                {"addresses": ["FD02::5", "fd02:0::5"]},
                {"addresses": ["10.244.0.5"]},
                {"addresses": ["junk"]},
            ],
        )
    )
    assert s is not None
    assert [e.addresses for e in s.endpoints] == [("fd02::5",)]
    assert reasons(problems) == ["InvalidIP", "InvalidIP"]


def test_fqdn_addresses_are_kept_verbatim() -> None:
    s, problems = parse_endpoint_slice(
        endpoint_slice(address_type="FQDN", endpoints=[{"addresses": ["db.example.com"]}])
    )
    assert problems == []
    assert s is not None
    assert s.endpoints[0].addresses == ("db.example.com",)


def test_endpoints_and_ports_of_the_wrong_shape_are_dropped() -> None:
    s, problems = parse_endpoint_slice(
        endpoint_slice(
            endpoints=[None, {"addresses": []}, {"addresses": ["10.244.0.1"]}],
            ports=[7, {"name": "h", "port": 70000}, {"name": "u", "protocol": "QUIC", "port": 1}],
        )
    )
    assert s is not None
    assert [e.addresses for e in s.endpoints] == [("10.244.0.1",)]
    assert s.ports == (EndpointPort("h", Protocol.TCP, None),)
    assert sorted(reasons(problems)) == [
        "InvalidEndpoint",
        "InvalidEndpoint",
        "InvalidPort",
        "InvalidPort",
        "UnknownProtocol",
    ]


def test_slice_with_null_endpoints_and_ports() -> None:
    obj = endpoint_slice()
    obj["endpoints"] = None
    obj["ports"] = None
    s, problems = parse_endpoint_slice(obj)
    assert problems == []
    assert s is not None
    assert s.endpoints == ()
    assert s.ports == ()


# -- Node ------------------------------------------------------------------------------------------


def test_node_ips_are_internal_and_external_of_the_family_sorted_and_unique() -> None:
    n, problems = parse_node(
        node(
            [
                {"type": "InternalIP", "address": "192.168.1.20"},
                {"type": "ExternalIP", "address": "192.168.1.3"},
                {"type": "InternalIP", "address": "FD00:1::10"},
                {"type": "ExternalIP", "address": "fd00:1::10"},
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalDNS", "address": "n1.cluster.local"},
                {"type": "InternalIP", "address": "192.168.1.20"},
            ]
        )
    )
    assert problems == []
    assert n is not None
    assert n.ips(Family.IPV4) == ("192.168.1.3", "192.168.1.20")
    assert n.ips(Family.IPV6) == ("fd00:1::10",)
    assert NodeAddress("Hostname", "n1") in n.addresses
    assert n.resource_version == "3"


def test_node_junk_addresses_are_dropped_with_problems() -> None:
    n, problems = parse_node(
        node([None, {"type": "InternalIP", "address": "nope"}, {"address": "10.0.0.1"}])
    )
    assert n is not None
    assert n.addresses == ()
    assert sorted(reasons(problems)) == ["InvalidField", "InvalidField", "InvalidIP"]


def test_node_names_may_be_dns_subdomains_and_namespaces_are_ignored() -> None:
    obj = node([], name="ip-10-0-0-1.eu-west-1.compute.internal")
    obj["metadata"]["namespace"] = "whatever"
    n, problems = parse_node(obj)
    assert problems == []
    assert n is not None
    assert n.name == "ip-10-0-0-1.eu-west-1.compute.internal"


def test_node_with_an_invalid_name_is_skipped() -> None:
    n, problems = parse_node(node([], name="N" * 254))
    assert n is None
    assert reasons(problems) == ["InvalidObject"]


# -- ClusterState and parse_objects ----------------------------------------------------------------


def test_build_groups_slices_by_service_sorted_by_name_and_last_wins() -> None:
    def sl(name: str, svc: str = "web", rv: str = "1") -> EndpointSlice:
        return EndpointSlice("shop", name, rv, svc, "IPv4")

    old = Service("shop", "web", resource_version="1")
    new = Service("shop", "web", resource_version="2")
    state = ClusterState.build(
        [old, new, Service("shop", "db")],
        [sl("web-b"), sl("web-a", rv="1"), sl("db-a", "db"), sl("web-a", rv="2")],
        [Node("n1"), Node("n1", "9")],
    )
    assert state.services[("shop", "web")] is new
    assert list(state.services) == [("shop", "db"), ("shop", "web")]
    assert [(s.name, s.resource_version) for s in state.slices_for(new)] == [
        ("web-a", "2"),
        ("web-b", "1"),
    ]
    assert state.slices_for(Service("other", "web")) == ()
    assert state.nodes["n1"].resource_version == "9"


def test_parse_objects_dispatches_by_kind_and_ignores_other_kinds() -> None:
    state, problems = parse_objects(
        [
            service(),
            endpoint_slice(),
            node([{"type": "InternalIP", "address": "192.168.1.2"}]),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}},
            {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "k"}},
        ]
    )
    assert problems == []
    assert list(state.services) == [("shop", "web")]
    assert [s.name for s in state.slices_for(state.services["shop", "web"])] == ["web-abc"]
    assert list(state.nodes) == ["n1"]


def test_parse_objects_expands_typed_lists_whose_items_have_no_kind() -> None:
    def strip(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}

    state, problems = parse_objects(
        [
            {"kind": "ServiceList", "apiVersion": "v1", "items": [strip(service())]},
            {
                "kind": "EndpointSliceList",
                "apiVersion": "discovery.k8s.io/v1",
                "items": [strip(endpoint_slice())],
            },
            {"kind": "NodeList", "apiVersion": "v1", "items": [strip(node([]))]},
            {"kind": "DeploymentList", "apiVersion": "apps/v1", "items": [{"spec": None}]},
        ]
    )
    assert problems == []
    assert list(state.services) == [("shop", "web")]
    assert list(state.slices) == [("shop", "web")]
    assert list(state.nodes) == ["n1"]


def test_parse_objects_expands_a_plain_list_and_accepts_one_object() -> None:
    state, _ = parse_objects([{"kind": "List", "apiVersion": "v1", "items": [service(), node([])]}])
    assert list(state.services) == [("shop", "web")]
    assert list(state.nodes) == ["n1"]
    single, _ = parse_objects(service())
    assert list(single.services) == [("shop", "web")]


def test_plain_list_items_need_their_own_kind() -> None:
    obj = {k: v for k, v in service().items() if k != "kind"}
    state, problems = parse_objects([{"kind": "List", "apiVersion": "v1", "items": [obj]}])
    assert state.services == {}
    assert reasons(problems) == ["InvalidObject"]


def test_wrong_api_version_of_a_known_kind_is_a_problem() -> None:
    old_slice = endpoint_slice()
    old_slice["apiVersion"] = "discovery.k8s.io/v1beta1"
    bad_service = service()
    bad_service["apiVersion"] = "v2"
    state, problems = parse_objects([old_slice, bad_service])
    assert state.services == {}
    assert state.slices == {}
    assert reasons(problems) == ["UnsupportedApiVersion", "UnsupportedApiVersion"]
    assert {p.ref.kind for p in problems} == {"Service", "EndpointSlice"}


@pytest.mark.parametrize(
    "junk",
    [None, 1, "x", [], [1], {}, {"kind": None}, {"kind": 5}, {"kind": "ServiceList", "items": 3}],
)
def test_junk_objects_are_problems_and_the_rest_still_goes_through(junk: Any) -> None:
    state, problems = parse_objects([junk, service()])
    assert list(state.services) == [("shop", "web")]
    assert reasons(problems) == ["InvalidObject"]


def test_duplicates_are_resolved_by_resource_version_whatever_the_order() -> None:
    older = service()
    newer = copy.deepcopy(older)
    newer["metadata"]["resourceVersion"] = "100"
    newer["spec"]["clusterIP"] = "10.96.0.99"
    for objs in ([older, newer], [newer, older]):
        state, problems = parse_objects(objs)
        assert state.services["shop", "web"].cluster_ips == ("10.96.0.99",)
        assert reasons(problems) == ["DuplicateObject"]


def test_identical_duplicates_are_not_a_problem() -> None:
    state, problems = parse_objects([service(), service()])
    assert problems == []
    assert len(state.services) == 1


def test_problems_come_sorted_and_independent_of_order() -> None:
    a = service(type="Bogus")
    b = copy.deepcopy(endpoint_slice(address_type="IPv5"))
    _, p1 = parse_objects([a, b])
    _, p2 = parse_objects([b, a])
    assert p1 == p2 == sorted(p1)


@pytest.mark.parametrize("objs", [None, 5, "Service"])
def test_parse_objects_of_junk_instead_of_a_collection(objs: Any) -> None:
    state, problems = parse_objects(objs)
    assert state == ClusterState()
    assert reasons(problems) == ["InvalidObject"]
