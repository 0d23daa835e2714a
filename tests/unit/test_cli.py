"""The command line as people use it: render, diff, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli.main import main
from reconciler.cli.manifests import load_paths
from reconciler.testing.fakeapi import FakeApiServer

EXAMPLES = Path(__file__).parents[2] / "examples"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_prints_the_exact_nftlb_document(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "render", "-f", str(EXAMPLES))
    assert code == 0
    doc = json.loads(out)
    names = [f["name"] for f in doc["farms"]]
    assert "k8s.default.web.http.tcp.v4" in names and names == sorted(names)
    web = next(f for f in doc["farms"] if f["name"] == "k8s.default.web.http.tcp.v4")
    assert list(web)[:5] == ["name", "family", "virtual-addr", "virtual-ports", "protocol"]
    assert "addresses" not in web
    assert all(isinstance(v, str) for k, v in web.items() if k not in ("addresses", "backends"))
    assert list(web["backends"][0]) == [
        "name",
        "ip-addr",
        "port",
        "weight",
        "mark",
        "state",
    ]
    assert [b["mark"] for b in web["backends"]] == ["0x1", "0x2", "0x3"]
    assert "problem: Service default/legacy: InvalidAnnotation" in err


def test_render_table_and_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", "-f", str(EXAMPLES / "40-dual-stack.yaml"), "-o", "table")
    assert code == 0 and "[fd00:96::50]:9090" in out and "k8s.default.api.grpc.tcp.v6" in out
    code, out, _ = run(capsys, "render", "-f", str(EXAMPLES / "10-web.yaml"), "-o", "yaml")
    assert code == 0 and out.startswith("farms:")


def test_unreadable_input_exits_2_naming_file_and_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Service\n---\nkind: [unclosed\n")
    code, out, err = run(capsys, "render", "-f", str(bad))
    assert code == 2 and out == ""
    assert str(bad) in err and "document 2" in err
    code, _, err = run(capsys, "render", "-f", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml" in err


def test_diff_exit_codes_against_empty_and_saved_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "diff", "-f", str(EXAMPLES / "10-web.yaml"))
    assert code == 1 and "+ farm k8s.default.web.http.tcp.v4" in out and "Plan: 2 to create" in out
    code, out, _ = run(capsys, "render", "-f", str(EXAMPLES / "10-web.yaml"))
    state = tmp_path / "farms.json"
    state.write_text(out)
    code, out, _ = run(capsys, "diff", "-f", str(EXAMPLES / "10-web.yaml"), "--state", str(state))
    assert code == 0 and out.startswith("No changes")
    code, out, _ = run(
        capsys, "diff", "-f", str(EXAMPLES / "00-node.yaml"), "--state", str(state), "-o", "json"
    )
    doc = json.loads(out)
    assert code == 1 and doc["counts"]["delete-farm"] == 2 and doc["changed"] is True
    state.write_text("{}")
    code, _, err = run(capsys, "diff", "-f", str(EXAMPLES), "--state", str(state))
    assert code == 2 and "farms" in err


def test_render_reads_the_live_cluster_without_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeApiServer() as fake:
        fake.seed(load_paths([EXAMPLES]))
        code, live, _ = run(
            capsys,
            "render",
            "--kubeconfig",
            fake.write_kubeconfig(tmp_path / "kubeconfig"),
            "--node",
            "node-1",
        )
    code2, files, _ = run(capsys, "render", "-f", str(EXAMPLES), "--node", "node-1")
    assert code == code2 == 0
    assert json.loads(live) == json.loads(files)


def test_run_without_node_name_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    key = tmp_path / "key"
    key.write_text("k\n")
    code, _, err = run(capsys, "run", "--nftlb-key-file", str(key))
    assert code == 2 and "NODE_NAME" in err
    code, _, err = run(
        capsys,
        "run",
        "--node-name",
        "n",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--nftlb-key-file",
        str(tmp_path / "nope"),
        "--nftlb-key-wait",
        "0",
    )
    assert code == 2 and "key file" in err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((), "--cluster-cidr"),
        (("--cluster-cidr", "10.244.0.0/33"), "--cluster-cidr"),
        (("--cluster-cidr", "10.244.0.1/16"), "--cluster-cidr"),
        (("--cluster-cidr", "10.244.0.0/16,10.245.0.0/16"), "--cluster-cidr"),
        (("--cluster-cidr", "10.244.0.0/16", "--service-cidr", "bogus"), "--service-cidr"),
        (("--detect-local-mode", "Pods"), "--detect-local-mode"),
        (("--detect-local-mode", "BridgeInterface"), "--pod-bridge-interface"),
        (("--detect-local-mode", "InterfaceNamePrefix"), "--pod-interface-name-prefix"),
        (("--cluster-cidr", "10.244.0.0/16", "--masquerade-all", "maybe"), "--masquerade-all"),
    ],
)
def test_a_missing_or_wrong_local_traffic_setting_is_a_start_up_error_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], named: str
) -> None:
    key = tmp_path / "key"
    key.write_text("k\n")
    code, _, err = run(capsys, "run", "--node-name", "n", "--nftlb-key-file", str(key), *args)
    assert code == 2
    assert named in err, err


def test_the_local_traffic_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reconciler.cli.main import build_parser

    for name, value in (
        ("KUBE_NFTLB_DETECT_LOCAL_MODE", "NodeCIDR"),
        ("KUBE_NFTLB_CLUSTER_CIDR", "10.1.0.0/16"),
        ("KUBE_NFTLB_POD_BRIDGE_INTERFACE", "cni0"),
        ("KUBE_NFTLB_POD_INTERFACE_NAME_PREFIX", "cali"),
        ("KUBE_NFTLB_SERVICE_CIDR", "10.96.0.0/12"),
        ("KUBE_NFTLB_MASQUERADE_ALL", "true"),
    ):
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["run"])
    assert (
        args.detect_local_mode,
        args.cluster_cidr,
        args.pod_bridge_interface,
        args.pod_interface_name_prefix,
        args.service_cidr,
        args.masquerade_all,
    ) == ("NodeCIDR", "10.1.0.0/16", "cni0", "cali", "10.96.0.0/12", "true")
