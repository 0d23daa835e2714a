"""`kube-nftlb explain NAMESPACE/NAME`: why a Service works, or does not, on this node.

For one Service, from the same input `render` and `diff` read: its farms and frontends, which
endpoints became backends and which were left out and why (the pure core's
`endpoints.explain_endpoints`, never a second copy of the rules here), its problems, and, with
`--nftlb-url` (or `--state`), whether nftlb holds exactly that farm by farm (and which of its
farms a farm kube-nftlb did not make holds, as `diff` says); with a live nftlb,
as root on the node, whether the kernel does too (`nft -j list ruleset`). Exit codes as `diff`:
0 everything matches, 1 something differs, 2 an error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from typing import Any

from reconciler.agent.config import NFTLB_URL
from reconciler.cli.main import (
    EXIT_CHANGES,
    EXIT_OK,
    Resolved,
    UsageError,
    conflicts_for,
    load_source,
    plan_for,
    read_nftlb,
    warn,
)
from reconciler.core.desired import desired_farms, is_proxied, is_served
from reconciler.core.diff import marked_farms
from reconciler.core.endpoints import explain_endpoints
from reconciler.core.farms import Family, Farm
from reconciler.core.kube import HEADLESS_LABEL, Service
from reconciler.core.names import (
    EXTERNAL_IP,
    LOAD_BALANCER,
    NODE_PORT,
    parse_farm_name,
    port_segment,
)
from reconciler.core.nftlb_ruleset import kernel_differences, ruleset_objects
from reconciler.core.ownership import conflict_problem
from reconciler.core.plan import Operation
from reconciler.core.problems import Problem
from reconciler.core.selection import selected
from reconciler.core.wire import ReadBack

_FRONTEND_KIND = {"": "cluster-ip", NODE_PORT: "node-port", EXTERNAL_IP: "external-ip"}
_FRONTEND_KIND[LOAD_BALANCER] = "load-balancer-ip"


def _hostport(ip: str, port: int | None) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _not_served(service: Service, proxy_name: str) -> str | None:
    if service.type == "ExternalName":
        return "type ExternalName: DNS only, nothing to balance"
    if service.is_headless:
        return "headless (no cluster IP): DNS only, nothing to balance"
    if service.label(HEADLESS_LABEL) is not None:
        return "labelled service.kubernetes.io/headless: kube-proxy's selector skips it"
    if not is_served(service, proxy_name):
        return (
            "not labelled service.kubernetes.io/service-proxy-name="
            f"{proxy_name} (this proxy serves only those, see --proxy-name)"
            if proxy_name
            else "labelled service.kubernetes.io/service-proxy-name (this proxy serves "
            "unlabelled Services; see --proxy-name)"
        )
    if not is_proxied(service, proxy_name):
        return "not proxied"
    return None


def _belongs(name: str, key: tuple[str, str], ours: set[str]) -> bool:
    parsed = parse_farm_name(name)
    return name in ours or (parsed is not None and (parsed.namespace, parsed.service) == key)


def _kernel(farms: list[Farm]) -> dict[str, Any]:
    """The kernel's view of these farms, when this process may read it (root, nft present)."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        return {"checked": False, "why": "not root on the node, or no nft", "differences": []}
    try:
        out = subprocess.run(
            ["nft", "-j", "list", "ruleset"], capture_output=True, text=True, check=True, timeout=30
        )
        ruleset = ruleset_objects(json.loads(out.stdout))
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return {"checked": False, "why": f"nft -j list ruleset failed: {e}", "differences": []}
    return {"checked": True, "why": None, "differences": kernel_differences(farms, ruleset)}


def _problem_row(p: Problem) -> dict[str, Any]:
    return {
        "object": str(p.ref),
        "reason": p.reason,
        "message": p.message,
        "key": p.key or None,
        "value": p.value or None,
    }


def build_report(args: argparse.Namespace, settings: Resolved) -> dict[str, Any]:
    namespace, _, name = args.service.partition("/")
    if not namespace or not name or "/" in name:
        raise UsageError(
            f"NAMESPACE/NAME: {args.service!r} is not namespace/name (e.g. default/web)"
        )
    source = load_source(args)
    key = (namespace, name)
    service = source.state.services.get(key)
    if service is None:
        raise UsageError(f"no Service {namespace}/{name} in the input")
    desired = desired_farms(source.state, source.node_name, source.proxy_name, source.nodeports)
    owners = desired.owner_map()
    farms = [f for f in desired.farms if owners.get(f.name) == key]
    ours = {f.name for f in farms}
    # the slices the agent's informers see (kube-proxy's selector)
    slices = tuple(
        s for s in source.state.slices_for(service) if selected(s.labels, source.proxy_name)
    )
    node = source.state.nodes.get(source.node_name)
    zone = node.zone if node is not None else ""
    slice_names = {s.name for s in slices}
    problems = [
        p
        for p in (*source.problems, *desired.problems)
        if (p.ref.kind == "Service" and (p.ref.namespace, p.ref.name) == key)
        or (
            p.ref.kind == "EndpointSlice"
            and p.ref.namespace == namespace
            and p.ref.name in slice_names
        )
    ]

    farm_rows = []
    scopes: dict[tuple[str, Family, bool], None] = {}
    for farm in farms:
        parsed = parse_farm_name(farm.name)
        segment = parsed.frontend if parsed is not None else ""
        kind = _FRONTEND_KIND.get(segment[:1], "cluster-ip")
        external = kind != "cluster-ip"
        policy = service.external_traffic_policy if external else service.internal_traffic_policy
        segment_of_port = parsed.port if parsed is not None else ""
        scopes[(segment_of_port, farm.family, policy == "Local")] = None
        farm_rows.append(
            {
                "name": farm.name,
                "frontend": kind,
                "protocol": farm.protocol.value,
                "addresses": [_hostport(a.ip, a.port) for a in farm.addresses],
                "mode": farm.mode.value,
                "scheduler": farm.scheduler.value,
                "persistence": list(farm.persistence),
                "traffic_policy": policy or "Cluster",
                "backends": [_hostport(b.ip, b.port) for b in farm.backends],
            }
        )
    endpoints = []
    for port in service.ports:
        segment = port_segment(port.name, port.port)
        for family in Family:
            for local in (False, True):
                if (segment, family, local) not in scopes:
                    continue
                for v in explain_endpoints(
                    service, port, slices, family, source.node_name, local, zone
                ):
                    ref = v.target_ref
                    endpoints.append(
                        {
                            "port": segment,
                            "family": family.value,
                            "node_local": local,
                            "address": v.address,
                            "target_port": v.port,
                            "node": v.node_name or None,
                            "slice": v.slice_name,
                            "target": f"{ref.kind}/{ref.name}" if ref is not None else None,
                            "backend": v.used,
                            "reason": v.reason.value if v.reason is not None else None,
                        }
                    )

    report: dict[str, Any] = {
        "version": 1,
        "service": f"{namespace}/{name}",
        "node": source.node_name or None,
        "not_served": _not_served(service, source.proxy_name),
        "farms": farm_rows,
        "endpoints": endpoints,
        "problems": [_problem_row(p) for p in problems],
        "nftlb": None,
        "matches": None,
    }
    read = read_nftlb(args, settings)
    if read is None:
        warn("neither --nftlb-url nor --state given: comparing with an empty nftlb")
        read = ReadBack(())
        where = "an empty nftlb"
    else:
        where = args.state if getattr(args, "state", None) else args.nftlb_url
    planned = [op for op in plan_for(desired, read) if _belongs(op.farm_name, key, ours)]
    # Spares (retired backends, down and out of every map) change nothing traffic sees: their
    # deletes are listed apart and do not make the Service differ.
    ops: list[Operation] = [op for op in planned if not op.cleanup]
    spares = [op.target for op in planned if op.cleanup]
    # This Service's farms that a farm kube-nftlb did not make holds: `run` withholds them (so
    # they are in no operation) and reports a ForeignFarm problem, as here.
    conflicts = [c for c in conflicts_for(desired, read) if c.farm in ours]
    report["problems"] += [_problem_row(conflict_problem(c, key)) for c in conflicts]
    nftlb: dict[str, Any] = {
        "compared_with": where,
        "matches": not ops and not conflicts,
        "operations": [op.to_json() for op in ops],
        "spares": spares,
        "conflicts": [c.to_json() for c in conflicts],
        "foreign_farms": list(read.foreign),
        "kernel": None,
    }
    differs = bool(ops) or bool(conflicts)
    if settings.given(NFTLB_URL) and not getattr(args, "state", None):
        marked = marked_farms(farms, read.owned)
        nftlb["kernel"] = kernel = _kernel(list(marked.values()))
        differs = differs or bool(kernel["differences"])
    report["nftlb"] = nftlb
    report["matches"] = not differs
    return report


def _text(r: dict[str, Any]) -> str:
    lines = [f"Service {r['service']}" + (f" on node {r['node']}" if r["node"] else "")]
    if r["not_served"]:
        lines.append(f"  not served here: {r['not_served']}")
    lines.append("")
    lines.append(f"Farms ({len(r['farms'])}):" if r["farms"] else "Farms: none")
    for f in r["farms"]:
        lines.append(
            f"  {f['name']}  {f['frontend']} {f['protocol']} {', '.join(f['addresses'])}"
            f"  mode {f['mode']}, scheduler {f['scheduler']}, traffic policy {f['traffic_policy']}"
        )
        lines.append(f"    backends: {', '.join(f['backends']) or 'none (traffic is dropped)'}")
    if r["endpoints"]:
        lines.append("")
        lines.append("Endpoints:")
        for e in r["endpoints"]:
            scope = "node-local" if e["node_local"] else "cluster-wide"
            verdict = "backend" if e["backend"] else f"left out: {e['reason']}"
            who = ", ".join(
                x
                for x in (
                    e["target"],
                    f"node {e['node']}" if e["node"] else None,
                    f"slice {e['slice']}",
                )
                if x
            )
            lines.append(
                f"  port {e['port']} {e['family']} {scope}: "
                f"{_hostport(e['address'], e['target_port'])}  {verdict}  ({who})"
            )
    lines.append("")
    lines.append(f"Problems ({len(r['problems'])}):" if r["problems"] else "Problems: none")
    for p in r["problems"]:
        lines.append(f"  {p['reason']}: {p['message']}")
    n = r["nftlb"]
    lines.append("")
    if n["matches"]:
        lines.append(f"nftlb ({n['compared_with']}): holds exactly these farms")
    elif not n["operations"]:
        lines.append(
            f"nftlb ({n['compared_with']}): nothing `run` would send, but farms are withheld:"
        )
    else:
        lines.append(f"nftlb ({n['compared_with']}): differs; the plan `run` would apply:")
        for op in n["operations"]:
            target = f" {op['target']}" if op.get("target") else ""
            lines.append(f"  {op['op']} {op['farm']}{target}")
            for c in op["changes"]:
                lines.append(f"    {c['path']}: {json.dumps(c['old'])} -> {json.dumps(c['new'])}")
    if n["spares"]:
        lines.append(
            f"  spares (retired backends, down, out of every map) the cleanup will delete: "
            f"{', '.join(n['spares'])}"
        )
    for c in n["conflicts"]:
        lines.append(
            f"  ! conflict {c['farm']}: not programmed, nftlb's farm {c['foreign']!r} (not "
            f"kube-nftlb's) holds its {'name' if c['what'] == 'name' else c['frontend']}"
        )
    kernel = n["kernel"]
    if kernel is not None:
        if not kernel["checked"]:
            lines.append(f"kernel: not checked ({kernel['why']})")
        elif kernel["differences"]:
            lines.append("kernel: differs:")
            lines.extend(f"  {d.removeprefix('kernel: ')}" for d in kernel["differences"])
        else:
            lines.append("kernel: holds exactly these frontends and backends")
    return "\n".join(lines) + "\n"


def explain(args: argparse.Namespace, settings: Resolved) -> int:
    report = build_report(args, settings)
    if args.output == "json":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(_text(report))
    return EXIT_OK if report["matches"] else EXIT_CHANGES
