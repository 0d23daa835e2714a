"""The `kube-nftlb` command line: `render`, `diff` (and `run`, the DaemonSet's loop).

Exit codes follow `diff` and `kubectl diff`: 0 nothing to do, 1 changes (diff only), 2 errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from reconciler import __version__
from reconciler.agent.config import (
    ConfigError,
    duration,
    env,
    flag_bool,
    kube_api_client,
    node_rules_config,
    read_key,
)
from reconciler.agent.http import AddressError, parse_address
from reconciler.cli.manifests import ManifestError, load_paths
from reconciler.core.desired import Desired, desired_farms
from reconciler.core.diff import diff
from reconciler.core.farms import Farm, assign_marks
from reconciler.core.kube import parse_objects
from reconciler.core.plan import render_text
from reconciler.core.problems import Problem
from reconciler.core.wire import farms_document, parse_farms

EXIT_OK, EXIT_CHANGES, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit 2."""


def _print_problems(problems: Sequence[Problem], out: TextIO) -> None:
    for p in problems:
        print(f"problem: {p.ref}: {p.reason}: {p.message}", file=out)


def _node_name(arg: str | None, objects: Sequence[Any]) -> str:
    """--node, else $NODE_NAME, else the only Node in the input, else none (no node ports)."""
    if arg:
        return arg
    if os.environ.get("NODE_NAME"):
        return os.environ["NODE_NAME"]
    nodes = [o for o in objects if isinstance(o, dict) and o.get("kind") == "Node"]
    if len(nodes) == 1:
        name = (nodes[0].get("metadata") or {}).get("name")
        if isinstance(name, str):
            return name
    return ""


def _list_cluster(kubeconfig: str | None) -> list[Any]:
    """One list of Services, EndpointSlices and Nodes from the live cluster, as API JSON."""
    import kubernetes

    api_client = kube_api_client(kubeconfig)
    core = kubernetes.client.CoreV1Api(api_client)
    discovery = kubernetes.client.DiscoveryV1Api(api_client)
    objects: list[Any] = []
    sources = (
        (core.list_service_for_all_namespaces, "v1", "Service"),
        (discovery.list_endpoint_slice_for_all_namespaces, "discovery.k8s.io/v1", "EndpointSlice"),
        (core.list_node, "v1", "Node"),
    )
    try:
        for list_fn, api_version, kind in sources:
            body = json.loads(list_fn(_preload_content=False, _request_timeout=(5, 60)).data)
            objects.extend(
                {"apiVersion": api_version, "kind": kind, **item} for item in body.get("items", [])
            )
    except kubernetes.client.ApiException as e:
        raise UsageError(f"the Kubernetes API refused the list: {e.status} {e.reason}") from e
    except OSError as e:
        raise UsageError(f"cannot reach the Kubernetes API: {e}") from e
    return objects


def _desired_from_files(args: argparse.Namespace) -> Desired:
    try:
        objects = load_paths(args.filename) if args.filename else _list_cluster(args.kubeconfig)
    except (ManifestError, ConfigError) as e:
        raise UsageError(str(e)) from e
    state, problems = parse_objects(objects)
    node = _node_name(args.node, objects)
    desired = desired_farms(state, node, args.proxy_name)
    _print_problems([*problems, *desired.problems], sys.stderr)
    return desired


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _table(farms: Sequence[Farm]) -> str:
    rows = [("FARM", "PROTO", "FRONTENDS", "BACKENDS", "MODE", "SCHEDULER", "PERSISTENCE")]
    for f in farms:
        fronts = ",".join(_hostport(a.ip, a.port) for a in f.addresses)
        backs = ",".join(_hostport(b.ip, b.port) for b in f.backends) or "<none>"
        rows.append(
            (
                f.name,
                f.protocol.value,
                fronts,
                backs,
                f.mode.value,
                f.scheduler.value,
                " ".join(f.persistence) or "none",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return (
        "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        )
        + "\n"
    )


def cmd_render(args: argparse.Namespace) -> int:
    desired = _desired_from_files(args)
    farms = [assign_marks(f, None) for f in desired.farms]
    if args.output == "table":
        sys.stdout.write(_table(farms))
    elif args.output == "yaml":
        sys.stdout.write(yaml.safe_dump(farms_document(farms), sort_keys=False))
    else:
        sys.stdout.write(json.dumps(farms_document(farms), indent=2) + "\n")
    return EXIT_OK


def _actual_farms(args: argparse.Namespace) -> list[Farm]:
    if args.state:
        try:
            doc = json.loads(Path(args.state).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read the saved nftlb state {args.state}: {e}") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("farms"), list):
            raise UsageError(f"{args.state}: not a GET /farms answer (no 'farms' list)")
        return list(parse_farms(doc).owned)
    if args.nftlb:
        from reconciler.nftlb.client import NftlbClient, NftlbError

        if not args.nftlb_key_file:
            raise UsageError("--nftlb needs --nftlb-key-file")
        client = NftlbClient(args.nftlb, read_key(args.nftlb_key_file))
        try:
            return list(client.get_farms().owned)
        except NftlbError as e:
            raise UsageError(str(e)) from e
    return []


def cmd_diff(args: argparse.Namespace) -> int:
    desired = _desired_from_files(args)
    plan = diff(desired.farms, _actual_farms(args))
    if args.output == "json":
        sys.stdout.write(json.dumps(plan.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write(render_text(plan))
    return EXIT_CHANGES if plan else EXIT_OK


def _wait_for_key(path: str, timeout: float = 60.0) -> str:
    """The key file is written by the nftlb container when it starts; give it a minute."""
    import time

    deadline = time.monotonic() + timeout
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    return read_key(path)


def _health_check_host(text: str) -> str | None:
    """None for 'off', "" for every address, else a canonical IP."""
    import ipaddress

    if text == "off":
        return None
    if text == "":
        return ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError as e:
        raise ConfigError(
            f"--health-check-node-port-address {text!r} is not an IP address or 'off'"
        ) from e


def cmd_run(args: argparse.Namespace) -> int:
    from reconciler.agent.controller import Settings
    from reconciler.agent.daemon import Daemon, DaemonOptions
    from reconciler.agent.logs import configure, redact

    configure(args.log_format, args.log_level)
    try:
        if not args.node_name:
            raise ConfigError("the node name is not set: pass --node-name or set NODE_NAME")
        rules = node_rules_config(
            detect_local_mode=args.detect_local_mode,
            cluster_cidr=args.cluster_cidr,
            pod_bridge_interface=args.pod_bridge_interface,
            pod_interface_name_prefix=args.pod_interface_name_prefix,
            service_cidr=args.service_cidr,
            masquerade_all=flag_bool(args.masquerade_all, "--masquerade-all"),
        )
        key = _wait_for_key(args.nftlb_key_file, duration(args.nftlb_key_wait))
        redact(key)
        settings = Settings(
            node_name=args.node_name,
            proxy_name=args.proxy_name,
            resync_period=duration(args.resync_period),
            min_sync_interval=duration(args.min_sync_interval),
            node_rules=rules,
        )
        api_client = kube_api_client(args.kubeconfig)
        watch_timeout = duration(args.watch_timeout)
        if args.healthz_bind_address:
            parse_address(args.healthz_bind_address)
        health_check_host = _health_check_host(args.health_check_node_port_address)
        stall = duration(args.watch_stall_timeout) if args.watch_stall_timeout else None
    except AddressError as e:
        raise UsageError(f"--healthz-bind-address: {e}") from e
    except ConfigError as e:
        raise UsageError(str(e)) from e
    options = DaemonOptions(
        settings,
        args.nftlb_url,
        key,
        args.metrics_address,
        watch_timeout=(max(1, int(watch_timeout * 0.8)), max(1, int(watch_timeout))),
        inactivity_timeout=stall,
        healthz_address=args.healthz_bind_address,
        health_check_host=health_check_host,
        conntrack_cleanup=args.conntrack_cleanup == "true",
    )
    try:
        daemon = Daemon(options, api_client)
    except ConfigError as e:
        raise UsageError(str(e)) from e
    if args.once:
        daemon.start(loop=False)
        try:
            if not daemon.wait_for_sync(60):
                raise UsageError("the caches did not list within 60 s")
            result = daemon.controller.sync_full()
        finally:
            daemon.stop()
        return EXIT_OK if result.ok else EXIT_CHANGES
    daemon.start()
    try:
        daemon.run_until_signal()
    finally:
        daemon.stop()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from reconciler.cli.demo import main as demo_main

    return demo_main()


def _add_run(sub: Any) -> None:
    r = sub.add_parser("run", help="the node agent: keep nftlb equal to the cluster's Services")
    a = r.add_argument
    a(
        "--kubeconfig",
        default=env("KUBECONFIG", "") or None,
        help="kubeconfig file (env KUBECONFIG; default: in-cluster)",
    )
    a(
        "--nftlb-url",
        default=env("KUBE_NFTLB_NFTLB_URL", "http://127.0.0.1:5555"),
        help="env KUBE_NFTLB_NFTLB_URL",
    )
    a(
        "--nftlb-key-file",
        default=env("KUBE_NFTLB_NFTLB_KEY_FILE", "/run/kube-nftlb/key"),
        help="env KUBE_NFTLB_NFTLB_KEY_FILE",
    )
    a(
        "--nftlb-key-wait",
        default=env("KUBE_NFTLB_NFTLB_KEY_WAIT", "60s"),
        help="how long to wait for the key file to appear (env KUBE_NFTLB_NFTLB_KEY_WAIT)",
    )
    a("--node-name", default=env("NODE_NAME", ""), help="this node's name (env NODE_NAME)")
    a(
        "--resync-period",
        default=env("KUBE_NFTLB_RESYNC_PERIOD", "30s"),
        help="full resync period (env KUBE_NFTLB_RESYNC_PERIOD)",
    )
    a(
        "--min-sync-interval",
        default=env("KUBE_NFTLB_MIN_SYNC_INTERVAL", "50ms"),
        help="least time between syncs once a burst of 5 is used "
        "(env KUBE_NFTLB_MIN_SYNC_INTERVAL)",
    )
    a(
        "--metrics-address",
        default=env("KUBE_NFTLB_METRICS_ADDRESS", "127.0.0.1:9195"),
        help="host:port for /metrics, /healthz, /readyz "
        "(env KUBE_NFTLB_METRICS_ADDRESS; empty: off)",
    )
    a(
        "--healthz-bind-address",
        default=env("KUBE_NFTLB_HEALTHZ_BIND_ADDRESS", "0.0.0.0:10256"),
        help="host:port of the kube-proxy compatible /healthz and /livez that load balancers "
        "probe (env KUBE_NFTLB_HEALTHZ_BIND_ADDRESS; empty: off)",
    )
    a(
        "--health-check-node-port-address",
        default=env("KUBE_NFTLB_HEALTH_CHECK_NODE_PORT_ADDRESS", "0.0.0.0"),
        help="IP the healthCheckNodePorts of LoadBalancer Services with externalTrafficPolicy "
        "Local listen on (env KUBE_NFTLB_HEALTH_CHECK_NODE_PORT_ADDRESS; 'off': none)",
    )
    a(
        "--conntrack-cleanup",
        choices=("true", "false"),
        default=env("KUBE_NFTLB_CONNTRACK_CLEANUP", "true"),
        help="delete stale UDP conntrack entries after syncs, as kube-proxy does; needs "
        "CAP_NET_ADMIN (env KUBE_NFTLB_CONNTRACK_CLEANUP)",
    )
    a(
        "--log-format",
        choices=("json", "console"),
        default=env("KUBE_NFTLB_LOG_FORMAT", "json"),
        help="env KUBE_NFTLB_LOG_FORMAT",
    )
    a(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=env("KUBE_NFTLB_LOG_LEVEL", "info"),
        help="env KUBE_NFTLB_LOG_LEVEL",
    )
    a(
        "--proxy-name",
        default=env("KUBE_NFTLB_PROXY_NAME", ""),
        help="serve Services labelled service.kubernetes.io/service-proxy-name=NAME "
        "(env KUBE_NFTLB_PROXY_NAME)",
    )
    a(
        "--watch-timeout",
        default=env("KUBE_NFTLB_WATCH_TIMEOUT", "5m"),
        help="server-side watch timeout; each watch picks 80-100%% of it "
        "(env KUBE_NFTLB_WATCH_TIMEOUT)",
    )
    a(
        "--watch-stall-timeout",
        default=env("KUBE_NFTLB_WATCH_STALL_TIMEOUT", ""),
        help="restart a watch that sends nothing for this long (default: watch timeout + 30s; "
        "env KUBE_NFTLB_WATCH_STALL_TIMEOUT)",
    )
    a(
        "--detect-local-mode",
        default=env("KUBE_NFTLB_DETECT_LOCAL_MODE", "ClusterCIDR"),
        help="how traffic from pods is recognised, as kube-proxy's flag: ClusterCIDR "
        "(--cluster-cidr), NodeCIDR (the Node's spec.podCIDRs), BridgeInterface "
        "(--pod-bridge-interface), InterfaceNamePrefix (--pod-interface-name-prefix) "
        "(env KUBE_NFTLB_DETECT_LOCAL_MODE; default ClusterCIDR)",
    )
    a(
        "--cluster-cidr",
        default=env("KUBE_NFTLB_CLUSTER_CIDR", ""),
        help="the cluster's pod CIDR, one per family, comma-separated (e.g. "
        "10.244.0.0/16,fd00:244::/48); needed by ClusterCIDR mode (env KUBE_NFTLB_CLUSTER_CIDR)",
    )
    a(
        "--pod-bridge-interface",
        default=env("KUBE_NFTLB_POD_BRIDGE_INTERFACE", ""),
        help="the pods' bridge for BridgeInterface mode (env KUBE_NFTLB_POD_BRIDGE_INTERFACE)",
    )
    a(
        "--pod-interface-name-prefix",
        default=env("KUBE_NFTLB_POD_INTERFACE_NAME_PREFIX", ""),
        help="the pods' interface name prefix for InterfaceNamePrefix mode "
        "(env KUBE_NFTLB_POD_INTERFACE_NAME_PREFIX)",
    )
    a(
        "--service-cidr",
        default=env("KUBE_NFTLB_SERVICE_CIDR", ""),
        help="the service CIDR(s), comma-separated: new connections to an address in it that no "
        "Service holds are dropped, as kube-proxy does (env KUBE_NFTLB_SERVICE_CIDR; "
        "default: none, no such drop)",
    )
    a(
        "--masquerade-all",
        nargs="?",
        const="true",
        default=env("KUBE_NFTLB_MASQUERADE_ALL", "false"),
        help="masquerade all traffic to cluster IPs, pods' too (env KUBE_NFTLB_MASQUERADE_ALL)",
    )
    a("--once", action="store_true", help="one full sync, then exit (0 ok, 1 failed)")
    r.set_defaults(func=cmd_run)


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        metavar="PATH",
        help="manifest file or folder (YAML or JSON, multi-document, List kinds); repeatable. "
        "Without it, the live cluster is read (--kubeconfig, or in-cluster)",
    )
    p.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG") or None,
        help="kubeconfig for the live cluster",
    )
    p.add_argument(
        "--node", help="this node's name (default: $NODE_NAME, or the only Node in the input)"
    )
    p.add_argument(
        "--proxy-name",
        default=os.environ.get("KUBE_NFTLB_PROXY_NAME", ""),
        help="serve Services whose service.kubernetes.io/service-proxy-name label has this value "
        "(default: only Services without the label)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kube-nftlb", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kube-nftlb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser(
        "render", help="print the nftlb farms that Services and EndpointSlices make"
    )
    _add_source(render)
    render.add_argument("-o", "--output", choices=("json", "yaml", "table"), default="json")
    render.set_defaults(func=cmd_render)

    d = sub.add_parser(
        "diff", help="dry run: the plan that would make nftlb match (exit 1 on changes)"
    )
    _add_source(d)
    target = d.add_mutually_exclusive_group()
    target.add_argument("--nftlb", metavar="URL", help="a live nftlb, e.g. http://127.0.0.1:5555")
    target.add_argument("--state", metavar="FILE", help="a saved GET /farms answer")
    d.add_argument("--nftlb-key-file", metavar="FILE", help="file holding the nftlb key")
    d.add_argument("-o", "--output", choices=("text", "json"), default="text")
    d.set_defaults(func=cmd_diff)
    _add_run(sub)
    demo = sub.add_parser(
        "demo", help="the whole loop on the built-in example cluster (root; a few seconds)"
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as e:
        print(f"kube-nftlb: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return code
