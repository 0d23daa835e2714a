"""kube-proxy's metrics: names, buckets and meanings, driven through the controller."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tests.unit.test_controller import World, service
from tests.unit.test_controller_node_table import put, world

from reconciler import __version__
from reconciler.agent.metrics import (
    KUBEPROXY_PROGRAMMING_BUCKETS,
    KUBEPROXY_SYNC_BUCKETS,
    Metrics,
)
from reconciler.core.kube import parse_endpoint_slice, parse_service


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


def _slice(ips: list[str], trigger: float | None, rv: str) -> Any:
    annotations = {}
    if trigger is not None:
        stamp = dt.datetime.fromtimestamp(trigger, dt.UTC).isoformat().replace("+00:00", "Z")
        annotations["endpoints.kubernetes.io/last-change-trigger-time"] = stamp
    raw = {
        "metadata": {
            "name": "web-1",
            "namespace": "default",
            "resourceVersion": rv,
            "labels": {"kubernetes.io/service-name": "web"},
            "annotations": annotations,
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip]} for ip in ips],
    }
    return parse_endpoint_slice(raw)[0]


def test_buckets_are_kube_proxys() -> None:
    assert KUBEPROXY_SYNC_BUCKETS[0] == 0.001 and len(KUBEPROXY_SYNC_BUCKETS) == 15
    assert abs(KUBEPROXY_SYNC_BUCKETS[-1] - 16.384) < 1e-9
    expected = [0.0, 0.25, 0.5, *range(1, 60), *range(60, 120, 5), *range(120, 301, 30)]
    assert list(KUBEPROXY_PROGRAMMING_BUCKETS) == [float(b) for b in expected]
    m = Metrics()
    text = m.render().decode()
    assert 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="16.384"}' in text
    assert 'kubeproxy_network_programming_duration_seconds_bucket{le="300.0"}' in text
    assert 'kubeproxy_network_programming_duration_seconds_bucket{le="0.0"}' in text


def test_build_info_and_process_metrics() -> None:
    m = Metrics()
    assert any(
        name == "kube_nftlb_build_info" and dict(labels)["version"] == __version__ and v == 1
        for (name, labels), v in samples(m).items()
    )
    names = {name for name, _ in samples(m)}
    assert {"process_resident_memory_bytes", "process_start_time_seconds", "python_info"} <= names
    assert "process_cpu_seconds_total" in names


def test_changes_pending_and_syncs_as_kube_proxy_counts_them() -> None:
    w = World()
    m = w.controller.metrics
    before = time.time()
    w.put_service(service())
    w.put_service(service(rv="2"))  # an update that changes nothing is an event all the same
    w.put_slice(_slice(["10.244.0.5"], None, "1"))
    assert value(m, "kubeproxy_sync_proxy_rules_service_changes_total") == 2
    assert value(m, "kubeproxy_sync_proxy_rules_service_changes_pending") == 1
    assert value(m, "kubeproxy_sync_proxy_rules_endpoint_changes_total") == 1
    assert value(m, "kubeproxy_sync_proxy_rules_endpoint_changes_pending") == 1
    assert value(m, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds") >= before
    assert w.controller.sync_full().ok
    assert value(m, "kubeproxy_sync_proxy_rules_service_changes_pending") == 0
    assert value(m, "kubeproxy_sync_proxy_rules_endpoint_changes_pending") == 0
    assert value(m, "kubeproxy_sync_proxy_rules_last_timestamp_seconds") >= before
    w.put_slice(_slice(["10.244.0.6"], None, "2"))
    assert w.controller.sync_partial().ok
    assert value(m, "kubeproxy_sync_proxy_rules_duration_seconds_count") == 2
    assert value(m, "kubeproxy_sync_full_proxy_rules_duration_seconds_count") == 1
    assert value(m, "kubeproxy_sync_partial_proxy_rules_duration_seconds_count") == 1
    assert value(m, "kubeproxy_sync_proxy_rules_nftables_sync_failures_total") == 0


def test_programming_latency_is_from_the_trigger_time_to_the_end_of_the_sync() -> None:
    w = World()
    m = w.controller.metrics
    w.put_service(service())
    w.put_slice(_slice(["10.244.0.5"], dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp(), "1"))
    assert w.controller.sync_full().ok
    # A change from before the agent started is not counted (kube-proxy ignores those too).
    assert value(m, "kubeproxy_network_programming_duration_seconds_count") == 0
    trigger = time.time()
    w.put_slice(_slice(["10.244.0.6"], trigger, "2"))
    time.sleep(0.3)
    assert w.controller.sync_partial().ok
    assert value(m, "kubeproxy_network_programming_duration_seconds_count") == 1
    assert value(m, "kubeproxy_network_programming_duration_seconds_bucket", le="0.25") == 0
    assert value(m, "kubeproxy_network_programming_duration_seconds_bucket", le="1.0") == 1
    assert 0.3 <= value(m, "kubeproxy_network_programming_duration_seconds_sum") < 5


def test_a_failed_sync_is_timed_and_counted_and_leaves_the_last_success() -> None:
    w = World()
    m = w.controller.metrics
    w.put_service(service())
    assert w.controller.sync_full().ok
    last = value(m, "kubeproxy_sync_proxy_rules_last_timestamp_seconds")
    w.model.key = "other"
    w.controller.request_full_sync()
    assert not w.controller.sync_full().ok
    assert value(m, "kubeproxy_sync_proxy_rules_nftables_sync_failures_total") == 1
    assert value(m, "kubeproxy_sync_full_proxy_rules_duration_seconds_count") == 2
    assert value(m, "kubeproxy_sync_proxy_rules_last_timestamp_seconds") == last
    assert value(m, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds") >= last


def test_a_change_a_failed_sync_took_is_timed_to_the_sync_that_programs_it() -> None:
    w = World()
    m = w.controller.metrics
    w.put_service(service())
    assert w.controller.sync_full().ok
    w.model.key = "other"  # nftlb refuses the next syncs
    trigger = time.time()
    w.put_slice(_slice(["10.244.0.7"], trigger, "3"))
    assert not w.controller.sync_partial().ok
    assert not w.controller.sync_full().ok
    assert value(m, "kubeproxy_network_programming_duration_seconds_count") == 0
    w.model.key = "k"
    time.sleep(0.3)
    assert w.controller.sync_full().ok
    assert value(m, "kubeproxy_network_programming_duration_seconds_count") == 1
    assert value(m, "kubeproxy_network_programming_duration_seconds_sum") >= 0.3
    assert w.controller.sync_full().ok  # observed once, not again
    assert value(m, "kubeproxy_network_programming_duration_seconds_count") == 1


NO_LOCAL = "kubeproxy_sync_proxy_rules_no_local_endpoints_total"


def _local_service(rv: str, **spec: Any) -> Any:
    raw = {
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": rv},
        "spec": {
            "clusterIP": "10.96.0.1",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
            **spec,
        },
    }
    return parse_service(raw)[0]


def _slice_on(node: str, rv: str) -> Any:
    raw = {
        "metadata": {
            "name": "web-1",
            "namespace": "default",
            "resourceVersion": rv,
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": node}],
    }
    return parse_endpoint_slice(raw)[0]


def test_no_local_endpoints_is_set_after_each_sync_and_follows_the_endpoints() -> None:
    controller, _, services, slices = world()
    m = controller.metrics
    assert (NO_LOCAL, (("traffic_policy", "internal"),)) not in samples(m)  # none before a sync
    put(controller, services, _local_service("1", internalTrafficPolicy="Local"))
    put(controller, slices, _slice_on("n2", "1"))  # the only endpoint is on another node
    assert controller.sync_full().ok
    assert value(m, NO_LOCAL, traffic_policy="internal") == 1
    assert (NO_LOCAL, (("traffic_policy", "external"),)) in samples(m)
    assert value(m, NO_LOCAL, traffic_policy="external") == 0
    put(controller, slices, _slice_on("n1", "2"))  # it moves here
    assert controller.sync_partial().ok
    assert value(m, NO_LOCAL, traffic_policy="internal") == 0
    put(controller, slices, _slice_on("n2", "3"))  # and away again
    assert controller.sync_partial().ok
    assert value(m, NO_LOCAL, traffic_policy="internal") == 1
    put(
        controller,
        services,
        _local_service("2", type="NodePort", externalTrafficPolicy="Local"),
    )
    assert controller.sync_partial().ok
    assert value(m, NO_LOCAL, traffic_policy="internal") == 0
    assert value(m, NO_LOCAL, traffic_policy="external") == 1
    services.items.pop(("default", "web"))
    controller.on_service(("default", "web"), _local_service("2"), None)
    assert controller.sync_partial().ok
    assert value(m, NO_LOCAL, traffic_policy="external") == 0


def test_no_local_endpoints_is_left_alone_by_a_failed_sync() -> None:
    controller, kernel, services, slices = world()
    m = controller.metrics
    put(controller, services, _local_service("1", internalTrafficPolicy="Local"))
    put(controller, slices, _slice_on("n2", "1"))
    assert controller.sync_full().ok
    kernel.refuse = True  # nft refuses the table: nothing changed in the kernel
    put(controller, slices, _slice_on("n1", "2"))
    assert not controller.sync_partial().ok
    assert value(m, NO_LOCAL, traffic_policy="internal") == 1
    kernel.refuse = False
    assert controller.sync_full().ok
    assert value(m, NO_LOCAL, traffic_policy="internal") == 0
