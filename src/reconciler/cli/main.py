"""The `kube-nftlb` command line: `render`, `diff`, `explain`, `run` (the DaemonSet's loop).

Exit codes follow `diff` and `kubectl diff`: 0 nothing to do, 1 changes (diff, explain), 2 errors.
Every error is one line on stderr that names the file, document, field or flag; never a
traceback (a traceback's exit 1 would tell a script "changes").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import yaml
from attrs import evolve, frozen

from reconciler import __version__
from reconciler.agent.config import (
    CLUSTER_SETTINGS,
    NFTLB_SETTINGS,
    NFTLB_URL,
    RUN_SETTINGS,
    ConfigError,
    Setting,
    kube_api_client,
    node_rules_config,
    read_key,
)
from reconciler.cli.manifests import ManifestError, load_documents, unread_kinds
from reconciler.core.desired import Desired, desired_farms
from reconciler.core.diff import diff_marked, marked_farms
from reconciler.core.farms import Farm, assign_marks
from reconciler.core.kube import ClusterState, parse_objects
from reconciler.core.nodeports import NodePortAddresses
from reconciler.core.ownership import Conflict, foreign_conflicts
from reconciler.core.plan import Plan, render_text
from reconciler.core.problems import Problem
from reconciler.core.wire import ReadBack, farms_document, parse_farms

EXIT_OK, EXIT_CHANGES, EXIT_ERROR = 0, 1, 2
PROG = "kube-nftlb"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit 2."""


def warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


# -- the parser --------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) and no abbreviated flags: an abbreviation that
    works today is ambiguous once another flag shares its start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Deprecated(argparse.Action):
    """An old spelling of a flag: still taken, hidden from help, with a warning."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kw: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(
        self, parser: Any, namespace: Any, values: Any, option_string: str | None = None
    ) -> None:
        warn(f"{option_string} is deprecated; use {self.new}")
        setattr(namespace, self.dest, values)


#: The settings each subcommand was built with, by subcommand (for resolve and the tests).
SETTINGS_OF: dict[str, tuple[Setting, ...]] = {}
#: Options that are not settings (no environment variable): what to do, not how to run.
COMMAND_OPTIONS = ("--help", "--version", "--filename", "--output", "--state", "--once")


def _add_settings(p: argparse.ArgumentParser, command: str, settings: Sequence[Setting]) -> None:
    SETTINGS_OF[command] = tuple(settings)
    for s in settings:
        extra: dict[str, Any] = {"nargs": "?", "const": s.const} if s.const is not None else {}
        choices = getattr(s.parse, "choices", None)
        metavar = s.metavar or ("{" + ",".join(choices) + "}" if choices else None)
        p.add_argument(
            s.flag,
            dest=s.dest,
            default=None,
            metavar=metavar,
            help=s.help_text().replace("%", "%%"),
            **extra,
        )
        for old in s.deprecated:
            p.add_argument(
                old,
                dest=s.dest,
                default=None,
                action=_Deprecated,
                new=s.flag,
                help=argparse.SUPPRESS,
                **extra,
            )


def _version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")


@frozen
class Resolved:
    values: Mapping[str, Any]
    sources: Mapping[str, str]

    def given(self, s: Setting) -> bool:
        return self.sources.get(s.dest, "default") != "default"


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Resolved:
    """Every setting of the command from its flag, variable or default, parsed (in place)."""
    env = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    values: dict[str, Any] = {}
    for s in SETTINGS_OF.get(args.command, ()):
        value, source = s.resolve(getattr(args, s.dest), env)
        setattr(args, s.dest, value)
        values[s.dest], sources[s.dest] = value, source
    return Resolved(values, sources)


# -- reading the cluster -----------------------------------------------------------------------


def _print_problems(problems: Sequence[Problem], out: TextIO) -> None:
    for p in problems:
        print(f"problem: {p.ref}: {p.reason}: {p.message}", file=out)


def _list_cluster(kubeconfig: str) -> list[Any]:
    """One list of Services, EndpointSlices and Nodes from the live cluster, as API JSON."""
    import kubernetes
    import urllib3

    api_client = kube_api_client(kubeconfig or None)
    host = api_client.configuration.host
    core = kubernetes.client.CoreV1Api(api_client)
    discovery = kubernetes.client.DiscoveryV1Api(api_client)
    objects: list[Any] = []
    sources = (
        (core.list_service_for_all_namespaces, "v1", "Service", "services"),
        (
            discovery.list_endpoint_slice_for_all_namespaces,
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "endpointslices",
        ),
        (core.list_node, "v1", "Node", "nodes"),
    )
    for list_fn, api_version, kind, resource in sources:
        try:
            resp = list_fn(_preload_content=False, _request_timeout=(5, 60))
            body = json.loads(resp.data)
        except kubernetes.client.ApiException as e:
            hint = " (check the RBAC rules of your user)" if e.status in (401, 403) else ""
            raise UsageError(
                f"the Kubernetes API at {host} refused to list {resource}: "
                f"{e.status} {e.reason}{hint}"
            ) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise UsageError(f"cannot reach the Kubernetes API at {host}: {reason}") from e
        except ValueError as e:
            raise UsageError(f"the Kubernetes API at {host} sent no JSON for {resource}") from e
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise UsageError(f"the Kubernetes API at {host} sent no list of {resource}")
        objects.extend(
            {"apiVersion": api_version, "kind": kind, **item}
            for item in items
            if isinstance(item, dict)
        )
    return objects


def _load_files(paths: Sequence[str]) -> list[Any]:
    docs = load_documents(paths)
    if not docs:
        raise UsageError(f"no objects passed: {', '.join(paths)} holds no manifest")
    typos, others = unread_kinds(docs)
    for line in typos:
        warn(line)
    if others:
        kinds = ", ".join(f"{k} ({n})" for k, n in sorted(others.items()))
        print(
            f"{PROG}: note: not read (only Service, EndpointSlice, Node are): {kinds}",
            file=sys.stderr,
        )
    return [d.obj for d in docs]


@frozen
class Source:
    """The cluster as one command sees it: the parsed state and the node it is computed for."""

    state: ClusterState
    node_name: str
    proxy_name: str
    problems: tuple[Problem, ...]
    nodeports: NodePortAddresses


def _node_name(given: str, state: ClusterState) -> str:
    """The node: --node-name (or NODE_NAME), else the only Node in the input; a name that
    matches no Node, or several Nodes and no name, is said on stderr."""
    if given:
        if given not in state.nodes:
            warn(
                f"no Node named {given!r} in the input: its node-port frontends are not made "
                "(node-local endpoints are still chosen by that name)"
            )
        return given
    if len(state.nodes) == 1:
        return next(iter(state.nodes))
    if state.nodes:
        warn(
            f"the input holds {len(state.nodes)} Nodes and no --node-name was given: "
            "no node-port frontends and no node-local endpoints"
        )
    return ""


def load_source(args: argparse.Namespace) -> Source:
    try:
        objects = _load_files(args.filename) if args.filename else _list_cluster(args.kubeconfig)
    except (ManifestError, ConfigError) as e:
        raise UsageError(str(e)) from e
    state, problems = parse_objects(objects)
    node = _node_name(args.node_name, state)
    return Source(state, node, args.proxy_name, tuple(problems), args.nodeport_addresses)


def _desired(args: argparse.Namespace) -> Desired:
    source = load_source(args)
    desired = desired_farms(source.state, source.node_name, source.proxy_name, source.nodeports)
    _print_problems([*source.problems, *desired.problems], sys.stderr)
    return desired


# -- render ------------------------------------------------------------------------------------


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


def cmd_render(args: argparse.Namespace, settings: Resolved) -> int:
    desired = _desired(args)
    farms = [assign_marks(f, None) for f in desired.farms]
    if args.output == "table":
        sys.stdout.write(_table(farms))
    elif args.output == "yaml":
        sys.stdout.write(yaml.safe_dump(farms_document(farms), sort_keys=False))
    else:
        sys.stdout.write(json.dumps(farms_document(farms), indent=2) + "\n")
    return EXIT_OK


# -- diff --------------------------------------------------------------------------------------


def _read_state(path: str) -> ReadBack:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"cannot read the saved nftlb state {path}: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("farms"), list):
        raise UsageError(f"{path}: not a GET /farms answer (no 'farms' list)")
    try:
        return parse_farms(doc)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise UsageError(f"{path}: not a GET /farms answer: {e}") from e


def read_nftlb(args: argparse.Namespace, settings: Resolved) -> ReadBack | None:
    """What nftlb holds: a saved answer (--state), a live nftlb (--nftlb-url, flag or env), or
    None when neither is given (an empty nftlb, said on stderr)."""
    url_given = settings.given(NFTLB_URL)
    if getattr(args, "state", None):
        if settings.sources.get("nftlb_url") == "flag":
            raise UsageError("--state and --nftlb-url are two answers to one question: pass one")
        if settings.sources.get("nftlb_key_file") == "flag":
            raise UsageError("--nftlb-key-file is only for --nftlb-url, not --state")
        return _read_state(args.state)
    if not url_given:
        if settings.sources.get("nftlb_key_file", "default") != "default":
            raise UsageError(
                "--nftlb-key-file (or KUBE_NFTLB_NFTLB_KEY_FILE) is set but --nftlb-url is not: "
                "pass --nftlb-url URL as well"
            )
        return None
    from reconciler.nftlb.client import NftlbClient, NftlbError

    try:
        client = NftlbClient(args.nftlb_url, read_key(args.nftlb_key_file))
        return client.get_farms()
    except ConfigError as e:
        raise UsageError(f"--nftlb-key-file: {e}") from e
    except NftlbError as e:
        raise UsageError(f"nftlb at {args.nftlb_url}: {e}") from e


def plan_for(desired: Desired, read: ReadBack) -> Plan:
    """Exactly the plan `run`'s full sync makes from the same desired farms and read-back
    (the controller's `sync_full`): broken owned farms are replaced, not ignored, and farms a
    foreign farm holds (`conflicts_for`) are not sent."""
    withheld = {c.farm for c in conflicts_for(desired, read)}
    marked = marked_farms((f for f in desired.farms if f.name not in withheld), read.owned)
    return diff_marked(marked, read.owned, read.unparsable)


def conflicts_for(desired: Desired, read: ReadBack) -> list[Conflict]:
    """Desired farms whose name or frontend a farm kube-nftlb did not make holds
    (`ownership.py`): not sent, and told to the Service as ForeignFarm problems."""
    return foreign_conflicts(desired.farms, read.foreign_farms)


def cmd_diff(args: argparse.Namespace, settings: Resolved) -> int:
    desired = _desired(args)
    read = read_nftlb(args, settings)
    if read is None:
        warn("neither --nftlb-url nor --state given: comparing with an empty nftlb")
        read = ReadBack(())
    plan = plan_for(desired, read)
    conflicts = conflicts_for(desired, read)
    if args.output == "json":
        doc = plan.to_json()
        doc["conflicts"] = [c.to_json() for c in conflicts]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        if plan or not conflicts:
            sys.stdout.write(render_text(plan))
        else:
            sys.stdout.write(
                f"No changes to send, but {len(conflicts)} desired farm(s) are held by farms "
                "kube-nftlb did not make, and are not programmed:\n"
            )
        for c in conflicts:
            sys.stdout.write(f"! conflict {c.farm}: {c.message()}\n")
    return EXIT_CHANGES if plan or conflicts else EXIT_OK


# -- run ---------------------------------------------------------------------------------------


def _wait_for_key(path: str, timeout: float = 60.0) -> str:
    """The key file is written by the nftlb container when it starts; give it a minute."""
    import time

    deadline = time.monotonic() + timeout
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    return read_key(path)


def cmd_run(args: argparse.Namespace, settings: Resolved) -> int:
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
            masquerade_all=args.masquerade_all,
        )
        key = _wait_for_key(args.nftlb_key_file, args.nftlb_key_wait)
        redact(key)
        run_settings = Settings(
            node_name=args.node_name,
            proxy_name=args.proxy_name,
            nodeport_addresses=args.nodeport_addresses,
            resync_period=args.resync_period,
            min_sync_interval=args.min_sync_interval,
            node_rules=rules,
        )
        api_client = kube_api_client(args.kubeconfig or None)
    except ConfigError as e:
        raise UsageError(str(e)) from e
    watch_timeout = args.watch_timeout
    options = DaemonOptions(
        run_settings,
        args.nftlb_url,
        key,
        args.metrics_address,
        watch_timeout=(max(1, int(watch_timeout * 0.8)), max(1, int(watch_timeout))),
        inactivity_timeout=args.watch_stall_timeout,
        healthz_address=args.healthz_bind_address,
        health_check_host=args.health_check_node_port_address,
        conntrack_cleanup=args.conntrack_cleanup,
        # nftlb's failure lines, which the nftlb container's start script keeps beside the key.
        nftlb_events_file=str(Path(args.nftlb_key_file).parent / "nftlb-events.log"),
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
    try:
        daemon.start()
    except OSError as e:
        daemon.stop()
        raise UsageError(f"cannot start: {e}") from e
    try:
        daemon.run_until_signal()
    finally:
        daemon.stop()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Resolved) -> int:
    from reconciler.cli.demo import main as demo_main

    return demo_main()


def cmd_explain(args: argparse.Namespace, settings: Resolved) -> int:
    from reconciler.cli.explain import explain

    return explain(args, settings)


# -- the commands ------------------------------------------------------------------------------


def _add_state_and_output(p: argparse.ArgumentParser) -> None:
    """`diff`'s and `explain`'s: nftlb's answer from a file, and text or JSON out."""
    p.add_argument(
        "--state", metavar="FILE", help="a saved GET /farms answer, instead of --nftlb-url"
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="output format (default: text)",
    )


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        metavar="PATH",
        help="manifest file or folder (YAML or JSON, multi-document, List kinds; folders "
        "recursively, without hidden entries and virtual environments; '-' reads standard "
        "input); repeatable (default: the live cluster, see --kubeconfig)",
    )


def _diff_nftlb_settings() -> tuple[Setting, ...]:
    """diff and explain read nftlb only when asked: no URL means an empty nftlb."""
    return (
        evolve(NFTLB_URL, default="", empty="none: compare with an empty nftlb"),
        *NFTLB_SETTINGS[1:],
    )


def build_parser() -> argparse.ArgumentParser:
    SETTINGS_OF.clear()
    parser = Parser(prog=PROG, description=__doc__)
    _version(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    render = sub.add_parser(
        "render", help="print the nftlb farms that Services and EndpointSlices make"
    )
    _add_source(render)
    _add_settings(render, "render", CLUSTER_SETTINGS)
    render.add_argument(
        "-o",
        "--output",
        choices=("json", "yaml", "table"),
        default="json",
        help="output format (default: json, the exact document sent to nftlb)",
    )
    render.set_defaults(func=cmd_render)

    d = sub.add_parser(
        "diff", help="dry run: the plan that would make nftlb match (exit 1 on changes)"
    )
    _add_source(d)
    _add_settings(d, "diff", (*CLUSTER_SETTINGS, *_diff_nftlb_settings()))
    _add_state_and_output(d)
    d.set_defaults(func=cmd_diff)

    e = sub.add_parser(
        "explain",
        help="why a Service works or not: its farms, backends, endpoints left out, problems, "
        "and with --nftlb-url what nftlb and the kernel hold (exit 1 when they differ)",
    )
    e.add_argument("service", metavar="NAMESPACE/NAME", help="the Service")
    _add_source(e)
    _add_settings(e, "explain", (*CLUSTER_SETTINGS, *_diff_nftlb_settings()))
    _add_state_and_output(e)
    e.set_defaults(func=cmd_explain)

    r = sub.add_parser("run", help="the node agent: keep nftlb equal to the cluster's Services")
    _add_settings(r, "run", (*CLUSTER_SETTINGS, *NFTLB_SETTINGS, *RUN_SETTINGS))
    r.add_argument("--once", action="store_true", help="one full sync, then exit (0 ok, 1 failed)")
    r.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo", help="the whole loop on the built-in example cluster (root; a few seconds)"
    )
    demo.set_defaults(func=cmd_demo)
    for p in (render, d, e, r, demo):
        _version(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = resolve(args)
        code: int = args.func(args, settings)
    except (UsageError, ConfigError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as e:  # never a traceback: its exit 1 would read as "changes"
        print(f"{PROG}: error: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR
    return code
