"""Settings from flags and environment variables, and the Kubernetes client's configuration.

Every `run` flag has an environment variable (a DaemonSet sets env, people pass flags); a flag
wins over its variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes

from reconciler.core.node_rules import (
    ConfigProblem,
    DetectLocalMode,
    NodeRulesConfig,
    check_config,
    parse_cidrs,
)


class ConfigError(Exception):
    """A setting is missing or wrong; the message says which and what to do."""


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def duration(text: str) -> float:
    """Seconds from '30', '30s', '500ms', '2m'."""
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            return float(t[:-2]) / 1000
        if t.endswith("s"):
            return float(t[:-1])
        if t.endswith("m"):
            return float(t[:-1]) * 60
        return float(t)
    except ValueError as e:
        raise ConfigError(f"{text!r} is not a duration (e.g. 30s, 500ms, 2m)") from e


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
    except (kubernetes.config.ConfigException, OSError) as e:
        raise ConfigError(
            f"no Kubernetes configuration: {e} (pass --kubeconfig, or run in a cluster)"
        ) from e
    # The Watch helper builds its own ApiClient from the default configuration.
    kubernetes.client.Configuration.set_default(cfg)
    return kubernetes.client.ApiClient(cfg)


def flag_bool(text: str, flag: str) -> bool:
    """true/false, 1/0, yes/no, on/off (as env variables carry them)."""
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"{flag}: {text!r} is not true or false")


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
