"""Settings from flags and environment variables, and the Kubernetes client's configuration.

Every setting is one `Setting`: one flag spelling, one environment variable, one default and one
parser, used by every command that takes it (`run`, `render`, `diff`, `explain`). A flag wins
over its variable; both are checked by the same parser, so a bad value is refused the same way
wherever it comes from, and the message names where it came from. Durations are Go's
(`time.ParseDuration`), as kube-proxy's flags take them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes
from attrs import frozen

from reconciler.core.node_rules import (
    ConfigProblem,
    DetectLocalMode,
    NodeRulesConfig,
    check_config,
    parse_cidrs,
)
from reconciler.core.nodeports import parse_nodeport_addresses
from reconciler.core.selection import proxy_name_error


class ConfigError(Exception):
    """A setting is missing or wrong; the message says which and what to do."""


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


# -- value parsers: text in, value out, ValueError with "is not ..." / "must be ..." ----------

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_GO_UNITS["h"] = 3600.0
_GO_PART = r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)"
_GO_DURATION = re.compile(rf"([-+]?)((?:{_GO_PART})+)")


def go_duration(text: str) -> float:
    """Seconds from a Go duration ("30s", "1m30s", "500ms", "1.5h", "0"), as kube-proxy's
    flags parse them; ValueError otherwise (a bare number other than 0 has no unit)."""
    t = text.strip()
    if t in ("0", "+0", "-0"):
        return 0.0
    m = _GO_DURATION.fullmatch(t)
    if m is None:
        hint = "missing unit" if re.fullmatch(r"[-+]?[\d.]+", t) else "not a duration"
        raise ValueError(f"is {hint} (Go durations: 30s, 1m30s, 500ms, 2h)")
    seconds = sum(float(n) * _GO_UNITS[u] for n, u in re.findall(_GO_PART, m.group(2)))
    return -seconds if m.group(1) == "-" else seconds


def positive_duration(text: str) -> float:
    seconds = go_duration(text)
    if seconds <= 0:
        raise ValueError("must be a positive duration (e.g. 30s, 1m30s)")
    return seconds


def nonnegative_duration(text: str) -> float:
    seconds = go_duration(text)
    if seconds < 0:
        raise ValueError("must not be negative (e.g. 0, 500ms, 1m)")
    return seconds


def duration(text: str) -> float:
    """`go_duration`, as a ConfigError (for callers outside the settings)."""
    try:
        return go_duration(text)
    except ValueError as e:
        raise ConfigError(f"{text!r} {e}") from e


def boolean(text: str) -> bool:
    """true/false, 1/0, yes/no, on/off (as environment variables carry them)."""
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("is not true or false")


def flag_bool(text: str, flag: str) -> bool:
    try:
        return boolean(text)
    except ValueError as e:
        raise ConfigError(f"{flag}: {text!r} {e}") from e


def one_of(*values: str) -> Callable[[str], str]:
    """A choice, case-insensitive, returned in its canonical spelling."""
    canonical = {v.lower(): v for v in values}

    def parse(text: str) -> str:
        found = canonical.get(text.strip().lower())
        if found is None:
            raise ValueError(f"is not one of {', '.join(values)}")
        return found

    parse.choices = values  # type: ignore[attr-defined]
    return parse


def text(value: str) -> str:
    return value.strip()


def listen_address(value: str) -> tuple[str, int] | None:
    """("ip", port) from "ip:port", "[ipv6]:port" or ":port" (every address); None for ""
    (off). The host must be an IP: a name would only fail later, when the server starts."""
    v = value.strip()
    if not v:
        return None
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("is not IP:PORT (e.g. 127.0.0.1:9195, [::1]:9195, :9195)")
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host[1:-1] if bracketed else host
    if bare:
        try:
            ip = ipaddress.ip_address(bare)
        except ValueError:
            raise ValueError(
                "is not IP:PORT: the host must be an IP address (IPv6 in brackets: [::1]:9195)"
            ) from None
        if ip.version == 6 and not bracketed:
            raise ValueError("is not IP:PORT: write an IPv6 address in brackets ([::1]:9195)")
        bare = str(ip)
    return bare, int(port)


def listen_text(value: str) -> str:
    """A checked listen address, kept as text (what the servers and logs take)."""
    parsed = listen_address(value)
    if parsed is None:
        return ""
    host, port = parsed
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def http_url(value: str) -> str:
    v = value.strip()
    if not v:
        return ""
    parts = urlsplit(v)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ValueError("is not an http:// URL (e.g. http://127.0.0.1:5555)")
    return v.rstrip("/")


def ip_or_off(value: str) -> str | None:
    """None for 'off', "" for every address, else a canonical IP."""
    v = value.strip()
    if v == "off":
        return None
    if v == "":
        return ""
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ValueError("is not an IP address or 'off'") from None


def cidrs(flag: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            parse_cidrs(value, flag)
        except ConfigProblem as e:
            raise ValueError(str(e).removeprefix(f"{flag}: ")) from e
        return value.strip()

    return parse


def optional_positive_duration(value: str) -> float | None:
    return None if not value.strip() else positive_duration(value)


def label_value(value: str) -> str:
    """--proxy-name: it becomes a label selector term, so it must be a label value."""
    if proxy_name_error(value) is not None:
        raise ValueError(
            "is not a label value: at most 63 characters of [A-Za-z0-9-_.], "
            "alphanumeric at both ends"
        )
    return value


# -- the settings ------------------------------------------------------------------------------


@frozen
class Setting:
    """One setting: its only flag spelling, its environment variable, its default and parser.

    `deprecated` are old flag spellings still taken (hidden from help, with a warning).
    `const` makes the value optional on the command line (`--masquerade-all` alone).
    """

    flag: str
    env: str
    default: str
    help: str
    parse: Callable[[str], Any] = text
    metavar: str | None = None
    empty: str = "none"
    deprecated: tuple[str, ...] = ()
    const: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def help_text(self) -> str:
        choices = getattr(self.parse, "choices", None)
        default = self.default or self.empty
        parts = [self.help]
        if choices:
            parts.append(f"one of {', '.join(choices)}")
        return f"{'; '.join(parts)} (default: {default}; env {self.env})"

    def resolve(self, given: str | None, environ: Mapping[str, str]) -> tuple[Any, str]:
        """The value from the flag, else the variable, else the default, and which it was
        ("flag", "env" or "default"). A bad value is a ConfigError naming its source."""
        if given is not None:
            raw, where, source = given, self.flag, "flag"
        elif self.env in environ:
            raw, where, source = environ[self.env], f"{self.env} (for {self.flag})", "env"
        else:
            raw, where, source = self.default, f"{self.flag} (default)", "default"
        try:
            return self.parse(raw), source
        except ValueError as e:
            raise ConfigError(f"{where}: {raw!r} {e}") from e


KUBECONFIG = Setting(
    "--kubeconfig",
    "KUBECONFIG",
    "",
    "kubeconfig file of the cluster to read",
    metavar="FILE",
    empty="in-cluster, else ~/.kube/config",
)
NODE_NAME = Setting(
    "--node-name",
    "NODE_NAME",
    "",
    "this node's name: its node ports and node-local endpoints",
    metavar="NAME",
    empty="none (render, diff, explain: the only Node in the input)",
    deprecated=("--node",),
)
PROXY_NAME = Setting(
    "--proxy-name",
    "KUBE_NFTLB_PROXY_NAME",
    "",
    "serve Services labelled service.kubernetes.io/service-proxy-name=NAME",
    parse=label_value,
    metavar="NAME",
    empty="only Services without the label",
)
NODEPORT_ADDRESSES = Setting(
    "--nodeport-addresses",
    "KUBE_NFTLB_NODEPORT_ADDRESSES",
    "primary",
    "node addresses that open node ports, as kube-proxy's flag: primary (the node's primary IP "
    "of each family, kube-proxy's nftables default) or comma-separated CIDRs (the node's "
    "addresses inside them; a family without a CIDR: all its addresses)",
    parse=parse_nodeport_addresses,
    metavar="primary|CIDRs",
)
NFTLB_URL = Setting(
    "--nftlb-url",
    "KUBE_NFTLB_NFTLB_URL",
    "http://127.0.0.1:5555",
    "nftlb's REST API",
    parse=http_url,
    metavar="URL",
    deprecated=("--nftlb",),
)
NFTLB_KEY_FILE = Setting(
    "--nftlb-key-file",
    "KUBE_NFTLB_NFTLB_KEY_FILE",
    "/run/kube-nftlb/key",
    "file holding nftlb's API key (one line)",
    metavar="FILE",
)

#: What every command that computes farms takes: the same farms from the same settings.
CLUSTER_SETTINGS = (KUBECONFIG, NODE_NAME, PROXY_NAME, NODEPORT_ADDRESSES)
#: How to reach nftlb; `diff` and `explain` read it only when the URL is set (flag or env).
NFTLB_SETTINGS = (NFTLB_URL, NFTLB_KEY_FILE)

RUN_SETTINGS = (
    Setting(
        "--nftlb-key-wait",
        "KUBE_NFTLB_NFTLB_KEY_WAIT",
        "60s",
        "how long to wait for the key file to appear",
        parse=nonnegative_duration,
        metavar="DURATION",
    ),
    Setting(
        "--resync-period",
        "KUBE_NFTLB_RESYNC_PERIOD",
        "30s",
        "full resync period: read nftlb back and correct any drift",
        parse=positive_duration,
        metavar="DURATION",
    ),
    Setting(
        "--min-sync-interval",
        "KUBE_NFTLB_MIN_SYNC_INTERVAL",
        "50ms",
        "least time between syncs once a burst of 5 is used",
        parse=positive_duration,
        metavar="DURATION",
    ),
    Setting(
        "--metrics-address",
        "KUBE_NFTLB_METRICS_ADDRESS",
        "127.0.0.1:9195",
        "IP:PORT for /metrics, /healthz, /readyz",
        parse=listen_text,
        metavar="IP:PORT",
        empty="off",
    ),
    Setting(
        "--healthz-bind-address",
        "KUBE_NFTLB_HEALTHZ_BIND_ADDRESS",
        "0.0.0.0:10256",
        "IP:PORT of the kube-proxy compatible /healthz and /livez that load balancers probe",
        parse=listen_text,
        metavar="IP:PORT",
        empty="off",
    ),
    Setting(
        "--health-check-node-port-address",
        "KUBE_NFTLB_HEALTH_CHECK_NODE_PORT_ADDRESS",
        "0.0.0.0",
        "IP the healthCheckNodePorts of LoadBalancer Services with externalTrafficPolicy Local "
        "listen on ('off': none)",
        parse=ip_or_off,
        metavar="IP",
        empty="every address",
    ),
    Setting(
        "--conntrack-cleanup",
        "KUBE_NFTLB_CONNTRACK_CLEANUP",
        "true",
        "delete stale UDP conntrack entries after syncs, as kube-proxy does; needs CAP_NET_ADMIN",
        parse=boolean,
        metavar="BOOL",
    ),
    Setting(
        "--log-format",
        "KUBE_NFTLB_LOG_FORMAT",
        "json",
        "log lines as JSON objects or for people",
        parse=one_of("json", "console"),
    ),
    Setting(
        "--log-level",
        "KUBE_NFTLB_LOG_LEVEL",
        "info",
        "least level logged",
        parse=one_of("debug", "info", "warning", "error"),
    ),
    Setting(
        "--watch-timeout",
        "KUBE_NFTLB_WATCH_TIMEOUT",
        "5m",
        "server-side watch timeout; each watch picks 80-100% of it",
        parse=positive_duration,
        metavar="DURATION",
    ),
    Setting(
        "--watch-stall-timeout",
        "KUBE_NFTLB_WATCH_STALL_TIMEOUT",
        "75s",
        "restart a watch that sends nothing for this long (a half-open connection); the API "
        "server sends a bookmark about once a minute, so a healthy quiet watch is not restarted",
        parse=optional_positive_duration,
        metavar="DURATION",
        empty="watch timeout + 30s",
    ),
    Setting(
        "--detect-local-mode",
        "KUBE_NFTLB_DETECT_LOCAL_MODE",
        "ClusterCIDR",
        "how traffic from pods is recognised, as kube-proxy's flag: ClusterCIDR "
        "(--cluster-cidr), NodeCIDR (the Node's spec.podCIDRs), BridgeInterface "
        "(--pod-bridge-interface), InterfaceNamePrefix (--pod-interface-name-prefix)",
        parse=one_of(*(m.value for m in DetectLocalMode)),
    ),
    Setting(
        "--cluster-cidr",
        "KUBE_NFTLB_CLUSTER_CIDR",
        "",
        "the cluster's pod CIDR, one per family, comma-separated (e.g. "
        "10.244.0.0/16,fd00:244::/48); needed by ClusterCIDR mode",
        parse=cidrs("--cluster-cidr"),
        metavar="CIDRS",
    ),
    Setting(
        "--pod-bridge-interface",
        "KUBE_NFTLB_POD_BRIDGE_INTERFACE",
        "",
        "the pods' bridge for BridgeInterface mode",
        metavar="NAME",
    ),
    Setting(
        "--pod-interface-name-prefix",
        "KUBE_NFTLB_POD_INTERFACE_NAME_PREFIX",
        "",
        "the pods' interface name prefix for InterfaceNamePrefix mode",
        metavar="PREFIX",
    ),
    Setting(
        "--service-cidr",
        "KUBE_NFTLB_SERVICE_CIDR",
        "",
        "the service CIDR(s), comma-separated: new connections to an address in it that no "
        "Service holds are dropped, as kube-proxy does",
        parse=cidrs("--service-cidr"),
        metavar="CIDRS",
        empty="none, no such drop",
    ),
    Setting(
        "--masquerade-all",
        "KUBE_NFTLB_MASQUERADE_ALL",
        "false",
        "masquerade all traffic to cluster IPs, pods' too",
        parse=boolean,
        metavar="BOOL",
        const="true",
    ),
)


def read_key(path: str) -> str:
    """The key, or a ConfigError that says what is wrong with the file.

    The key travels in nftlb's ``Key:`` HTTP header, which takes printable ASCII only: a key
    with any other byte used to pass here and fail every request deep in the sync loop.
    """
    try:
        raw = Path(path).read_bytes().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the nftlb key file {path}: {e.strerror}") from e
    if not raw:
        raise ConfigError(f"the nftlb key file {path} is empty")
    if b"\n" in raw or b"\r" in raw:
        raise ConfigError(f"the nftlb key file {path} holds more than one line")
    bad = next((i for i, byte in enumerate(raw) if not 0x20 <= byte <= 0x7E), None)
    if bad is not None:
        raise ConfigError(
            f"the nftlb key file {path} holds a byte that is not printable ASCII "
            f"({raw[bad]:#04x} at offset {bad}); the key is sent in an HTTP header, which "
            "takes printable ASCII only"
        )
    return raw.decode("ascii")


def kube_api_client(kubeconfig: str | None) -> Any:
    """An ApiClient from a kubeconfig, or the in-cluster service account when there is none."""
    cfg = kubernetes.client.Configuration()
    try:
        if kubeconfig:
            kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=cfg)
        else:
            kubernetes.config.load_kube_config(client_configuration=cfg)
    except (kubernetes.config.ConfigException, OSError, ValueError, TypeError) as e:
        raise ConfigError(
            f"no Kubernetes configuration: {e} (pass --kubeconfig, or run in a cluster)"
        ) from e
    # The Watch helper builds its own ApiClient from the default configuration.
    kubernetes.client.Configuration.set_default(cfg)
    return kubernetes.client.ApiClient(cfg)


def node_rules_config(
    *,
    detect_local_mode: str,
    cluster_cidr: str,
    pod_bridge_interface: str,
    pod_interface_name_prefix: str,
    service_cidr: str,
    masquerade_all: bool,
) -> NodeRulesConfig:
    """kube-proxy's local-traffic settings, checked: a missing or wrong value names its flag."""
    modes = {m.value.lower(): m for m in DetectLocalMode}
    mode = modes.get(detect_local_mode.strip().lower())
    if mode is None:
        raise ConfigError(
            f"--detect-local-mode: {detect_local_mode!r} is not one of "
            f"{', '.join(m.value for m in DetectLocalMode)}"
        )
    try:
        config = NodeRulesConfig(
            detect_local_mode=mode,
            cluster_cidrs=parse_cidrs(cluster_cidr, "--cluster-cidr"),
            pod_bridge_interface=pod_bridge_interface.strip(),
            pod_interface_name_prefix=pod_interface_name_prefix.strip(),
            service_cidrs=parse_cidrs(service_cidr, "--service-cidr"),
            masquerade_all=masquerade_all,
        )
        check_config(config)
    except ConfigProblem as e:
        raise ConfigError(str(e)) from e
    return config
