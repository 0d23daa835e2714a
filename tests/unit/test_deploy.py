"""The deployment: deploy/ (kustomize), the Dockerfile and the nftlb start script.

The kustomization is rendered here without kubectl: its `resources:` files are loaded and its
`namespace:` and `images:` transforms applied (the kustomization may use nothing else, so this is
exact; when kubectl is installed, its own rendering is compared too). Every object is validated
against the Kubernetes OpenAPI schemas shipped inside the kubernetes-validate package (no network),
in strict mode, and the security properties the install guide promises are asserted one by one.
The ClusterRole must grant exactly the API calls found in src/reconciler, so a new call without
RBAC, or RBAC without a call, fails here.
"""

from __future__ import annotations

import ast
import inspect
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
START_SCRIPT = DEPLOY / "image" / "nftlb-start.sh"
SRC = ROOT / "src" / "reconciler"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: Kubernetes releases whose schemas the manifests must pass (shipped by kubernetes-validate).
SCHEMA_VERSIONS = ("1.31", "1.34")
#: The kustomization fields that render() implements exactly; anything else must fail the test.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
KEY_DIR = "/run/kube-nftlb"
APT_PACKAGES = {"python3", "python3-venv", "nftlb", "nftables", "conntrack"}

Obj = dict[str, Any]


# -- rendering ----------------------------------------------------------------------------


def _yaml_docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kustomization() -> Obj:
    doc = _yaml_docs(DEPLOY / "kustomization.yaml")
    assert len(doc) == 1
    return doc[0]


def _split_image(image: str) -> tuple[str, str, str]:
    """(name, tag, digest) as kustomize's image transformer reads them."""
    name, digest = image.split("@", 1) if "@" in image else (image, "")
    last = name.rsplit("/", 1)[-1]
    tag = ""
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest


def _containers(pod_spec: Obj) -> Iterator[Obj]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod_spec.get(field) or []


def render() -> list[Obj]:
    k = _kustomization()
    assert set(k) <= KUSTOMIZE_FIELDS, f"render() does not implement {set(k) - KUSTOMIZE_FIELDS}"
    objects: list[Obj] = []
    for resource in k["resources"]:
        path = DEPLOY / resource
        assert path.is_file(), f"{resource}: only plain files are supported as resources"
        objects.extend(_yaml_docs(path))
    for obj in objects:
        if "namespace" in k and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = k["namespace"]
        spec = obj.get("spec", {}).get("template", {}).get("spec")
        for c in _containers(spec or {}):
            name, tag, digest = _split_image(c["image"])
            for entry in k.get("images") or []:
                if entry["name"] == name:
                    name = entry.get("newName", name)
                    tag = entry.get("newTag", tag)
                    digest = entry.get("digest", digest)
            c["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return objects


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    return render()


def _one(objects: list[Obj], kind: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


@pytest.fixture(scope="module")
def pod(objects: list[Obj]) -> Obj:
    spec: Obj = _one(objects, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def _container(pod: Obj, name: str) -> Obj:
    found = [c for c in _containers(pod) if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def _env(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env") or []}


def _caps(container: Obj) -> tuple[list[str], list[str]]:
    caps = container["securityContext"].get("capabilities") or {}
    return caps.get("drop") or [], caps.get("add") or []


def test_every_manifest_in_deploy_is_a_listed_resource() -> None:
    manifests = {
        p.relative_to(DEPLOY).as_posix()
        for p in DEPLOY.rglob("*")
        if p.relative_to(DEPLOY).parts[0] != "helm"  # the chart (tests/unit/test_helm.py)
        if p.suffix in {".yaml", ".yml", ".json"} and p.name != "kustomization.yaml"
    }
    resources = _kustomization()["resources"]
    assert len(resources) == len(set(resources))
    assert manifests == set(resources)


def test_rendering_is_what_kubectl_kustomize_makes(objects: list[Obj]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the rendering above is the one checked")
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True
    )
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d is not None]

    def key(o: Obj) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    assert sorted(theirs, key=key) == sorted(objects, key=key)


# -- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_object_is_valid_for_kubernetes(objects: list[Obj], version: str) -> None:
    assert {o["kind"] for o in objects} == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    }
    problems = []
    for obj in objects:
        try:
            assert kubernetes_validate.validate(obj, version, strict=True) == version
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {e.message}")
    assert not problems


def test_strict_validation_rejects_an_unknown_field() -> None:
    broken = render()
    _container(_one(broken, "DaemonSet")["spec"]["template"]["spec"], "nftlb")["securityContext"][
        "privilegd"
    ] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(_one(broken, "DaemonSet"), SCHEMA_VERSIONS[-1], strict=True)


# -- the pod: placement and wiring ----------------------------------------------------------


def test_objects_live_in_the_namespace(objects: list[Obj]) -> None:
    ns = _kustomization()["namespace"]
    assert _one(objects, "Namespace")["metadata"]["name"] == ns
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == ns, obj["kind"]


def test_the_pod_runs_on_every_linux_node_in_the_host_network(objects: list[Obj], pod: Obj) -> None:
    ds = _one(objects, "DaemonSet")
    assert pod["hostNetwork"] is True
    # The node's resolver, as kube-proxy's pods: cluster DNS is a Service kube-nftlb programs.
    assert pod["dnsPolicy"] == "Default"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["terminationGracePeriodSeconds"] > 0
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    selector = ds["spec"]["selector"]["matchLabels"]
    assert selector.items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def test_two_containers_from_the_project_image(pod: Obj) -> None:
    assert [c["name"] for c in _containers(pod)] == ["nftlb", "reconciler"]
    version = PYPROJECT["project"]["version"]
    for c in _containers(pod):
        assert c["image"] == f"kube-nftlb:{version}"
    images = _kustomization()["images"]
    assert [i["name"] for i in images] == ["kube-nftlb"]


def test_resources_have_requests_and_limits(pod: Obj) -> None:
    for c in _containers(pod):
        for bound in ("requests", "limits"):
            assert set(c["resources"][bound]) == {"cpu", "memory"}, (c["name"], bound)


def _run_env_names() -> set[str]:
    """The environment variables `kube-nftlb run` reads: its settings' (agent/config.py)."""
    from reconciler.cli.main import SETTINGS_OF, build_parser

    build_parser()
    names = {s.env for s in SETTINGS_OF["run"]}
    assert {"NODE_NAME", "KUBE_NFTLB_NFTLB_URL", "KUBE_NFTLB_NFTLB_KEY_FILE"} <= names
    return names


def test_reconciler_settings_are_flags_the_code_reads(pod: Obj) -> None:
    rec = _container(pod, "reconciler")
    assert rec["args"] == ["run"]
    assert "command" not in rec  # the image's ENTRYPOINT, kube-nftlb
    env = _env(rec)
    assert set(env) <= _run_env_names() | {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}
    assert env["NODE_NAME"] == {
        "name": "NODE_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
    }
    assert env["KUBE_NFTLB_NFTLB_KEY_FILE"]["value"] == f"{KEY_DIR}/key"


def test_reconciler_talks_to_nftlb_on_loopback_at_the_scripts_port(pod: Obj) -> None:
    url = _env(_container(pod, "reconciler"))["KUBE_NFTLB_NFTLB_URL"]["value"]
    port = re.search(r"^PORT=\$\{NFTLB_PORT:-(\d+)\}$", START_SCRIPT.read_text(), re.M)
    assert port is not None
    assert url == f"http://127.0.0.1:{port.group(1)}"


def test_metrics_and_probes_are_on_loopback(pod: Obj) -> None:
    rec = _container(pod, "reconciler")
    host, _, port = _env(rec)["KUBE_NFTLB_METRICS_ADDRESS"]["value"].rpartition(":")
    assert ipaddress.ip_address(host.strip("[]")).is_loopback
    paths = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in paths.items():
        assert rec[probe]["httpGet"] == {"host": host, "port": int(port), "path": path}, probe
    assert "livenessProbe" not in _container(pod, "nftlb")  # a restart empties its tables
    declared = {p["name"]: p for p in rec["ports"]}
    assert declared["metrics"] == {"name": "metrics", "containerPort": int(port), "protocol": "TCP"}
    nftlb_port = re.search(r"^PORT=\$\{NFTLB_PORT:-(\d+)\}$", START_SCRIPT.read_text(), re.M)
    assert nftlb_port is not None
    assert _container(pod, "nftlb")["readinessProbe"]["tcpSocket"] == {
        "host": "127.0.0.1",
        "port": int(nftlb_port.group(1)),
    }


# -- the pod: security ----------------------------------------------------------------------


def test_no_container_is_privileged_or_can_escalate(pod: Obj) -> None:
    assert not any(pod.get(k) for k in ("hostPID", "hostIPC"))
    for c in _containers(pod):
        sc = c["securityContext"]
        assert sc["privileged"] is False, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        assert "procMount" not in sc
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_exact_capabilities(pod: Obj) -> None:
    # Proven in tests/e2e/test_nftlb_start_e2e.py: NET_ADMIN is enough for nftlb, and needed;
    # in tests/e2e/test_conntrack_e2e.py: the same for the reconciler's conntrack cleanup.
    assert _caps(_container(pod, "nftlb")) == (["ALL"], ["NET_ADMIN"])
    assert _caps(_container(pod, "reconciler")) == (["ALL"], ["NET_ADMIN"])


def test_reconciler_is_root_only_for_its_capability(pod: Obj) -> None:
    # Kubernetes gives added capabilities to uid 0 only; the group stays the unprivileged one
    # the key file is shared with, and the image's own user (for render and diff) is not root.
    sc = _container(pod, "reconciler")["securityContext"]
    assert sc["runAsUser"] == 0
    assert sc["runAsNonRoot"] is False
    assert sc["runAsGroup"] != 0
    user, _, group = _final("USER")[0].partition(":")
    assert user != "0" and group == str(sc["runAsGroup"])


def test_the_reconciler_declares_kube_proxys_health_port(pod: Obj) -> None:
    from reconciler.cli.main import build_parser, resolve

    rec = _container(pod, "reconciler")
    args = build_parser().parse_args(["run"])
    resolve(args, {})
    address = args.healthz_bind_address
    env = _env(rec).get("KUBE_NFTLB_HEALTHZ_BIND_ADDRESS")
    address = env["value"] if env else address
    healthz = [p for p in rec["ports"] if p["name"] == "healthz"]
    assert healthz == [
        {"name": "healthz", "containerPort": int(address.rpartition(":")[2]), "protocol": "TCP"}
    ]
    assert {p["name"] for p in rec["ports"]} == {"healthz", "metrics"}


def test_nftlb_is_root_only_for_its_capability_and_shares_the_reconcilers_group(pod: Obj) -> None:
    nftlb = _container(pod, "nftlb")["securityContext"]
    rec = _container(pod, "reconciler")["securityContext"]
    # Kubernetes cannot give ambient capabilities to another uid; the key file gets this group.
    assert nftlb["runAsUser"] == 0
    assert nftlb["runAsGroup"] == rec["runAsGroup"]


def test_the_key_volume_is_in_memory_and_shared_by_exactly_the_two_containers(pod: Obj) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["nftlb-key"] == {
        "name": "nftlb-key",
        "emptyDir": {
            "medium": "Memory",
            "sizeLimit": volumes["nftlb-key"]["emptyDir"]["sizeLimit"],
        },
    }
    mounts = {
        c["name"]: m
        for c in _containers(pod)
        for m in c.get("volumeMounts") or []
        if m["name"] == "nftlb-key"
    }
    assert set(mounts) == {"nftlb", "reconciler"}
    assert {m["mountPath"] for m in mounts.values()} == {KEY_DIR}
    assert mounts["reconciler"].get("readOnly") is True


def test_no_host_paths_and_the_api_token_only_in_the_reconciler(
    objects: list[Obj], pod: Obj
) -> None:
    assert not any("hostPath" in v for v in pod["volumes"])
    assert pod["automountServiceAccountToken"] is False
    assert _one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == _one(objects, "ServiceAccount")["metadata"]["name"]
    token_volumes = {
        v["name"]
        for v in pod["volumes"]
        if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))
    }
    assert len(token_volumes) == 1
    users = {
        c["name"]
        for c in _containers(pod)
        for m in c.get("volumeMounts") or []
        if m["name"] in token_volumes
    }
    assert users == {"reconciler"}


def test_nftlb_runs_the_start_script_which_binds_loopback_only(pod: Obj) -> None:
    nftlb = _container(pod, "nftlb")
    assert nftlb["command"] == [_copied_start_script()]
    assert "args" not in nftlb
    text = START_SCRIPT.read_text()
    execs = [line.split() for line in text.splitlines() if line.startswith("exec ")]
    assert len(execs) == 1
    argv = execs[0]
    assert argv[1] == '"$NFTLB_BIN"'
    assert argv[argv.index("-H") + 1] == "127.0.0.1"
    assert "-6" not in argv  # no IPv6 wildcard listener
    assert "-k" not in argv  # the key goes in the environment
    assert "--key" not in argv
    assert argv[argv.index("-L") + 1] == "2"  # logs to stderr; stdout (the key) to /dev/null
    assert ">/dev/null" in argv  # stdout, where nftlb prints its key at exit
    assert argv[-1] == '2>"$fifo"'  # stderr through the filter that redacts the key
    assert "export NFTLB_SERVER_KEY" in text


# -- RBAC ---------------------------------------------------------------------------------

_VERBS = (
    ("delete_collection_", "deletecollection"),
    ("list_", "list"),
    ("read_", "get"),
    ("create_", "create"),
    ("patch_", "patch"),
    ("replace_", "update"),
    ("delete_", "delete"),
)


def _api_classes() -> dict[str, type]:
    return {
        name: cls
        for name, cls in vars(kubernetes.client).items()
        if inspect.isclass(cls) and name.endswith("Api") and name != "ApiClient"
    }


def _method_rule(cls: type, method: str) -> tuple[str, str, str]:
    """(API group, resource, verb) of one method of the official client, from its URL path."""
    source = inspect.getsource(getattr(cls, f"{method}_with_http_info"))
    paths = re.findall(r"'(/apis?/[^']+)'", source)
    assert len(paths) == 1, (cls.__name__, method, paths)
    parts = paths[0].strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    segments = [p for p in rest if not p.startswith("{")]
    resource = "/".join(segments[:2])  # e.g. services or services/status
    verb = next((v for prefix, v in _VERBS if method.startswith(prefix)), None)
    assert verb is not None, f"{cls.__name__}.{method}: no RBAC verb known for this method"
    return group, resource, verb


def _api_objects(tree: ast.AST, classes: dict[str, type]) -> dict[str, type]:
    """Variables assigned an API object: `core = kubernetes.client.CoreV1Api(api_client)`."""
    found: dict[str, type] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in classes:
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        found[target.id] = classes[name]
    return found


def rules_from_code() -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) that src/reconciler asks of the API server.

    A client method named on an API object (called, or passed on as `Informer`'s list function)
    needs its verb; a list function given to an `Informer` also needs `watch`, which the
    informer does with the same function (kubernetes.watch.Watch)."""
    classes = _api_classes()
    methods = {m for cls in classes.values() for m in dir(cls) if not m.startswith("_")}
    rules: set[tuple[str, str, str]] = set()
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        objs = _api_objects(tree, classes)
        informer_args: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Informer":
                informer_args |= {id(a) for a in node.args}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr in methods):
                continue
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert owner in objs, f"{where}: cannot tell which API class .{node.attr} belongs to"
            group, resource, verb = _method_rule(objs[owner], node.attr)
            rules.add((group, resource, verb))
            if id(node) in informer_args:
                assert verb == "list", f"{where}: an Informer needs a list function"
                rules.add((group, resource, "watch"))
    return rules


def _granted(objects: list[Obj]) -> set[tuple[str, str, str]]:
    granted: set[tuple[str, str, str]] = set()
    for rule in _one(objects, "ClusterRole")["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no names, no URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), rule
                    granted.add((group, resource, verb))
    return granted


def test_rbac_is_exactly_what_the_code_calls(objects: list[Obj]) -> None:
    needed = rules_from_code()
    assert ("", "services", "watch") in needed  # the scan finds the informers
    assert {("", "events", v) for v in ("create", "get", "patch")} <= needed
    assert _granted(objects) == needed


def test_the_scan_maps_client_methods_to_rbac() -> None:
    core, discovery = kubernetes.client.CoreV1Api, kubernetes.client.DiscoveryV1Api
    assert _method_rule(core, "list_node") == ("", "nodes", "list")
    assert _method_rule(core, "create_namespaced_event") == ("", "events", "create")
    assert _method_rule(core, "patch_namespaced_service_status") == ("", "services/status", "patch")
    assert _method_rule(core, "read_namespaced_service") == ("", "services", "get")
    assert _method_rule(discovery, "list_endpoint_slice_for_all_namespaces") == (
        "discovery.k8s.io",
        "endpointslices",
        "list",
    )
    tree = ast.parse("from kubernetes import client\nc = client.CoreV1Api(x)\nc.patch_node(n, b)\n")
    assert set(_api_objects(tree, _api_classes())) == {"c"}


def test_the_role_is_bound_to_the_service_account(objects: list[Obj]) -> None:
    binding = _one(objects, "ClusterRoleBinding")
    sa = _one(objects, "ServiceAccount")["metadata"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": _one(objects, "ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}
    ]


# -- the Dockerfile -----------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    assert not pending
    out = []
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _final(name: str) -> list[str]:
    return [args for ins, args in _stages()[-1] if ins == name]


def _copied_start_script() -> str:
    for args in _final("COPY"):
        src, dest = args.split()[-2:]
        if src == START_SCRIPT.relative_to(ROOT).as_posix():
            return dest
    raise AssertionError("the Dockerfile does not COPY the start script")


def test_dockerfile_stages() -> None:
    stages = _stages()
    assert len(stages) == 2
    build, final = stages[0][0][1], stages[1][0][1]
    assert re.fullmatch(r"(python:3\.11-slim-bookworm|debian:bookworm-slim) AS build", build)
    assert final == "debian:bookworm-slim"
    builds = [a for i, a in stages[0] if i == "RUN"]
    assert any(re.search(r"pip wheel .*--no-deps .*\.$|python -m build", a) for a in builds)


def _apt_install() -> tuple[list[str], str]:
    runs = [a for a in _final("RUN") if "apt-get install" in a]
    assert len(runs) == 1
    words = shlex.split(runs[0].split("apt-get install", 1)[1].split("&&", 1)[0])
    return words, runs[0]


def test_dockerfile_installs_only_the_runtime_packages_and_no_apt_lists() -> None:
    words, run = _apt_install()
    assert "--no-install-recommends" in words
    assert {w for w in words if not w.startswith("-")} == APT_PACKAGES
    assert "rm -rf /var/lib/apt/lists/*" in run


def test_dockerfile_installs_the_wheel_into_a_venv_without_caches() -> None:
    runs = " && ".join(_final("RUN"))
    assert "python3 -m venv /opt/kube-nftlb" in runs
    assert re.search(r"/opt/kube-nftlb/bin/pip install --no-cache-dir /tmp/wheels/\*\.whl", runs)
    assert "rm -rf /tmp/wheels" in runs
    assert any(a.startswith("PATH=/opt/kube-nftlb/bin:") for a in _final("ENV"))


def test_dockerfile_entrypoint_is_the_projects_console_script() -> None:
    from reconciler.cli.main import build_parser

    assert PYPROJECT["project"]["scripts"] == {"kube-nftlb": "reconciler.cli.main:main"}
    assert _final("ENTRYPOINT") == ['["kube-nftlb"]']
    assert _final("CMD") == ['["run"]']
    assert build_parser().parse_args(["run"]).command == "run"


def test_dockerfile_runs_as_an_unprivileged_numeric_user_of_the_reconcilers_group(
    pod: Obj,
) -> None:
    rec = _container(pod, "reconciler")["securityContext"]
    [user] = _final("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and uid != "0"
    assert gid == str(rec["runAsGroup"])
    runs = " ".join(_final("RUN"))
    assert f"--uid {uid}" in runs
    assert f"--gid {rec['runAsGroup']}" in runs


def test_dockerfile_labels_and_version() -> None:
    text = DOCKERFILE.read_text()
    version = PYPROJECT["project"]["version"]
    assert f"ARG VERSION={version}\n" in text
    assert _kustomization()["images"][0]["newTag"] == version
    for label in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text, label
    assert f'org.opencontainers.image.licenses="{PYPROJECT["project"]["license"]["text"]}"' in text


def _dockerignore_allows(path: str) -> bool:
    """The .dockerignore is an allow-list: `*`, then `!path` lines (later lines win)."""
    allowed = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        anywhere = pattern.startswith("**/") and f"/{pattern[3:]}/" in f"/{path}/"
        if pattern == "*" or path == pattern or path.startswith(pattern + "/") or anywhere:
            allowed = negate
    return allowed


def test_copied_files_exist_and_are_in_the_build_context() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert next(x for x in lines if x and not x.startswith("#")) == "*"
    copies = [a for stage in _stages() for i, a in stage if i == "COPY" and "--from=" not in a]
    sources = [src for args in copies for src in args.split()[:-1]]
    assert sources
    for src in sources:
        path = ROOT / src
        assert path.exists(), src
        assert _dockerignore_allows(src), f"{src} is excluded by .dockerignore"
    assert not _dockerignore_allows("src/reconciler/__pycache__/cli.cpython-311.pyc")
    assert not _dockerignore_allows(".venv/bin/python")


def _in_bookworm(package: str) -> bool:
    out = subprocess.run(
        ["apt-cache", "policy", package], capture_output=True, text=True, check=False
    ).stdout
    return bool(re.search(r"^\s+\d+ \S+ bookworm(-updates|-security)?/\S+ ", out, re.M))


def test_apt_packages_exist_in_debian_bookworm() -> None:
    if shutil.which("apt-cache") is None:
        pytest.skip("apt-cache is not installed: cannot look the packages up")
    sources = subprocess.run(["apt-cache", "policy"], capture_output=True, text=True).stdout
    if not re.search(r" bookworm/main ", sources):
        pytest.skip(
            "apt has no Debian bookworm package lists here (not bookworm, or no apt-get update)"
        )
    words, _ = _apt_install()
    for package in (w for w in words if not w.startswith("-")):
        assert _in_bookworm(package), package
    assert not _in_bookworm("nftlb-no-such-package")


# -- the start script ---------------------------------------------------------------------


def test_start_script_is_executable_and_parses() -> None:
    assert os.access(START_SCRIPT, os.X_OK)
    assert START_SCRIPT.read_text().startswith("#!/bin/sh\n")
    for shell in ("sh", "bash"):
        if shutil.which(shell):
            subprocess.run([shell, "-n", str(START_SCRIPT)], check=True)


def test_start_script_default_key_file_is_in_the_shared_volume(pod: Obj) -> None:
    default = re.search(
        r"^KEY_FILE=\$\{KUBE_NFTLB_KEY_FILE:-(\S+)\}$", START_SCRIPT.read_text(), re.M
    )
    assert default is not None
    assert (
        default.group(1)
        == _env(_container(pod, "reconciler"))["KUBE_NFTLB_NFTLB_KEY_FILE"]["value"]
    )
    assert "KUBE_NFTLB_KEY_FILE" not in _env(_container(pod, "nftlb"))


# -- docs/install.md ----------------------------------------------------------------------


def test_install_guide_uses_only_commands_and_settings_that_exist(pod: Obj) -> None:
    from reconciler.cli.main import build_parser

    text = (ROOT / "docs" / "install.md").read_text()
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    commands = re.findall(r"(?:^|-- |`)kube-nftlb ((?:run|diff|render)\b[^`\n]*)", joined, re.M)
    assert len(commands) >= 2
    for command in commands:
        try:
            build_parser().parse_args(shlex.split(command))
        except SystemExit:
            pytest.fail(f"docs/install.md: `kube-nftlb {command}` does not parse")
    for name in set(re.findall(r"\b(KUBE_NFTLB_[A-Z_]+)", text)):
        assert name in _run_env_names(), name
    # `kube-nftlb diff` in the pod reads nftlb where `run` does, from the DaemonSet's env.
    rec = _env(_container(pod, "reconciler"))
    assert {"KUBE_NFTLB_NFTLB_URL", "KUBE_NFTLB_NFTLB_KEY_FILE"} <= set(rec)
    assert "exec ds/kube-nftlb -c reconciler -- kube-nftlb diff" in joined
    assert "KUBE_NFTLB_NFTLB_KEY_FILE" in text
    assert "kubectl apply -k deploy/" in text
    assert "kubectl delete -k deploy/" in text
    assert "nft delete table ip nftlb; nft delete table ip6 nftlb" in text
