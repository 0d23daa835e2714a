from __future__ import annotations

import pytest

from reconciler.core.farms import NAME_RE, Family, Protocol
from reconciler.core.names import (
    EXTERNAL_IP,
    LOAD_BALANCER,
    NODE_PORT,
    FarmKey,
    address_name,
    backend_name,
    farm_name,
    frontend_segment,
    is_owned,
    is_shortened,
    parse_farm_name,
)


def key(**kw: object) -> FarmKey:
    base: dict[str, object] = {
        "namespace": "default",
        "service": "web",
        "port": "http",
        "protocol": Protocol.TCP,
        "family": Family.IPV4,
    }
    base.update(kw)
    return FarmKey(**base)  # type: ignore[arg-type]


def test_short_key_gives_readable_name_that_parses_back() -> None:
    k = key()
    assert farm_name(k) == "k8s.default.web.http.tcp.v4"
    assert parse_farm_name("k8s.default.web.http.tcp.v4") == k


def test_frontend_segment_and_ipv6_and_unnamed_port() -> None:
    segment = frontend_segment(NODE_PORT, "fd00::1")
    assert segment.startswith("n") and len(segment) == 7
    k = key(port="53", protocol=Protocol.UDP, family=Family.IPV6, frontend=segment)
    assert farm_name(k) == f"k8s.default.web.53.udp.v6.{segment}"
    assert parse_farm_name(farm_name(k)) == k
    assert k.external and not key().external


def test_each_frontend_gets_its_own_name() -> None:
    names = {
        farm_name(key(frontend=frontend_segment(kind, ip)))
        for kind in (NODE_PORT, EXTERNAL_IP, LOAD_BALANCER)
        for ip in ("10.0.0.1", "10.0.0.2")
    }
    assert len(names) == 6


def test_same_service_name_in_two_namespaces_gives_two_names() -> None:
    assert farm_name(key(namespace="a")) != farm_name(key(namespace="b"))


def test_long_names_are_cut_with_a_hash_and_stay_unique() -> None:
    a = key(namespace="n" * 63, service="s" * 63)
    b = key(namespace="n" * 63, service="s" * 62 + "t")
    na, nb = farm_name(a), farm_name(b)
    assert len(na) <= 63 and len(nb) <= 63
    assert na != nb
    assert NAME_RE.match(na)
    assert is_shortened(na) and is_owned(na)
    assert parse_farm_name(na) is None  # only recomputation identifies a cut name
    assert farm_name(a) == na  # deterministic


@pytest.mark.parametrize(
    "name",
    [
        "web",
        "k8s",
        "k8s.default.web.http.tcp",
        "k8s.default.web.http.xdp.v4",
        "k8s.Default.web.http.tcp.v4",
        "k8s.default.web.http.tcp.v4.int",
        "k8s.default.web.http.tcp.v4.ext",
        "kube.default.web.http.tcp.v4",
        "",
        "k8s..web.http.tcp.v4",
    ],
)
def test_foreign_names_are_not_owned(name: str) -> None:
    assert not is_owned(name)


def test_address_name_is_nftlbs_own_for_the_farm() -> None:
    assert address_name("k8s.default.web.http.tcp.v4") == "k8s.default.web.http.tcp.v4-addr"


def test_backend_names_are_unique_per_ip_and_port_and_url_safe() -> None:
    assert backend_name("10.0.0.1", 80) != backend_name("10.0.0.1", 81)
    assert backend_name("10.0.0.1", 80) != backend_name("10.0.0.2", 80)
    assert backend_name("fd00::1", 80) == "b-fd00--1-80"
    assert "/" not in backend_name("fd00::1", 80)
