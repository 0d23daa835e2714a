"""kube-proxy parity (issue 12): each decision as a table of cases.

Every row says which kube-proxy behaviour (or API reference rule) it mirrors; the sources are
kube-proxy's own files as ../shared/kube-proxy-semantics.md cites them (SP serviceport.go,
UT util.go IsVIPMode, SRV server.go, ESC endpointslicecache.go, TOP topology.go, NPA
nodeport_addresses.go, VAL validation.go, SL server_linux.go).
"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.core.desired import desired_farms
from reconciler.core.endpoints import SAME_NODE, SAME_ZONE, select_endpoints, topology_mode
from reconciler.core.farms import Family, Protocol
from reconciler.core.kube import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Node,
    NodeAddress,
    Service,
    ServicePort,
    parse_endpoint_slice,
    parse_node,
    parse_objects,
    parse_service,
)
from reconciler.core.nodeports import NodePortAddresses, node_port_ips, parse_nodeport_addresses
from reconciler.core.selection import label_selector, proxy_name_error, selected
from reconciler.testing.fakeapi.selectors import LabelSelector

V4, V6 = Family.IPV4, Family.IPV6
PROXY = "service.kubernetes.io/service-proxy-name"
HEADLESS = "service.kubernetes.io/headless"


def service_obj(labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    status = spec.pop("status", {})
    body: dict[str, Any] = {
        "clusterIP": "10.96.0.1",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
    }
    body.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "labels": labels or {}},
        "spec": body,
        "status": status,
    }


def slice_obj(
    endpoints: list[dict[str, Any]], labels: dict[str, str] | None = None, name: str = "web-a"
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web", **(labels or {})},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": endpoints,
    }


def node_obj(
    name: str = "n1", zone: str | None = None, addresses: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    labels = {} if zone is None else {"topology.kubernetes.io/zone": zone}
    addrs = addresses if addresses is not None else [("InternalIP", "192.168.1.1")]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": [{"type": t, "address": a} for t, a in addrs]},
    }


def backends_by_farm(objs: list[dict[str, Any]], node: str = "n1", **kw: Any) -> dict[str, Any]:
    desired = desired_farms(parse_objects(objs)[0], node, **kw)
    return {f.name: [b.ip for b in f.backends] for f in desired.farms}


# -- 1. ipMode --------------------------------------------------------------------------------

LB = "203.0.113.10"
IP_MODE_CASES = [
    ({"ip": LB}, True, "UT IsVIPMode: ipMode unset is VIP"),
    ({"ip": LB, "ipMode": "VIP"}, True, "UT IsVIPMode: VIP is programmed"),
    ({"ip": LB, "ipMode": "Proxy"}, False, "SP/KEP-1860: Proxy LB IPs get no DNAT at all"),
    ({"hostname": "lb.example.com"}, False, "SP: hostname-only ingress entries are ignored"),
    ({"ip": LB, "ipMode": "Tunnel"}, False, "UT: only unset or VIP is VIP mode (with a problem)"),
]


@pytest.mark.parametrize(
    ("ingress", "programmed"), [pytest.param(i, p, id=why) for i, p, why in IP_MODE_CASES]
)
def test_only_vip_mode_load_balancer_ips_are_programmed(
    ingress: dict[str, Any], programmed: bool
) -> None:
    obj = service_obj(type="LoadBalancer", status={"loadBalancer": {"ingress": [ingress]}})
    svc, problems = parse_service(obj)
    assert svc is not None
    assert svc.load_balancer_ips == ((LB,) if programmed else ())
    unknown = ingress.get("ipMode") not in (None, "VIP", "Proxy")
    assert [p.key for p in problems] == (
        ["status.loadBalancer.ingress[0].ipMode"] if unknown else []
    )
    desired = desired_farms(parse_objects([obj])[0], "")
    assert (LB in {a.ip for f in desired.farms for a in f.addresses}) is programmed


def test_a_proxy_entry_does_not_hide_the_vip_entries_of_the_same_service() -> None:
    other = "203.0.113.11"
    ingress = [{"ip": LB, "ipMode": "Proxy"}, {"ip": other, "ipMode": "VIP"}]
    svc, _ = parse_service(
        service_obj(type="LoadBalancer", status={"loadBalancer": {"ingress": ingress}})
    )
    assert svc is not None and svc.load_balancer_ips == (other,)


# -- 2. labels that opt out -----------------------------------------------------------------

SELECTOR_CASES = [
    # labels, selected without --proxy-name, selected with --proxy-name nftlb, mirrors
    ({}, True, False, "SRV: an unlabelled object is the default proxy's, not a named one's"),
    ({PROXY: "nftlb"}, False, True, "SRV/PAPI: labelled for this named proxy"),
    ({PROXY: "cilium"}, False, False, "SRV: labelled for another proxy"),
    ({PROXY: ""}, False, False, "SRV: `!key` tests the key; an empty value still opts out"),
    ({HEADLESS: ""}, False, False, "SRV/WKL: headless label, whatever the cluster IP"),
    ({HEADLESS: "", PROXY: "nftlb"}, False, False, "SRV: the headless term applies to both"),
    ({"app": "web"}, True, False, "other labels do not matter"),
]


@pytest.mark.parametrize(
    ("labels", "default", "named"),
    [pytest.param(lb, d, n, id=why) for lb, d, n, why in SELECTOR_CASES],
)
def test_the_core_and_the_watch_selector_agree(
    labels: dict[str, str], default: bool, named: bool
) -> None:
    pairs = list(labels.items())
    assert selected(pairs) is default
    assert selected(pairs, "nftlb") is named
    # The selector the informers send, as the (fake) API server evaluates it.
    assert LabelSelector.parse(label_selector()).matches(labels) is default
    assert LabelSelector.parse(label_selector("nftlb")).matches(labels) is named
    # A Service with these labels (and a cluster IP) gets farms exactly when selected.
    for proxy_name, want in (("", default), ("nftlb", named)):
        farms = backends_by_farm([node_obj(), service_obj(labels)], proxy_name=proxy_name)
        assert bool(farms) is want, proxy_name


def test_the_selector_is_kube_proxys() -> None:
    assert label_selector() == f"!{PROXY},!{HEADLESS}"
    assert label_selector("nftlb") == f"{PROXY}=nftlb,!{HEADLESS}"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("", True),
        ("nftlb", True),
        ("a.b-c_d", True),
        ("-x", False),
        ("a" * 64, False),
        ("a b", False),
    ],
)
def test_a_proxy_name_must_be_a_label_value(name: str, ok: bool) -> None:
    assert (proxy_name_error(name) is None) is ok


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param({HEADLESS: ""}, id="SRV: slices of a headless Service are not read"),
        pytest.param({PROXY: "cilium"}, id="SRV: slices labelled for another proxy are not read"),
    ],
)
def test_slices_that_opt_out_give_no_backends(labels: dict[str, str]) -> None:
    objs = [
        node_obj(),
        service_obj(),
        slice_obj([{"addresses": ["10.244.0.1"]}], name="web-a"),
        slice_obj([{"addresses": ["10.244.0.2"]}], labels, name="web-b"),
    ]
    assert backends_by_farm(objs)["k8s.default.web.http.tcp.v4"] == ["10.244.0.1"]


# -- 3. only the first address ------------------------------------------------------------

FIRST_ADDRESS_CASES = [
    (["10.244.0.1", "10.244.0.2"], ["10.244.0.1"], "ESC: addresses[0] only"),
    (["junk", "10.244.0.2"], [], "ESC: a later address never stands in for the first"),
    (["fd00::1", "10.244.0.2"], [], "ECT/ESC: the first address is of another family"),
    ([], [], "ESC: an endpoint with no addresses is ignored"),
]


@pytest.mark.parametrize(
    ("addresses", "backends"),
    [pytest.param(a, b, id=why) for a, b, why in FIRST_ADDRESS_CASES],
)
def test_only_an_endpoints_first_address_is_used(addresses: list[str], backends: list[str]) -> None:
    objs = [node_obj(), service_obj(), slice_obj([{"addresses": addresses}])]
    assert backends_by_farm(objs)["k8s.default.web.http.tcp.v4"] == backends


# -- 4. condition nil rules: tests/unit/test_kube.py CONDITION_CASES, and end to end here ------


def test_a_terminating_endpoint_without_serving_is_drained_to() -> None:
    """API reference: serving unset means serving; so with no ready endpoint, a terminating
    endpoint that does not say `serving` still takes traffic (TOP's fallback)."""
    conditions = {"ready": False, "terminating": True}
    objs = [
        node_obj(),
        service_obj(),
        slice_obj([{"addresses": ["10.244.0.1"], "conditions": conditions}]),
    ]
    assert backends_by_farm(objs)["k8s.default.web.http.tcp.v4"] == ["10.244.0.1"]


# -- 5. topology ----------------------------------------------------------------------------


def ep(
    ip: str,
    *,
    ready: bool = True,
    terminating: bool = False,
    node: str = "n2",
    zones: tuple[str, ...] = (),
    nodes: tuple[str, ...] = (),
) -> Endpoint:
    return Endpoint(
        (ip,),
        ready=ready,
        serving=True,
        terminating=terminating,
        node_name=node,
        zone_hints=zones,
        node_hints=nodes,
    )


HTTP = ServicePort("http", Protocol.TCP, 80)
WEB = Service("default", "web", cluster_ips=("10.96.0.1",), ports=(HTTP,))


def chosen(endpoints: list[Endpoint], *, node: str, zone: str, local: bool = False) -> list[str]:
    s = EndpointSlice(
        "default",
        "web-a",
        "1",
        "web",
        "IPv4",
        tuple(endpoints),
        (EndpointPort("http", Protocol.TCP, 8080),),
    )
    return [t.ip for t in select_endpoints(WEB, HTTP, [s], V4, node, local, zone)]


A, B, C = "10.244.0.1", "10.244.0.2", "10.244.0.3"
TOPOLOGY_CASES: list[tuple[list[Endpoint], str, str, bool, list[str], str]] = [
    # endpoints, node, zone, local set, chosen, mirrors
    ([ep(A), ep(B)], "n1", "a", False, [A, B], "TOP: no hints, no topology"),
    (
        [ep(A, zones=("a",)), ep(B, zones=("b",))],
        "n1",
        "a",
        False,
        [A],
        "TOP: every ready endpoint has a zone hint, one for my zone: PreferSameZone",
    ),
    (
        [ep(A, zones=("a",)), ep(B, zones=("b",))],
        "n1",
        "",
        False,
        [A, B],
        "TOP: the node has no topology.kubernetes.io/zone label: hints ignored",
    ),
    (
        [ep(A, zones=("a",)), ep(B)],
        "n1",
        "a",
        False,
        [A, B],
        "TOP: one ready endpoint without a zone hint: hints ignored",
    ),
    (
        [ep(A, zones=("b",)), ep(B, zones=("c",))],
        "n1",
        "a",
        False,
        [A, B],
        "TOP: no endpoint hinted for my zone: hints ignored (never zero endpoints)",
    ),
    (
        [ep(A, zones=("a", "b")), ep(B, zones=("c",))],
        "n1",
        "b",
        False,
        [A],
        "TOP: a hint may name several zones",
    ),
    (
        [ep(A, ready=False, zones=("a",)), ep(B, zones=("b",))],
        "n1",
        "a",
        False,
        [B],
        "TOP: only ready endpoints decide the mode; my zone's one is not ready: hints ignored",
    ),
    (
        [ep(A, zones=("a",)), ep(B, zones=("b",)), ep(C, ready=False)],
        "n1",
        "a",
        False,
        [A],
        "TOP: a not-ready endpoint without hints does not turn hints off",
    ),
    (
        [ep(A, node="n1", nodes=("n1",), zones=("a",)), ep(B, nodes=("n2",), zones=("a",))],
        "n1",
        "a",
        False,
        [A],
        "TOP: every ready endpoint has a node hint, one for my node: PreferSameNode",
    ),
    (
        [ep(A, nodes=("n3",), zones=("a",)), ep(B, nodes=("n2",), zones=("b",))],
        "n1",
        "a",
        False,
        [A],
        "TOP: node hints but none for my node: zone hints next",
    ),
    (
        [ep(A, node="n1", nodes=("n1",), zones=("a",)), ep(B, zones=("a",))],
        "n1",
        "a",
        False,
        [A, B],
        "TOP: one endpoint without a node hint: node hints ignored, zone hints used",
    ),
    (
        [ep(A, node="n1", nodes=("n1",)), ep(B, nodes=("n2",))],
        "",
        "",
        False,
        [A, B],
        "TOP: no node name (render without --node): node hints cannot match",
    ),
    (
        [
            ep(A, ready=False, terminating=True, zones=("b",)),
            ep(B, ready=False, terminating=True, zones=("a",)),
        ],
        "n1",
        "a",
        False,
        [A, B],
        "TOP: no ready endpoint: serving-terminating ones, topology ignored",
    ),
    (
        [ep(A, node="n1", zones=("b",)), ep(B, node="n2", zones=("a",))],
        "n1",
        "a",
        True,
        [A],
        "TOP: the local set (a Local traffic policy) never uses hints",
    ),
]


@pytest.mark.parametrize(
    ("endpoints", "node", "zone", "local", "want"),
    [pytest.param(e, n, z, lo, w, id=why) for e, n, z, lo, w, why in TOPOLOGY_CASES],
)
def test_topology_aware_routing(
    endpoints: list[Endpoint], node: str, zone: str, local: bool, want: list[str]
) -> None:
    assert chosen(endpoints, node=node, zone=zone, local=local) == want


def test_topology_mode_names_the_mode() -> None:
    assert topology_mode([ep(A, nodes=("n1",))], "n1", "a") == SAME_NODE
    assert topology_mode([ep(A, zones=("a",))], "n1", "a") == SAME_ZONE
    assert topology_mode([], "n1", "a") == ""


def hinted(ip: str, node: str, zone: str) -> dict[str, Any]:
    """An endpoint as the EndpointSlice controller writes it for PreferSameNode."""
    return {
        "addresses": [ip],
        "nodeName": node,
        "zone": zone,
        "hints": {"forZones": [{"name": zone}], "forNodes": [{"name": node}]},
    }


def test_hints_and_the_node_zone_are_parsed_and_reach_the_farms() -> None:
    objs = [
        node_obj("n1", zone="a"),
        service_obj(type="NodePort", trafficDistribution="PreferSameNode"),
        slice_obj([hinted(A, "n1", "a"), hinted(B, "n2", "a"), hinted(C, "n3", "b")]),
    ]
    state, problems = parse_objects(objs)
    assert problems == []
    assert state.services[("default", "web")].traffic_distribution == "PreferSameNode"
    assert state.nodes["n1"].zone == "a"
    [s] = state.slices[("default", "web")]
    assert (s.endpoints[0].zone_hints, s.endpoints[0].node_hints) == (("a",), ("n1",))
    farms = backends_by_farm(objs)
    # cluster IP (iTP Cluster) and node port (eTP Cluster) both use the cluster set
    assert set(map(tuple, farms.values())) == {(A,)}
    # on n2 the same hints pick n2's endpoint; on a node with no endpoint, its zone's
    assert set(map(tuple, backends_by_farm([*objs, node_obj("n2", zone="a")], "n2").values())) == {
        (B,)
    }
    other = backends_by_farm([*objs, node_obj("n4", zone="b")], "n4")
    assert set(map(tuple, other.values())) == {(C,)}


def test_traffic_distribution_values() -> None:
    for value in ("PreferClose", "PreferSameZone", "PreferSameNode"):
        svc, problems = parse_service(service_obj(trafficDistribution=value))
        assert svc is not None and svc.traffic_distribution == value and problems == []
    svc, problems = parse_service(service_obj(trafficDistribution="Nearby"))
    assert svc is not None and svc.traffic_distribution == ""
    assert [p.key for p in problems] == ["spec.trafficDistribution"]


def test_hint_names_of_the_wrong_shape_are_dropped_with_a_problem() -> None:
    raw = {"addresses": [A], "hints": {"forZones": [{"name": "a"}, {"name": 3}, "b"]}}
    s, problems = parse_endpoint_slice(slice_obj([raw]))
    assert s is not None and s.endpoints[0].zone_hints == ("a",)
    assert len(problems) == 2


# -- 7. node port addresses -------------------------------------------------------------------

NODE_ADDRESSES = (
    NodeAddress("Hostname", "n1"),
    NodeAddress("ExternalIP", "203.0.113.5"),
    NodeAddress("InternalIP", "192.168.1.10"),
    NodeAddress("InternalIP", "192.168.1.11"),
    NodeAddress("InternalIP", "127.0.0.2"),
    NodeAddress("ExternalIP", "2001:db8::5"),
    NodeAddress("InternalIP", "fd00::10"),
)
NODEPORT_CASES = [
    ("primary", V4, ("192.168.1.10",), "SL/SRV: primary is the first InternalIP of the family"),
    ("primary", V6, ("fd00::10",), "SRV GetNodeHostIPs: InternalIPs before ExternalIPs"),
    ("", V4, ("192.168.1.10",), "SL: empty nodePortAddresses becomes primary in nftables mode"),
    ("192.168.1.0/24", V4, ("192.168.1.10", "192.168.1.11"), "NPA: addresses inside the CIDRs"),
    ("203.0.113.0/24,fd00::/64", V4, ("203.0.113.5",), "NPA: the CIDRs of the family"),
    ("203.0.113.0/24,fd00::/64", V6, ("fd00::10",), "NPA: each family its own CIDRs"),
    (
        "fd00::/64",
        V4,
        ("127.0.0.2", "192.168.1.10", "192.168.1.11", "203.0.113.5"),
        "NPA: no CIDR of the family: match all of it",
    ),
    (
        "0.0.0.0/0",
        V4,
        ("127.0.0.2", "192.168.1.10", "192.168.1.11", "203.0.113.5"),
        "NPA: a zero CIDR matches all",
    ),
    ("127.0.0.0/8", V4, ("127.0.0.2",), "NPA: selected, then refused (see the next test)"),
    ("10.0.0.0/8", V4, (), "NPA: CIDRs that hold no node address: no node port"),
]


@pytest.mark.parametrize(
    ("text", "family", "want"),
    [pytest.param(t, f, w, id=why) for t, f, w, why in NODEPORT_CASES],
)
def test_node_port_addresses(text: str, family: Family, want: tuple[str, ...]) -> None:
    node = Node("n1", addresses=NODE_ADDRESSES)
    assert node_port_ips(parse_nodeport_addresses(text), node, family) == want


def test_a_loopback_node_address_never_opens_a_node_port() -> None:
    """NFT: loopback addresses are left out of nodeport-ips with an error log; here the
    frontend check refuses them with a ForbiddenAddress problem."""
    addresses = [("InternalIP", "192.168.1.10"), ("InternalIP", "127.0.0.2")]
    objs = [node_obj(addresses=addresses), service_obj(type="NodePort")]
    desired = desired_farms(
        parse_objects(objs)[0], "n1", nodeports=parse_nodeport_addresses("0.0.0.0/0")
    )
    assert {a.ip for f in desired.farms for a in f.addresses if a.port == 30080} == {"192.168.1.10"}
    assert ("ForbiddenAddress", "127.0.0.2") in {(p.reason, p.value) for p in desired.problems}


def test_primary_falls_back_to_the_first_external_ip() -> None:
    node = Node("n1", addresses=(NodeAddress("ExternalIP", "203.0.113.5"),))
    assert node_port_ips(NodePortAddresses(), node, V4) == ("203.0.113.5",)
    assert node_port_ips(NodePortAddresses(), node, V6) == ()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("primary,10.0.0.0/8", "cannot be combined"),  # VAL
        ("10.0.0.0/33", "not a CIDR"),
        ("10.0.0.1", "not a CIDR"),
        ("eth0", "not a CIDR"),
    ],
)
def test_bad_node_port_addresses_are_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_nodeport_addresses(text)


def test_node_port_cidrs_are_canonical() -> None:
    assert str(parse_nodeport_addresses(" 10.1.2.3/8 , FD00::1/64 ")) == "10.0.0.0/8,fd00::/64"
    assert str(parse_nodeport_addresses("primary")) == "primary"


def test_node_ports_open_on_the_selected_addresses_only() -> None:
    addresses = [("InternalIP", "192.168.1.10"), ("InternalIP", "10.0.0.10")]
    objs = [node_obj(addresses=addresses), service_obj(type="NodePort")]

    def opened(**kw: Any) -> set[str]:
        desired = desired_farms(parse_objects(objs)[0], "n1", **kw)
        return {a.ip for f in desired.farms for a in f.addresses if a.port == 30080}

    assert opened() == {"192.168.1.10"}
    assert opened(nodeports=parse_nodeport_addresses("10.0.0.0/8")) == {"10.0.0.10"}
    assert opened(nodeports=parse_nodeport_addresses("0.0.0.0/0")) == {"192.168.1.10", "10.0.0.10"}


# -- loadBalancerSourceRanges: parsed and exposed for the node rules ------------------------


def test_source_ranges_are_trimmed_canonical_and_exposed() -> None:
    svc, problems = parse_service(
        service_obj(loadBalancerSourceRanges=[" 203.0.113.7/24 ", "2001:DB8::/32", "junk"])
    )
    assert svc is not None
    assert svc.load_balancer_source_ranges == ("203.0.113.0/24", "2001:db8::/32")
    assert [p.key for p in problems] == ["spec.loadBalancerSourceRanges[2]"]


def test_node_labels_are_parsed() -> None:
    node, problems = parse_node(node_obj(zone="eu-1a"))
    assert node is not None and node.zone == "eu-1a" and problems == []


# -- 2, as the agent runs it: the informers send the selector, the API server filters ----------


@pytest.mark.parametrize("proxy_name", ["", "nftlb"])
def test_the_agent_lists_and_watches_only_what_the_selector_selects(proxy_name: str) -> None:
    from kubernetes.client import ApiClient, Configuration

    from reconciler.agent.controller import Settings
    from reconciler.agent.daemon import Daemon, DaemonOptions
    from reconciler.testing.fakeapi import FakeApiServer

    cases = {
        "plain": {},
        "named": {PROXY: "nftlb"},
        "other": {PROXY: "cilium"},
        "headless": {HEADLESS: ""},
    }
    objs: list[dict[str, Any]] = [node_obj()]
    for i, (name, labels) in enumerate(cases.items()):
        s = service_obj(labels, clusterIP=f"10.96.0.{i + 1}")
        s["metadata"]["name"] = name
        sl = slice_obj([{"addresses": [f"10.244.0.{i + 1}"]}], labels, name=f"{name}-a")
        sl["metadata"]["labels"]["kubernetes.io/service-name"] = name
        objs += [s, sl]
    with FakeApiServer() as fake:
        fake.seed(objs)
        cfg = Configuration()
        cfg.host = fake.url
        Configuration.set_default(cfg)
        options = DaemonOptions(
            Settings("n1", proxy_name=proxy_name), "http://127.0.0.1:9", "k", "", events=False
        )
        daemon = Daemon(options, ApiClient(cfg))
        daemon.start(loop=False)
        try:
            assert daemon.wait_for_sync(10)
            services = sorted(s.name for s in daemon.services.list())
            slices = sorted(s.service_name for s in daemon.slices.list())
        finally:
            daemon.stop()
            Configuration.set_default(None)
    want = sorted(n for n, labels in cases.items() if selected(labels.items(), proxy_name))
    assert want == (["named"] if proxy_name else ["plain"])
    assert services == want
    assert slices == want


def test_render_takes_the_node_port_setting_and_refuses_a_bad_one(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from reconciler.cli.main import main

    addresses = [("InternalIP", "192.168.1.10"), ("InternalIP", "10.0.0.10")]
    path = tmp_path / "objs.json"
    items = [node_obj(addresses=addresses), service_obj(type="NodePort")]
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    monkeypatch.delenv("KUBE_NFTLB_NODEPORT_ADDRESSES", raising=False)

    def opened(*flags: str) -> set[str]:
        assert main(["render", "-f", str(path), "--node", "n1", *flags]) == 0
        farms = json.loads(capsys.readouterr().out)["farms"]
        return {f["virtual-addr"] for f in farms if f["virtual-ports"] == "30080"}

    assert opened() == {"192.168.1.10"}
    assert opened("--nodeport-addresses", "10.0.0.0/8") == {"10.0.0.10"}
    monkeypatch.setenv("KUBE_NFTLB_NODEPORT_ADDRESSES", "0.0.0.0/0")
    assert opened() == {"192.168.1.10", "10.0.0.10"}
    assert main(["render", "-f", str(path), "--nodeport-addresses", "primary,10.0.0.0/8"]) == 2
    assert "cannot be combined" in capsys.readouterr().err
    assert main(["render", "-f", str(path), "--proxy-name=-bad"]) == 2
    assert "not a label value" in capsys.readouterr().err
