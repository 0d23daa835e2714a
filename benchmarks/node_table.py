"""The cost of the node rules (``table inet kube-nftlb``) per sync, with the real nft and kernel.

Run as root in a private network namespace (the host's ruleset is never touched)::

    unshare -n python -m benchmarks.node_table [--scales 0,1000,5000] [--runs 20]

For each cluster size (the benchmark cluster of `benchmarks/cluster.py`: ClusterIP Services with
4 ready endpoints, every tenth without endpoints so its cluster IP is rejected, every twentieth a
LoadBalancer with externalTrafficPolicy Local and source ranges): the pure computation of the
whole table, the first write, a full resync that finds nothing to change (read back, parse,
diff), and a partial sync of one endpoint change (one Service's share, its delta, one nft
transaction). Medians of `--runs`; timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from attrs import evolve

from benchmarks.cluster import NODE, NODE_NAME, bench_objects, endpoint_ip
from reconciler.core.desired import desired_farms, frontend_farms
from reconciler.core.farms import Backend
from reconciler.core.kube import ClusterState, parse_endpoint_slice, parse_node, parse_service
from reconciler.core.node_diff import RuleIndex, delta_commands, diff_tables
from reconciler.core.node_rules import (
    FrontendFarm,
    NodeRulesConfig,
    service_rules,
    skeleton,
    table_of,
)
from reconciler.kernel.nftables import NodeTableWriter

CONFIG = NodeRulesConfig(cluster_cidrs=("10.128.0.0/9",), service_cidrs=("10.96.0.0/12",))


def objects(count: int) -> list[dict[str, Any]]:
    out = []
    for obj in bench_objects(count, 4):
        index = int(obj["metadata"]["name"].split("-")[1][:5])
        if obj["kind"] == "EndpointSlice" and index % 10 == 9:
            obj["endpoints"] = []
        if obj["kind"] == "Service" and index % 20 == 3:
            obj["spec"] |= {
                "type": "LoadBalancer",
                "externalTrafficPolicy": "Local",
                "loadBalancerSourceRanges": ["203.0.113.0/24"],
            }
            obj["spec"]["ports"][0]["nodePort"] = 30000 + index % 2000
            obj["status"] = {"loadBalancer": {"ingress": [{"ip": f"198.51.{index // 250}.{index % 250 + 1}"}]}}
        out.append(obj)
    return out


def state_of(objs: list[dict[str, Any]]) -> ClusterState:
    services = [s for o in objs if o["kind"] == "Service" if (s := parse_service(o)[0]) is not None]
    slices = [e for o in objs if o["kind"] == "EndpointSlice" if (e := parse_endpoint_slice(o)[0]) is not None]
    node = parse_node(NODE)[0]
    assert node is not None
    return ClusterState.build(services, slices, [node])


def shares(state: ClusterState, desired: Any) -> tuple[RuleIndex, Any]:
    owners = desired.owner_map()
    won: dict[Any, list[Any]] = {}
    for farm in desired.farms:
        won.setdefault(owners[farm.name], []).append(farm)
    node = state.nodes.get(NODE_NAME)
    index = RuleIndex()
    for key, svc in state.services.items():
        names = frontend_farms(svc, node)
        fronts = [FrontendFarm(f, *names[f.name]) for f in won.get(key, ()) if f.name in names]
        index.replace(key, service_rules(svc, fronts, state.slices_for(svc), node, NODE_NAME, CONFIG))
    return index, won


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def run(scale: int, runs: int) -> dict[str, Any]:
    writer = NodeTableWriter()
    subprocess.run(["nft", "delete", "table", "inet", "kube-nftlb"], capture_output=True)
    state = state_of(objects(scale))
    node = state.nodes.get(NODE_NAME)
    base = skeleton(CONFIG, node)

    compute: list[float] = []
    desired = desired_farms(state, NODE_NAME)  # the farms' own cost, not measured here
    for _ in range(max(1, runs // 4)):
        t0 = time.perf_counter()
        index, won = shares(state, desired)
        table = table_of(base, index.shares())
        compute.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    first = diff_tables(table, writer.read())
    sent = writer.apply(first)
    first_write = time.perf_counter() - t0

    read_s, diff_s, resync = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        back = writer.read()
        t1 = time.perf_counter()
        commands = diff_tables(table_of(base, index.shares()), back)
        t2 = time.perf_counter()
        assert commands == [], commands[:3]
        read_s.append(t1 - t0)
        diff_s.append(t2 - t1)
        resync.append(t2 - t0)

    partial, partial_commands = [], []
    if scale:
        key = ("bench", "svc-00000")
        svc = state.services[key]
        for i in range(runs):
            raw = {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "svc-00000-abcde",
                    "namespace": "bench",
                    "labels": {"kubernetes.io/service-name": "svc-00000"},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
                "endpoints": [
                    {"addresses": [endpoint_ip(0, j + i % 2)], "conditions": {"ready": True}, "nodeName": NODE_NAME}
                    for j in range(4)
                ],
            }
            slice_ = parse_endpoint_slice(raw)[0]
            farm = won[key][0]

            farm = evolve(farm, backends=tuple(Backend(f"b{j}", e.addresses[0], 8080) for j, e in enumerate(slice_.endpoints)))  # type: ignore[union-attr]
            t0 = time.perf_counter()
            names = frontend_farms(svc, node)
            share = service_rules(svc, [FrontendFarm(farm, *names[farm.name])], (slice_,), node, NODE_NAME, CONFIG)
            plus, minus, chains = index.replace(key, share)
            commands = delta_commands(base.sets, plus, minus, chains)
            writer.apply(commands)
            partial.append(time.perf_counter() - t0)
            partial_commands.append(len(commands))

    listing = json.loads(
        subprocess.run(["nft", "-j", "list", "table", "inet", "kube-nftlb"], capture_output=True, text=True, check=True).stdout
    )
    elements = sum(len(o[k].get("elem", [])) for o in listing["nftables"] for k in ("set", "map") if k in o)
    subprocess.run(["nft", "delete", "table", "inet", "kube-nftlb"], capture_output=True)
    return {
        "services": scale,
        "elements": elements,
        "chains": len(table.chains),
        "compute_ms": median_ms(compute),
        "first_write_ms": round(first_write * 1000, 2),
        "first_write_commands": len(first),
        "first_write_bytes": sent,
        "resync_ms": median_ms(resync),
        "resync_read_ms": median_ms(read_s),
        "resync_diff_ms": median_ms(diff_s),
        "partial_ms": median_ms(partial) if partial else None,
        "partial_commands": max(partial_commands) if partial_commands else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.node_table")
    parser.add_argument("--scales", default="0,1000,5000")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    rows = [run(int(s), args.runs) for s in args.scales.split(",")]
    json.dump(rows, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
