"""Hypothesis strategies for Kubernetes objects as the API serves them: camelCase JSON dicts.

Realistic and junk alike: with `junk=True` any field may be missing, null or of the wrong type,
names may be over-long or invalid, and odd annotations, protocols and IPs turn up, each rarely
enough that most objects still parse and reach the code behind the parser. Addresses come from
small pools, so cluster IPs, node IPs, external IPs and endpoint IPs collide often enough for
conflict handling to be exercised, and the same pod IP turns up in several slices.

Entry points: `cluster_objects()` (Services, mostly with matching EndpointSlices, one to three
Nodes and some noise, sometimes wrapped in List kinds) and `cluster_and_node()` (the same plus
the name of one of the Nodes, as the agent's own node). `corrupted(strategy)` damages anything
inside such objects; `json_values` and `junk_values` are arbitrary JSON.

Strategies are built once at module level and values are drawn with plain helper functions:
building strategies inside composites costs most of the run time.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

ANNOTATION_PREFIX = "service.kubernetes.io/kube-nftlb-load-balancer-"

NAMESPACES = ("default", "kube-system", "prod")
SERVICE_NAMES = ("web", "db", "api", "kube-dns")
NODE_NAMES = ("node-a", "node-b", "node-c")
LONG_NODE_NAME = "node-" + "n" * 58
SLICE_SUFFIXES = ("abc12", "def34", "xyz99")
PORT_NAMES = ("", "http", "https", "dns", "metrics")
PORT_NUMBERS = (53, 80, 443, 8080)
TARGET_PORTS = (8080, 9090, 53)
NODE_PORTS = (30080, 30443, 31000)
HEALTH_CHECK_PORTS = (32000, 32001, 32000, 30080)
PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")

# Small pools that overlap on purpose: a cluster IP that is also a node IP or an external IP,
# IPv6 in two spellings, and pod IPs that turn up in several slices.
CLUSTER_V4 = ("10.96.0.1", "10.96.0.2", "10.96.0.3", "192.168.1.10")
CLUSTER_V6 = ("fd00::1", "fd00::2", "FD00::2", "fd00:0:0::3")
NODE_V4 = ("192.168.1.10", "192.168.1.11", "10.96.0.3")
NODE_V6 = ("fd00:1::10", "fd00:1::11", "fd00::3")
EXTERNAL_V4 = ("203.0.113.1", "203.0.113.2", "192.168.1.11", "10.96.0.2")
EXTERNAL_V6 = ("2001:db8::1", "2001:db8::2", "fd00::1")
POD_V4 = tuple(f"10.244.0.{i}" for i in range(1, 7))
POD_V6 = (*(f"fd02::{i}" for i in range(1, 7)), "FD02::1")
JUNK_IPS = ("", "not-an-ip", "300.1.1.1", "10.0.0.1/24", "fe80::1%eth0", "010.1.1.1", " 10.0.0.1")
#: Names the API server would refuse: too long, upper case, underscores, a leading digit, dots.
INVALID_NAMES = ("a" * 64, "x" * 300, "Web", "my_svc", "1abc", "-web", "web-", "a.b", "", " web")

ANNOTATION_VALUES: dict[str, tuple[str, ...]] = {
    "mode": ("snat", "dnat", "DNAT", " snat ", "dsr", "stlsdnat", "local", "bogus", ""),
    "scheduler": ("rr", "weight", "hash", "symhash", "HASH", "random", ""),
    "sched-param": ("srcip", "srcip dstport", "srcip,srcport", "dstip srcip", "none", "bogus"),
    "persistence": ("none", "srcip", "srcip srcport", "dstip,dstport", "srcmac", "bogus", ""),
    "helper": ("none", "ftp", "pptp", "sip", "snmp", "tftp", "amanda", "FTP"),
    "log": ("none", "input", "forward output", "output,input", "bogus"),
    "est-connlimit": ("0", "100", "1000000", "1000001", "-1", "abc", " 42 ", "9" * 5000),
}
ODD_ANNOTATIONS = (
    (ANNOTATION_PREFIX + "bogus", "1"),
    ("mode", "dsr"),  # the original's bare-key quirk: must be ignored
    ("kubectl.kubernetes.io/last-applied-configuration", '{"apiVersion":"v1"}'),
    ("service.kubernetes.io/topology-mode", "Auto"),
)

#: Objects of other kinds, which the parser must pass over (a Knative Service is another kind).
NOISE = (
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "b"}},
    {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "kn"}},
    {"apiVersion": "apps/v1", "kind": "DeploymentList", "items": [{"metadata": {"name": "x"}}]},
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
)
#: Any JSON value, nested.
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=16,
)
#: A wrong value for any field: null, a scalar of any type, or a small nested structure.
junk_values = st.one_of(st.none(), scalars, json_values)

dns_labels = st.from_regex(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
"""Valid DNS-1035 labels of 1-63 characters: valid namespaces, Service and Node names."""

_ABSENT: Any = object()
_roll_field = st.integers(0, 47)  # shrinks towards 0: the good value
_roll_ten = st.integers(0, 9)
_bools = st.booleans()
_uuids = st.uuids().map(str)
_resource_versions = st.integers(1, 10**6).map(str)
_any_port = st.integers(1, 65535)
_timeouts = st.integers(1, 86400)
_bad_port_numbers = st.sampled_from((0, 65536, -1, "80", True, 80.0))
_odd_protocols = st.sampled_from(("QUIC", "tcp", "ICMP"))
_sample_cache: dict[tuple[Any, ...], st.SearchStrategy[Any]] = {}


def _pick(draw: st.DrawFn, options: tuple[Any, ...]) -> Any:
    """One of `options`, with one strategy per distinct tuple (built once)."""
    strategy = _sample_cache.get(options)
    if strategy is None:
        strategy = _sample_cache[options] = st.sampled_from(options)
    return draw(strategy)


def _chance(draw: st.DrawFn, one_in: int = 10) -> bool:
    """True once in `one_in` draws (shrinks to False)."""
    return draw(_roll_ten if one_in == 10 else st.integers(0, one_in - 1)) == one_in - 1


def _maybe(draw: st.DrawFn, value: Any, junk: bool) -> Any:
    """`value`, or with junk (1 in 16) absent, null or anything at all."""
    if junk:
        roll = draw(_roll_field)
        if roll == 47:
            return draw(junk_values)
        if roll == 46:
            return _ABSENT
        if roll == 45:
            return None
    return value


def _obj(**fields: Any) -> dict[str, Any]:
    """A JSON object from keyword fields (camelCase names), leaving absent ones out."""
    return {k: v for k, v in fields.items() if v is not _ABSENT}


def _name(draw: st.DrawFn, pool: tuple[str, ...], junk: bool) -> str:
    """Mostly a name from a small pool, sometimes any valid label, with junk rarely invalid."""
    if junk and _chance(draw, 6):
        if draw(_bools):  # over-long but otherwise valid: only the length is wrong
            return str(_pick(draw, pool)) + "-" + "z" * draw(st.integers(63, 70))
        return str(_pick(draw, INVALID_NAMES))
    if _chance(draw, 5):
        return draw(dns_labels)
    return str(_pick(draw, pool))


def _ip(draw: st.DrawFn, pool: tuple[str, ...], junk: bool) -> str:
    if junk and _chance(draw):
        return str(_pick(draw, JUNK_IPS))
    return str(_pick(draw, pool))


@st.composite
def namespaces(draw: st.DrawFn, junk: bool = True) -> str:
    return _name(draw, NAMESPACES, junk)


@st.composite
def service_names(draw: st.DrawFn, junk: bool = True) -> str:
    return _name(draw, SERVICE_NAMES, junk)


@st.composite
def annotation_dicts(draw: st.DrawFn, junk: bool = True) -> dict[str, Any]:
    """Some of this project's annotations with good and bad values, plus others' annotations."""
    out: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 4))):
        suffix = _pick(draw, tuple(ANNOTATION_VALUES))
        out[ANNOTATION_PREFIX + suffix] = _pick(draw, ANNOTATION_VALUES[suffix])
    for _ in range(draw(st.integers(0, 2))):
        key, value = _pick(draw, ODD_ANNOTATIONS)
        out[key] = value
    if junk and _chance(draw):
        out[ANNOTATION_PREFIX + "mode"] = draw(junk_values)
    return out


def _service_ports(draw: st.DrawFn, count: int, service_type: str, junk: bool) -> list[Any]:
    """`count` ports with unique names (a single port may be unnamed), as the API requires."""
    if count == 1:
        names = [_pick(draw, PORT_NAMES)]
    else:
        names = list(draw(st.permutations(PORT_NAMES[1:])))[:count]
    ports: list[Any] = []
    for name in names:
        protocol = _pick(draw, PROTOCOLS)
        if junk and _chance(draw):
            protocol = draw(_odd_protocols)
        if junk and _chance(draw):
            number: Any = draw(_bad_port_numbers)
        else:
            number = draw(_any_port) if _chance(draw, 4) else _pick(draw, PORT_NUMBERS)
        target: Any = _pick(draw, (*TARGET_PORTS, "http", "web", _ABSENT))
        node_port: Any = _ABSENT
        if service_type in ("NodePort", "LoadBalancer"):
            node_port = _maybe(draw, _pick(draw, NODE_PORTS), junk)
        port = _obj(
            name=_maybe(draw, name, junk) if name else _ABSENT,
            protocol=_maybe(draw, protocol, junk),
            port=_maybe(draw, number, junk),
            targetPort=_maybe(draw, target, junk),
            nodePort=node_port,
        )
        entry = _maybe(draw, port, junk)
        if entry is not _ABSENT:
            ports.append(entry)
    return ports


@st.composite
def service_dicts(
    draw: st.DrawFn,
    namespace: Any = None,
    name: Any = None,
    junk: bool = True,
) -> dict[str, Any]:
    """A Service of any type: single or dual stack, headless, with ports, IPs and affinity."""
    ns = _name(draw, NAMESPACES, junk) if namespace is None else namespace
    nm = _name(draw, SERVICE_NAMES, junk) if name is None else name
    service_type = _pick(draw, SERVICE_TYPES + (("Bogus",) if junk and _chance(draw) else ()))
    stack = _pick(draw, (("IPv4",), ("IPv6",), ("IPv4", "IPv6"), ("IPv6", "IPv4")))
    pools = {"IPv4": CLUSTER_V4, "IPv6": CLUSTER_V6}
    headless = service_type == "ClusterIP" and _chance(draw, 6)
    spec: dict[str, Any] = {}
    cluster_ips: list[Any] | None = None
    if service_type == "ExternalName":
        spec["externalName"] = "db.example.com"
    elif headless:
        cluster_ips = ["None"]
    else:
        cluster_ips = [_ip(draw, pools[f], junk) for f in stack]
    if cluster_ips is not None:
        form = _pick(draw, ("both", "both", "single", "plural"))
        if form in ("both", "single"):
            spec["clusterIP"] = _maybe(draw, cluster_ips[0], junk)
        if form in ("both", "plural"):
            spec["clusterIPs"] = _maybe(draw, cluster_ips, junk)
        if draw(_bools):
            families = ["IPv4", "IPv5"] if junk and _chance(draw) else list(stack)
            spec["ipFamilies"] = _maybe(draw, families, junk)
    count = draw(st.integers(0 if headless or service_type == "ExternalName" else 1, 3))
    spec["ports"] = _maybe(draw, _service_ports(draw, count, service_type, junk), junk)
    if service_type != "ClusterIP" or draw(_bools):  # ClusterIP is the default
        spec["type"] = _maybe(draw, service_type, junk)
    if _chance(draw, 4):
        external = [_ip(draw, EXTERNAL_V4 + EXTERNAL_V6, junk) for _ in range(draw(_roll_ten) % 4)]
        spec["externalIPs"] = _maybe(draw, external, junk)
    bogus: tuple[str, ...] = ("Bogus",) if junk and _chance(draw) else ()
    affinity = _pick(draw, ("None", "ClientIP", "ClientIP", _ABSENT, *bogus))
    spec["sessionAffinity"] = affinity
    if affinity == "ClientIP" and draw(_bools):
        if junk and _chance(draw):
            timeout: Any = _pick(draw, (0, -5, 90000, "10"))
        elif draw(_bools):
            timeout = _pick(draw, (10, 75, 10800, 86400))
        else:
            timeout = draw(_timeouts)
        spec["sessionAffinityConfig"] = {
            "clientIP": _obj(timeoutSeconds=_maybe(draw, timeout, junk))
        }
    if service_type in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = _pick(draw, ("Cluster", "Local", "Global", _ABSENT, *bogus))
    # The API server allocates one to every LoadBalancer Service with the Local policy.
    local = spec.get("externalTrafficPolicy") == "Local"
    if service_type == "LoadBalancer" and (local or _chance(draw)):
        spec["healthCheckNodePort"] = _maybe(draw, _pick(draw, HEALTH_CHECK_PORTS), junk)
    spec["internalTrafficPolicy"] = _pick(draw, ("Cluster", "Local", _ABSENT))
    status: Any = {}
    if service_type == "LoadBalancer":
        ingress = [
            {"hostname": "lb.example.com"}
            if _chance(draw, 4)
            else {"ip": _ip(draw, EXTERNAL_V4 + EXTERNAL_V6, junk)}
            for _ in range(draw(st.integers(0, 2)))
        ]
        status = {"loadBalancer": {"ingress": ingress}}
    meta = _obj(
        name=_maybe(draw, nm, junk),
        namespace=_maybe(draw, ns, junk),
        uid=_maybe(draw, draw(_uuids), junk),
        resourceVersion=_maybe(draw, draw(_resource_versions), junk),
        creationTimestamp=_maybe(draw, "2024-01-01T00:00:00Z", junk),
        labels=_maybe(draw, {"app": "demo"} if draw(_bools) else {}, junk),
        annotations=_maybe(draw, draw(annotation_dicts(junk)), junk),
    )
    return _obj(
        apiVersion="v1",
        kind="Service",
        metadata=_maybe(draw, meta, junk),
        spec=_maybe(draw, _obj(**spec), junk),
        status=_maybe(draw, status, junk),
    )


def _port_specs(service: Any) -> list[tuple[Any, Any]]:
    """(name, protocol) of each port of a generated Service, read without trusting it."""
    spec = service.get("spec") if isinstance(service, dict) else None
    ports = spec.get("ports") if isinstance(spec, dict) else None
    if not isinstance(ports, list):
        return []
    return [(p.get("name", ""), p.get("protocol", "TCP")) for p in ports if isinstance(p, dict)]


def _service_identity(service: Any) -> tuple[Any, Any]:
    meta = service.get("metadata") if isinstance(service, dict) else None
    if not isinstance(meta, dict):
        return "default", "web"
    return meta.get("namespace", "default"), meta.get("name", "web")


#: Conditions (ready, serving, terminating) of endpoints in each phase of a pod's life.
LIFECYCLE = {
    "running": (True, True, False),
    "terminating": (False, True, True),  # draining: still serving
    "stopping": (False, False, True),
    "starting": (False, False, False),
}


def _endpoint(
    draw: st.DrawFn,
    family: str,
    namespace: Any,
    node_names: tuple[str, ...],
    junk: bool,
    draining: bool = False,
) -> dict[str, Any]:
    """One endpoint in some phase of its life (any condition may be nil), on one of the nodes.

    In a `draining` slice no endpoint is running, as during a rolling update's last moments.
    """
    pool = POD_V4 if family == "IPv4" else POD_V6
    if junk and _chance(draw):
        pool = POD_V6 if family == "IPv4" else POD_V4  # the other family: must be filtered
    phases = ("terminating", "stopping", "starting") if draining else tuple(LIFECYCLE)
    values = LIFECYCLE[_pick(draw, phases + (("running",) * 3 if not draining else ()))]
    conditions: dict[str, Any] = {}
    for condition, value in zip(("ready", "serving", "terminating"), values, strict=True):
        if junk and _chance(draw, 30):
            conditions[condition] = "true"
        elif not _chance(draw, 6):  # else nil: absent or null
            conditions[condition] = value
        elif draw(_bools):
            conditions[condition] = None
    pod = f"pod-{draw(_roll_ten)}"
    addresses = [_ip(draw, pool, junk) for _ in range(1 + _chance(draw, 5))]
    target_ref = {"kind": "Pod", "namespace": namespace, "name": pod, "uid": pod + "-uid"}
    return _obj(
        addresses=_maybe(draw, addresses, junk),
        conditions=_maybe(draw, conditions, junk),
        nodeName=_maybe(draw, _pick(draw, (*node_names, _ABSENT)), junk),
        zone=_pick(draw, ("zone-a", "zone-b", _ABSENT)),
        targetRef=_maybe(draw, target_ref if draw(_roll_ten) else _ABSENT, junk),
    )


@st.composite
def endpoint_slice_dicts(
    draw: st.DrawFn,
    namespace: Any = "default",
    service_name: Any = "web",
    ports: list[tuple[Any, Any]] | None = None,
    node_names: tuple[str, ...] = NODE_NAMES,
    junk: bool = True,
    suffix: str | None = None,
) -> dict[str, Any]:
    """A slice of the Service: its ports (resolved to numbers), endpoints from a small pool."""
    if ports is None:
        ports = [(_pick(draw, PORT_NAMES), _pick(draw, PROTOCOLS))]
    family = _pick(draw, ("IPv4", "IPv6"))
    address_type: Any = _pick(draw, ("FQDN", "IPv5")) if junk and _chance(draw) else family
    address_type = _maybe(draw, address_type, junk)
    slice_ports = [
        _obj(
            name=name if name else _pick(draw, ("", _ABSENT)),
            protocol=protocol,
            port=_maybe(draw, _pick(draw, TARGET_PORTS), junk),
        )
        for name, protocol in ports
    ]
    if _chance(draw):  # a port of another name: must not match
        slice_ports.append({"name": "other", "protocol": "TCP", "port": 7777})
    draining = _chance(draw, 4)
    endpoints = [
        _endpoint(draw, family, namespace, node_names, junk, draining)
        for _ in range(draw(st.integers(0, 4)))
    ]
    if address_type == "FQDN":
        endpoints = [{"addresses": ["db.example.com"], "conditions": {"ready": True}}]
    labels: dict[str, Any] = {"endpointslice.kubernetes.io/managed-by": "test"}
    label = _maybe(draw, service_name, junk)
    if label is not _ABSENT:
        labels["kubernetes.io/service-name"] = label
    if suffix is None:
        suffix = _pick(draw, SLICE_SUFFIXES)
    name = f"{service_name}-{suffix}" if isinstance(service_name, str) else suffix
    if junk and _chance(draw, 20):
        name = _pick(draw, INVALID_NAMES)
    meta = _obj(
        name=name,
        namespace=namespace,
        resourceVersion=draw(_resource_versions),
        labels=_maybe(draw, labels, junk),
        annotations={"endpoints.kubernetes.io/last-change-trigger-time": "2024-01-01T00:00:00Z"},
    )
    return _obj(
        apiVersion="discovery.k8s.io/v1",
        kind="EndpointSlice",
        metadata=_maybe(draw, meta, junk),
        addressType=address_type,
        endpoints=_maybe(draw, endpoints, junk),
        ports=_maybe(draw, slice_ports, junk),
    )


@st.composite
def node_dicts(draw: st.DrawFn, name: Any = None, junk: bool = True) -> dict[str, Any]:
    """A Node with InternalIP/ExternalIP addresses of both families and a Hostname."""
    name = _pick(draw, NODE_NAMES) if name is None else name
    addresses: list[Any] = [
        {
            "type": _pick(draw, ("InternalIP", "ExternalIP")),
            "address": _ip(draw, NODE_V4 + NODE_V6, junk),
        }
        for _ in range(draw(st.integers(1, 4)))
    ]
    addresses.append({"type": "Hostname", "address": name})
    if junk and _chance(draw):
        addresses.append(draw(junk_values))
    meta = _obj(name=name, resourceVersion=_maybe(draw, draw(_resource_versions), junk))
    return _obj(
        apiVersion="v1",
        kind="Node",
        metadata=_maybe(draw, meta, junk),
        status=_maybe(draw, {"addresses": addresses}, junk),
    )


@st.composite
def _cluster(draw: st.DrawFn, junk: bool, wrap: bool) -> tuple[list[Any], tuple[str, ...]]:
    node_pool = (*NODE_NAMES, LONG_NODE_NAME)
    node_names = tuple(draw(st.permutations(node_pool))[: draw(st.integers(1, 3))])
    objs: list[Any] = []
    for _ in range(draw(st.integers(0, 4))):
        service = draw(service_dicts(junk=junk))
        objs.append(service)
        if _chance(draw, 5):
            continue  # a Service without slices
        ns, name = _service_identity(service)
        suffixes = draw(st.permutations(SLICE_SUFFIXES))[: draw(st.integers(1, 3))]
        objs.extend(
            draw(endpoint_slice_dicts(ns, name, _port_specs(service), node_names, junk, suffix))
            for suffix in suffixes
        )
    if _chance(draw, 5):  # slices whose Service is missing
        objs.append(draw(endpoint_slice_dicts(junk=junk)))
    objs.extend(draw(node_dicts(name, junk)) for name in node_names)
    if _chance(draw, 4):
        objs.append(copy.deepcopy(NOISE[draw(st.integers(0, len(NOISE) - 1))]))
    if junk and _chance(draw, 5):
        objs.append(draw(junk_values))
    objs = draw(st.permutations(objs))
    how = _pick(draw, ("none", "none", "list", "typed")) if wrap else "none"
    if how == "list":
        objs = in_a_list(objs)
    elif how == "typed":
        objs = in_typed_lists(objs)
    return objs, node_names


def in_a_list(objs: list[Any]) -> list[Any]:
    """The objects as the items of one plain List (as `kubectl get -o json` prints several)."""
    return [{"apiVersion": "v1", "kind": "List", "items": objs}]


def in_typed_lists(objs: list[Any]) -> list[Any]:
    """Services, slices and Nodes in *List objects whose items carry no kind, as the API lists."""
    lists: dict[tuple[str, Any], dict[str, Any]] = {}
    rest: list[Any] = []
    for obj in objs:
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if isinstance(obj, dict) and kind in ("Service", "EndpointSlice", "Node"):
            version = obj.get("apiVersion")
            lst = lists.setdefault(
                (kind, version), {"kind": f"{kind}List", "apiVersion": version, "items": []}
            )
            lst["items"].append({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
        else:
            rest.append(obj)
    return [*lists.values(), *rest]


def cluster_objects(junk: bool = True, wrap: bool = True) -> st.SearchStrategy[list[Any]]:
    """A list of API objects: Services with their slices (mostly), 1-3 Nodes, some noise.

    With `wrap`, the objects are sometimes items of a List or of typed *List objects.
    """
    return _cluster(junk, wrap).map(lambda pair: pair[0])


@st.composite
def cluster_and_node(draw: st.DrawFn, junk: bool = True) -> tuple[list[Any], str]:
    """`cluster_objects()` and the name of one of its Nodes, as the agent's node name."""
    objs, node_names = draw(_cluster(junk, True))
    return objs, _pick(draw, node_names)


def _paths(value: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key or index) inside a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield value, k
            yield from _paths(v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield value, i
            yield from _paths(v)


@st.composite
def corrupted(draw: st.DrawFn, objs: st.SearchStrategy[list[Any]]) -> list[Any]:
    """Objects from `objs` with a few values anywhere inside replaced by junk or removed."""
    result = copy.deepcopy(draw(objs))
    places = list(_paths(result))
    for _ in range(draw(st.integers(1, 4))):
        if not places:
            break
        container, key = places[draw(st.integers(0, len(places) - 1))]
        if isinstance(container, dict) and draw(_bools):
            container.pop(key, None)
        elif isinstance(container, dict) or key < len(container):
            container[key] = draw(junk_values)
    return result
