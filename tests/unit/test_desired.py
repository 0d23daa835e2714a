from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.cli.manifests import load_paths
from reconciler.core.desired import desired_farms
from reconciler.core.farms import Helper, Mode, Scheduler
from reconciler.core.kube import parse_objects
from reconciler.core.names import LOAD_BALANCER, NODE_PORT, frontend_segment

EXAMPLES = Path(__file__).parents[2] / "examples"


def svc(
    name: str = "web", ns: str = "default", ip: str = "10.96.0.1", **spec: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ns,
        "creationTimestamp": spec.pop("created", "2026-01-01T00:00:00Z"),
    }
    if "annotations" in spec:
        meta["annotations"] = spec.pop("annotations")
    if "labels" in spec:
        meta["labels"] = spec.pop("labels")
    status = spec.pop("status", {})
    body = {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": body, "status": status}


def eps(
    service: str = "web",
    ns: str = "default",
    *ips: str,
    nodes: tuple[str, ...] = (),
    ready: bool = True,
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-x",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": ready},
                "nodeName": nodes[i] if i < len(nodes) else "n2",
            }
            for i, ip in enumerate(ips)
        ],
    }


NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "n1"},
    "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.1"}]},
}


def farms(*objs: dict[str, Any], node: str = "n1") -> dict[str, Any]:
    desired = desired_farms(parse_objects([NODE, *objs])[0], node)
    return {f.name: f for f in desired.farms} | {"_problems": desired.problems}


def test_cluster_ip_service_gets_one_farm_with_its_endpoints() -> None:
    out = farms(svc(), eps("web", "default", "10.1.0.1", "10.1.0.2"))
    farm = out["k8s.default.web.http.tcp.v4"]
    assert [(a.ip, a.port) for a in farm.addresses] == [("10.96.0.1", 80)]
    assert [(b.ip, b.port) for b in farm.backends] == [("10.1.0.1", 8080), ("10.1.0.2", 8080)]
    assert farm.intra_connect and farm.mode is Mode.DNAT


def test_service_without_endpoints_keeps_its_farm_with_no_backends() -> None:
    farm = farms(svc())["k8s.default.web.http.tcp.v4"]
    assert farm.backends == () and farm.addresses


def test_headless_external_name_and_other_proxies_are_skipped() -> None:
    out = farms(
        svc("db", ip="None"),
        svc("ext", type="ExternalName", externalName="example.com", ip=""),
        svc("other", labels={"service.kubernetes.io/service-proxy-name": "cilium"}),
    )
    assert [k for k in out if k != "_problems"] == []


def frontends(out: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {
        name: (f.addresses[0].ip, f.addresses[0].port)
        for name, f in out.items()
        if name != "_problems"
    }


def test_each_frontend_gets_a_farm_of_its_own() -> None:
    out = farms(svc(type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}]))
    np = "k8s.default.web.http.tcp.v4." + frontend_segment(NODE_PORT, "192.168.1.1")
    assert frontends(out) == {
        "k8s.default.web.http.tcp.v4": ("10.96.0.1", 80),
        np: ("192.168.1.1", 30080),
    }
    assert all(len(f.addresses) == 1 for n, f in out.items() if n != "_problems")


def test_external_traffic_policy_local_splits_external_frontends_onto_local_endpoints() -> None:
    out = farms(
        svc(
            type="LoadBalancer",
            externalTrafficPolicy="Local",
            ports=[{"name": "http", "port": 80, "nodePort": 30080}],
            status={"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}},
        ),
        eps("web", "default", "10.1.0.1", "10.1.0.2", nodes=("n1", "n2")),
    )
    main = out["k8s.default.web.http.tcp.v4"]
    node_port = out["k8s.default.web.http.tcp.v4." + frontend_segment(NODE_PORT, "192.168.1.1")]
    lb = out["k8s.default.web.http.tcp.v4." + frontend_segment(LOAD_BALANCER, "203.0.113.1")]
    assert [b.ip for b in main.backends] == ["10.1.0.1", "10.1.0.2"]
    for ext in (node_port, lb):
        assert [b.ip for b in ext.backends] == ["10.1.0.1"]
        assert ext.mode is Mode.DNAT
    assert main.mode is Mode.DNAT
    assert lb.addresses[0].ip == "203.0.113.1" and node_port.addresses[0].port == 30080


def test_same_name_in_two_namespaces_gets_two_farms() -> None:
    out = farms(svc("web", "a", ip="10.96.0.1"), svc("web", "b", ip="10.96.0.2"))
    assert {"k8s.a.web.http.tcp.v4", "k8s.b.web.http.tcp.v4"} <= out.keys()


def test_conflict_goes_to_the_oldest_service_and_the_loser_is_told() -> None:
    out = farms(
        svc("new", ip="10.96.0.9", externalIPs=["10.96.0.7"], created="2026-02-01T00:00:00Z"),
        svc("old", ip="10.96.0.7", created="2026-01-01T00:00:00Z"),
    )
    assert frontends(out) == {
        "k8s.default.old.http.tcp.v4": ("10.96.0.7", 80),
        "k8s.default.new.http.tcp.v4": ("10.96.0.9", 80),
    }
    (problem,) = [p for p in out["_problems"] if p.reason == "AddressConflict"]
    assert problem.ref.name == "new" and "default/old" in problem.message


def test_conflict_with_equal_age_is_decided_by_namespace_then_name() -> None:
    out = farms(svc("b", ip="10.96.0.7"), svc("a", ip="10.96.0.7"))
    assert "k8s.default.a.http.tcp.v4" in out and "k8s.default.b.http.tcp.v4" not in out


def test_annotations_and_affinity_reach_the_farm() -> None:
    ann = {
        "service.kubernetes.io/kube-nftlb-load-balancer-scheduler": "hash",
        "service.kubernetes.io/kube-nftlb-load-balancer-mode": "dnat",
    }
    farm = farms(
        svc(
            annotations=ann,
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 75}},
        )
    )["k8s.default.web.http.tcp.v4"]
    assert farm.scheduler is Scheduler.HASH and farm.sched_param == ("srcip",)
    assert farm.mode is Mode.DNAT
    assert farm.persistence == ("srcip",) and farm.persist_ttl == 75


def test_helper_that_does_not_fit_the_protocol_is_dropped_for_that_port_only() -> None:
    ann = {"service.kubernetes.io/kube-nftlb-load-balancer-helper": "ftp"}
    out = farms(
        svc(
            annotations=ann,
            ports=[
                {"name": "ctl", "port": 21, "protocol": "TCP"},
                {"name": "u", "port": 21, "protocol": "UDP"},
            ],
        )
    )
    assert out["k8s.default.web.ctl.tcp.v4"].helper is Helper.FTP
    assert out["k8s.default.web.u.udp.v4"].helper is Helper.NONE
    assert any(p.reason == "InvalidAnnotation" and p.key == "helper" for p in out["_problems"])


def test_examples_render_every_kind_of_service() -> None:
    state, problems = parse_objects(load_paths([EXAMPLES]))
    desired = desired_farms(state, "node-1")
    names = {f.name for f in desired.farms}
    assert {
        "k8s.default.web.http.tcp.v4",
        "k8s.staging.web.http.tcp.v4",
        "k8s.default.shop.http.tcp.v4",
        "k8s.ingress.ingress.http.tcp.v4." + frontend_segment(LOAD_BALANCER, "203.0.113.10"),
        "k8s.ingress.ingress.https.tcp.v4." + frontend_segment(NODE_PORT, "192.168.10.11"),
        "k8s.default.api.grpc.tcp.v6",
        "k8s.kube-system.kube-dns.dns.udp.v4",
        "k8s.kube-system.kube-dns.dns-tcp.tcp.v4",
        "k8s.default.cart.http.tcp.v4",
        "k8s.finance.billing.8443.tcp.v4",
        "k8s.default.legacy.http.tcp.v4",
    } <= names
    assert not any("db" in n for n in names)
    assert [p.ref.name for p in desired.problems] == ["legacy"]
    assert problems == []


def test_settings_nftlb_cannot_build_for_ipv6_fall_back_with_a_problem() -> None:
    ann = {
        "service.kubernetes.io/kube-nftlb-load-balancer-persistence": "srcip srcport",
        "service.kubernetes.io/kube-nftlb-load-balancer-helper": "pptp",
    }
    out = farms(
        svc(
            annotations=ann,
            ipFamilies=["IPv4", "IPv6"],
            clusterIPs=["10.96.0.1", "fd00::1"],
            ports=[{"name": "http", "port": 80}],
        )
    )
    v4, v6 = out["k8s.default.web.http.tcp.v4"], out["k8s.default.web.http.tcp.v6"]
    assert v4.persistence == ("srcip", "srcport") and v4.helper is Helper.PPTP
    assert v6.persistence == () and v6.helper is Helper.NONE
    keys = sorted(p.key for p in out["_problems"] if p.reason == "InvalidAnnotation")
    assert keys == ["helper", "persistence"]


def test_a_helper_is_kept_by_one_farm_only_since_nftlb_shares_it() -> None:
    ftp = {"service.kubernetes.io/kube-nftlb-load-balancer-helper": "ftp"}
    out = farms(
        svc("old", ip="10.96.0.1", annotations=ftp, created="2026-01-01T00:00:00Z"),
        svc("new", ip="10.96.0.2", annotations=ftp, created="2026-02-01T00:00:00Z"),
    )
    assert out["k8s.default.old.http.tcp.v4"].helper is Helper.FTP
    assert out["k8s.default.new.http.tcp.v4"].helper is Helper.NONE
    (problem,) = [p for p in out["_problems"] if p.reason == "HelperShared"]
    assert problem.ref.name == "new" and "k8s.default.old.http.tcp.v4" in problem.message
