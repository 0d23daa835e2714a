"""The command line as people use it: render, diff, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from reconciler.cli.main import main
from reconciler.cli.manifests import load_paths
from reconciler.testing.fakeapi import FakeApiServer

if TYPE_CHECKING:
    from reconciler.agent.daemon import Daemon

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
    from reconciler.cli.main import build_parser, resolve

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
    resolve(args)
    assert (
        args.detect_local_mode,
        args.cluster_cidr,
        args.pod_bridge_interface,
        args.pod_interface_name_prefix,
        args.service_cidr,
        args.masquerade_all,
    ) == ("NodeCIDR", "10.1.0.0/16", "cni0", "cali", "10.96.0.0/12", True)


# -- errors that leak or lie: exit 2 and one line naming the culprit, never a traceback --------


def _one_clear_line(err: str, *named: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("kube-nftlb: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for n in named:
        assert n in lines[0], (n, err)


def _kubeconfig_nowhere(tmp_path: Path) -> str:
    import json as _json
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(_json.dumps(doc))
    return str(path)


def _closed_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def offline_daemon(api: Any) -> Daemon:
    """A `Daemon` on the API client `api` whose nftlb never answers, with no HTTP servers,
    conntrack or Events: for what its informers and controller do on their own."""
    from reconciler.agent.controller import Settings
    from reconciler.agent.daemon import Daemon, DaemonOptions

    options = DaemonOptions(
        Settings(node_name="node-1"),
        _closed_url(),
        "k",
        "",
        healthz_address="",
        health_check_host=None,
        conntrack_cleanup=False,
        events=False,
    )
    return Daemon(options, api)


WEB = str(EXAMPLES / "10-web.yaml")


def test_diff_key_file_missing_or_of_two_lines_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing-key"
    code, _, err = run(
        capsys, "diff", "-f", WEB, "--nftlb-url", _closed_url(), "--nftlb-key-file", str(missing)
    )
    assert code == 2
    _one_clear_line(err, "--nftlb-key-file", str(missing))
    two = tmp_path / "key"
    two.write_text("a\nb\n")
    code, _, err = run(
        capsys, "diff", "-f", WEB, "--nftlb-url", _closed_url(), "--nftlb-key-file", str(two)
    )
    assert code == 2
    _one_clear_line(err, str(two), "more than one line")


def test_an_unreachable_nftlb_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "key"
    key.write_text("k\n")
    url = _closed_url()
    code, _, err = run(capsys, "diff", "-f", WEB, "--nftlb-url", url, "--nftlb-key-file", str(key))
    assert code == 2
    _one_clear_line(err, url)


@pytest.mark.parametrize("command", ["render", "diff"])
def test_an_unreachable_cluster_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, err = run(capsys, command, "--kubeconfig", _kubeconfig_nowhere(tmp_path))
    assert code == 2 and out == ""
    _one_clear_line(err, "cannot reach the Kubernetes API at http://127.0.0.1:")


def test_a_cluster_that_refuses_the_list_exits_2_with_the_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeApiServer() as fake:
        fake.fail_next("list", 403, "endpointslices")
        code, _, err = run(capsys, "render", "--kubeconfig", fake.write_kubeconfig(tmp_path / "kc"))
    assert code == 2
    _one_clear_line(err, "endpointslices", "403", "RBAC")


@pytest.mark.parametrize(
    "state",
    ['{"farms":[{"name":1}]}', '{"farms":[1]}', '{"farms":"x"}', "[]", "not json", ""],
)
def test_a_bad_saved_state_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], state: str
) -> None:
    path = tmp_path / "farms.json"
    path.write_text(state)
    code, _, err = run(capsys, "diff", "-f", WEB, "--state", str(path))
    assert code == 2
    _one_clear_line(err, str(path))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KUBE_NFTLB_LOG_LEVEL", "verbose"),
        ("KUBE_NFTLB_LOG_FORMAT", "text"),
        ("KUBE_NFTLB_RESYNC_PERIOD", "0"),
        ("KUBE_NFTLB_RESYNC_PERIOD", "-5s"),
        ("KUBE_NFTLB_RESYNC_PERIOD", "30"),
        ("KUBE_NFTLB_METRICS_ADDRESS", "nonsense"),
        ("KUBE_NFTLB_CONNTRACK_CLEANUP", "maybe"),
        ("KUBE_NFTLB_NFTLB_URL", "ftp://x"),
    ],
)
def test_environment_variables_are_checked_as_their_flags(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
) -> None:
    from reconciler.agent.config import RUN_SETTINGS, Setting

    monkeypatch.setenv(name, value)
    code, _, err = run(capsys, "run", "--node-name", "n")
    assert code == 2
    _one_clear_line(err, name, repr(value))
    monkeypatch.delenv(name)
    flag = next(
        s.flag
        for s in (*RUN_SETTINGS, *_all_settings())
        if isinstance(s, Setting) and s.env == name
    )
    code, _, err = run(capsys, "run", "--node-name", "n", f"{flag}={value}")
    assert code == 2
    _one_clear_line(err, flag, repr(value))


def _all_settings() -> list[object]:
    from reconciler.cli.main import SETTINGS_OF, build_parser

    build_parser()
    return [s for ss in SETTINGS_OF.values() for s in ss]


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--resync-period", "0"),
        ("--resync-period", "-5s"),
        ("--min-sync-interval", "0s"),
        ("--watch-timeout", "1x"),
        ("--watch-stall-timeout", "-1m"),
        ("--nftlb-key-wait", "-1s"),
        ("--metrics-address", "nonsense"),
        ("--metrics-address", "localhost:9195"),
        ("--metrics-address", "::1:9195"),
        ("--healthz-bind-address", "1.2.3.4:99999"),
        ("--health-check-node-port-address", "here"),
        ("--log-level", "verbose"),
    ],
)
def test_bad_run_flags_exit_2_before_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    code, out, err = run(capsys, "run", "--node-name", "n", f"{flag}={value}")
    assert code == 2 and out == ""  # nothing logged: refused before start-up
    _one_clear_line(err, flag, repr(value))


def test_go_durations_parse_as_kube_proxys_flags() -> None:
    from reconciler.agent.config import go_duration, positive_duration

    assert go_duration("1m30s") == 90
    assert go_duration("1.5h") == 5400
    assert go_duration("300ms") == pytest.approx(0.3)
    assert go_duration("2h45m0.5s") == pytest.approx(9900.5)
    assert go_duration("0") == 0
    assert go_duration("-1s") == -1
    for bad in ("30", "", "s", "1m30", "1 m", "1d", "ms"):
        with pytest.raises(ValueError, match=r"duration|unit"):
            go_duration(bad)
    with pytest.raises(ValueError, match="positive"):
        positive_duration("0s")


def test_listen_addresses_take_ipv6_in_brackets() -> None:
    from reconciler.agent.config import listen_address, listen_text

    assert listen_address("[::1]:9195") == ("::1", 9195)
    assert listen_address(":9195") == ("", 9195)
    assert listen_address("") is None
    assert listen_text("[0:0::1]:80") == "[::1]:80"
    assert listen_text("127.0.0.1:0") == "127.0.0.1:0"


def test_the_metrics_server_serves_on_ipv6_loopback() -> None:
    import socket
    import urllib.request

    from reconciler.agent.config import listen_text
    from reconciler.agent.metrics import HealthServer, Metrics

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = HealthServer(Metrics(), listen_text("[::1]:0"), lambda: True, lambda: True)
    try:
        server.start()
    except OSError as e:  # pragma: no cover - a host without ::1
        pytest.skip(f"no ::1: {e}")
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        server.stop()


# -- silent wrong answers ----------------------------------------------------------------------


def _broken_owned_farm_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The example's farms as nftlb holds them, plus an owned farm in a shape the model cannot
    read (two address objects)."""
    _, out, _ = run(capsys, "render", "-f", WEB)
    doc = json.loads(out)
    broken = dict(doc["farms"][0], name="k8s.default.gone.http.tcp.v4")
    broken["addresses"] = [{"name": "a"}, {"name": "b"}]
    doc["farms"].append(broken)
    path = tmp_path / "farms.json"
    path.write_text(json.dumps(doc))
    return path


def test_diff_plans_the_deletion_of_an_unreadable_owned_farm_as_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.core.wire import parse_farms

    state = _broken_owned_farm_state(tmp_path, capsys)
    assert parse_farms(json.loads(state.read_text())).unparsable == (
        "k8s.default.gone.http.tcp.v4",
    )
    code, out, _ = run(capsys, "diff", "-f", WEB, "--state", str(state), "-o", "json")
    doc = json.loads(out)
    assert code == 1
    assert [(o["op"], o["farm"]) for o in doc["operations"]] == [
        ("delete-farm", "k8s.default.gone.http.tcp.v4")
    ]


@pytest.mark.parametrize("content", ["", "---\n", "# nothing\n"])
def test_empty_input_is_an_error_as_kubectl_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text(content)
    for command in ("render", "diff"):
        code, out, err = run(capsys, command, "-f", str(empty))
        assert code == 2 and out == ""
        _one_clear_line(err, "no objects passed", str(empty))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "README.md").write_text("# not a manifest\n")
    code, _, err = run(capsys, "render", "-f", str(folder))
    assert code == 2
    _one_clear_line(err, "no objects passed", str(folder))


def test_a_misspelt_kind_is_reported_naming_file_and_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(
        Path(WEB).read_text().replace("kind: Service\n", "kind: Servcie\n", 1)
        + "---\nkind: ConfigMap\napiVersion: v1\nmetadata: {name: c}\n"
    )
    code, _, err = run(capsys, "render", "-f", str(path))
    assert code == 0
    assert f"{path}: document 1: kind 'Servcie' is not read; did you mean 'Service'?" in err
    assert "ConfigMap (1)" in err


def test_a_node_name_that_names_no_node_is_said(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(capsys, "render", "-f", str(EXAMPLES), "--node-name", "node-9")
    assert code == 0 and "no Node named 'node-9' in the input" in err
    monkeypatch.setenv("NODE_NAME", "node-8")
    code, _, err = run(capsys, "render", "-f", str(EXAMPLES))
    assert code == 0 and "no Node named 'node-8'" in err
    monkeypatch.delenv("NODE_NAME")
    code, _, err = run(capsys, "render", "-f", str(EXAMPLES))
    assert code == 0 and "no Node named" not in err and "warning" not in err


def test_diff_without_a_target_says_it_compares_with_an_empty_nftlb(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBE_NFTLB_NFTLB_URL", raising=False)
    code, _, err = run(capsys, "diff", "-f", WEB)
    assert code == 1 and "comparing with an empty nftlb" in err


def test_diff_honours_the_daemonsets_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the pod, `kube-nftlb diff` reads nftlb where run does: KUBE_NFTLB_NFTLB_URL."""
    key = tmp_path / "key"
    key.write_text("k\n")
    url = _closed_url()
    monkeypatch.setenv("KUBE_NFTLB_NFTLB_URL", url)
    monkeypatch.setenv("KUBE_NFTLB_NFTLB_KEY_FILE", str(key))
    code, _, err = run(capsys, "diff", "-f", WEB)
    assert code == 2
    _one_clear_line(err, url)
    state = _broken_owned_farm_state(tmp_path, capsys)
    code, _, err = run(capsys, "diff", "-f", WEB, "--state", str(state))
    assert code == 1, err  # a flag wins over the environment
    code, _, err = run(capsys, "diff", "-f", WEB, "--state", str(state), "--nftlb-url", url)
    assert code == 2
    _one_clear_line(err, "--state", "--nftlb-url")


def test_a_key_file_without_an_nftlb_url_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBE_NFTLB_NFTLB_URL", raising=False)
    key = tmp_path / "key"
    key.write_text("k\n")
    code, _, err = run(capsys, "diff", "-f", WEB, "--nftlb-key-file", str(key))
    assert code == 2
    _one_clear_line(err, "--nftlb-key-file", "--nftlb-url")


def test_a_folder_skips_hidden_entries_and_virtual_environments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "web.yaml").write_text(Path(WEB).read_text())
    for junk in (".venv/lib", ".git", "venv/lib"):
        (tmp_path / junk).mkdir(parents=True)
        (tmp_path / junk / "bad.yaml").write_text("kind: [unclosed\n")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (tmp_path / ".hidden.yaml").write_text("kind: [unclosed\n")
    code, out, err = run(capsys, "render", "-f", str(tmp_path))
    assert code == 0, err
    assert "k8s.default.web.http.tcp.v4" in out


def test_dash_reads_standard_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(Path(WEB).read_text()))
    code, out, _ = run(capsys, "render", "-f", "-")
    assert code == 0 and "k8s.default.web.http.tcp.v4" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("kind: [x\n"))
    code, _, err = run(capsys, "render", "-f", "-")
    assert code == 2
    _one_clear_line(err, "<stdin>", "document 1")


def test_the_informers_errors_are_logged_with_their_status(tmp_path: Path) -> None:
    """A 403 from missing RBAC is a warning naming the resource and the status, not only an
    info line `watch.restart reason=error`."""
    import io
    import time

    from reconciler.agent.config import kube_api_client
    from reconciler.agent.logs import configure

    stream = io.StringIO()
    configure("json", "info", stream)
    with FakeApiServer() as fake:
        fake.fail_next("list", 403, "endpointslices", times=100)
        api = kube_api_client(fake.write_kubeconfig(tmp_path / "kc"))
        daemon = offline_daemon(api)
        daemon.start(loop=False)
        try:
            deadline = time.monotonic() + 10
            while "watch.error" not in stream.getvalue() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            daemon.stop()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "daemon.start" and lines[0]["version"]
    errors = [line for line in lines if line["event"] == "watch.error"]
    assert errors, lines
    first = errors[0]
    assert first["level"] == "warning" and first["resource"] == "endpointslices"
    assert first["status"] == 403 and "RBAC" in first["hint"]


# -- conventions: one spelling for each setting, in every command -----------------------------


def _commands() -> dict[str, object]:
    import argparse

    from reconciler.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_commands_help_spells_each_setting_one_way(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Walks `kube-nftlb COMMAND --help` for every command: each setting shows its default and
    its environment variable, and no setting is spelt two ways (one flag for one variable and
    one variable for one flag, across all commands; one flag for one destination)."""
    import argparse
    import re

    from reconciler.cli.main import COMMAND_OPTIONS

    flag_of_env: dict[str, set[str]] = {}
    env_of_flag: dict[str, set[str]] = {}
    flags_of_dest: dict[str, set[str]] = {}
    for name, parser in _commands().items():
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        help_text = " ".join(capsys.readouterr().out.split())
        assert isinstance(parser, argparse.ArgumentParser)
        for action in parser._actions:
            longs = [o for o in action.option_strings if o.startswith("--")]
            if not longs:
                continue
            assert len(longs) == 1, (name, action.option_strings)  # one spelling a flag
            flag = longs[0]
            if action.help == argparse.SUPPRESS:
                continue  # a deprecated spelling: checked to warn below
            assert flag in help_text, (name, flag)
            flags_of_dest.setdefault(action.dest, set()).add(flag)
            if flag in COMMAND_OPTIONS:
                continue
            shown = " ".join(str(action.help).split())
            envs = re.findall(r"\benv ([A-Z][A-Z0-9_]*)\b", shown)
            assert len(envs) == 1, (name, flag, shown)
            assert "(default: " in shown, (name, flag)
            assert f"env {envs[0]})" in help_text, (name, flag)  # what --help shows
            flag_of_env.setdefault(envs[0], set()).add(flag)
            env_of_flag.setdefault(flag, set()).add(envs[0])
    assert {e: f for e, f in flag_of_env.items() if len(f) > 1} == {}
    assert {f: e for f, e in env_of_flag.items() if len(e) > 1} == {}
    assert {d: f for d, f in flags_of_dest.items() if len(f) > 1} == {}
    assert {"--node-name", "--nftlb-url", "--kubeconfig"} <= set(env_of_flag)


def test_old_spellings_still_work_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "render", "-f", str(EXAMPLES), "--node", "node-1")
    assert code == 0 and "--node is deprecated; use --node-name" in err
    _, same, _ = run(capsys, "render", "-f", str(EXAMPLES), "--node-name", "node-1")
    assert out == same
    code, _, err = run(capsys, "diff", "-f", WEB, "--nftlb", "ftp://x")
    assert code == 2 and "--nftlb is deprecated; use --nftlb-url" in err
    _one_clear_line(err, "--nftlb-url")


def test_flags_are_never_abbreviated(capsys: pytest.CaptureFixture[str]) -> None:
    """`--node` must never silently become whatever flag starts with it."""
    with pytest.raises(SystemExit) as exit_:
        main(["render", "-f", WEB, "--proxy", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--proxy" in err


@pytest.mark.parametrize("command", ["render", "diff", "explain", "run", "demo"])
def test_version_after_the_command_too(capsys: pytest.CaptureFixture[str], command: str) -> None:
    from reconciler import __version__

    for argv in (["--version"], [command, "--version"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        assert capsys.readouterr().out == f"kube-nftlb {__version__}\n"


# -- kube-nftlb explain ------------------------------------------------------------------------


def _explain(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code, out, err = run(capsys, "explain", *argv, "-o", "json")
    assert "Traceback" not in err
    return code, json.loads(out) if out else {}


def test_explain_shows_farms_backends_and_endpoints_left_out_on_the_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, r = _explain(capsys, "ingress/ingress", "-f", str(EXAMPLES))
    assert code == 1 and r["matches"] is False  # against an empty nftlb, as diff
    farms = {f["name"]: f for f in r["farms"]}  # type: ignore[union-attr]
    assert {f["frontend"] for f in farms.values()} == {
        "cluster-ip",
        "node-port",
        "load-balancer-ip",
    }
    lb = next(f for f in farms.values() if f["frontend"] == "load-balancer-ip")
    assert lb["traffic_policy"] == "Local"
    assert lb["backends"] in (["10.244.1.41:80"], ["10.244.1.41:443"])
    left = [(e["address"], e["reason"]) for e in r["endpoints"] if not e["backend"]]  # type: ignore[union-attr]
    assert left and set(left) == {("10.244.2.42", "other-node")}
    _, out, _ = run(capsys, "render", "-f", str(EXAMPLES))
    state = tmp_path / "farms.json"
    state.write_text(out)
    code, r = _explain(capsys, "ingress/ingress", "-f", str(EXAMPLES), "--state", str(state))
    assert code == 0 and r["matches"] is True and r["nftlb"]["operations"] == []  # type: ignore[index]
    doc = json.loads(out)
    for farm in doc["farms"]:
        if farm["name"] == "k8s.ingress.ingress.http.tcp.v4":
            farm["backends"] = farm["backends"][:1]
        if farm["name"] == "k8s.default.web.http.tcp.v4":
            farm["scheduler"] = "weight"  # another Service's drift is not this one's
    state.write_text(json.dumps(doc))
    code, r = _explain(capsys, "ingress/ingress", "-f", str(EXAMPLES), "--state", str(state))
    ops = r["nftlb"]["operations"]  # type: ignore[index]
    assert code == 1 and [(o["op"], o["farm"]) for o in ops] == [
        ("upsert-backends", "k8s.ingress.ingress.http.tcp.v4")
    ]
    code, text, _ = run(
        capsys, "explain", "ingress/ingress", "-f", str(EXAMPLES), "--state", str(state)
    )
    assert code == 1 and "left out: other-node" in text and "upsert-backends" in text


def test_explain_lists_spares_apart_and_still_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "render", "-f", str(EXAMPLES))
    doc = json.loads(out)
    farm = next(f for f in doc["farms"] if f["name"] == "k8s.ingress.ingress.http.tcp.v4")
    retired = {**farm["backends"][0], "name": "b-10.244.9.9-80", "ip-addr": "10.244.9.9"}
    retired.update(mark="0x7f", state="down")  # what a retire leaves in nftlb
    farm["backends"].append(retired)
    state = tmp_path / "farms.json"
    state.write_text(json.dumps(doc))
    code, r = _explain(capsys, "ingress/ingress", "-f", str(EXAMPLES), "--state", str(state))
    assert code == 0 and r["matches"] is True
    assert r["nftlb"]["operations"] == [] and r["nftlb"]["spares"] == ["b-10.244.9.9-80"]  # type: ignore[index]
    code, text, _ = run(
        capsys, "explain", "ingress/ingress", "-f", str(EXAMPLES), "--state", str(state)
    )
    assert code == 0 and "the cleanup will delete: b-10.244.9.9-80" in text
    code, out, _ = run(capsys, "diff", "-f", str(EXAMPLES), "--state", str(state), "-o", "json")
    plan = json.loads(out)
    assert code == 1 and [(o["op"], o.get("cleanup")) for o in plan["operations"]] == [
        ("delete-backend", True)
    ]


def test_explain_tells_why_each_endpoint_is_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(
        """
apiVersion: v1
kind: Service
metadata: {name: app, namespace: default}
spec:
  clusterIP: 10.96.5.5
  clusterIPs: [10.96.5.5]
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: default, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
  - {addresses: [10.244.1.1], conditions: {ready: true}}
  - {addresses: [10.244.1.2], conditions: {ready: false, serving: false}}
  - {addresses: [10.244.1.3], conditions: {ready: false, serving: true, terminating: true}}
  - {addresses: [10.244.1.1], conditions: {ready: true}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-2, namespace: default, labels: {kubernetes.io/service-name: app}}
addressType: IPv6
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
  - {addresses: ["fd00::1"], conditions: {ready: true}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-3, namespace: default, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: metrics, port: 9090, protocol: TCP}]
endpoints:
  - {addresses: [10.244.1.9], conditions: {ready: true}}
"""
    )
    code, r = _explain(capsys, "default/app", "-f", str(manifest))
    assert code == 1  # an empty nftlb
    verdicts = {(e["address"], e["slice"]): e["reason"] for e in r["endpoints"]}  # type: ignore[union-attr]
    assert verdicts == {
        ("10.244.1.1", "app-1"): "duplicate",  # the second copy; the first is the backend
        ("10.244.1.2", "app-1"): "not-ready",
        ("10.244.1.3", "app-1"): "terminating",
        ("fd00::1", "app-2"): "wrong-family",
        ("10.244.1.9", "app-3"): "no-port",
    } | {("10.244.1.1", "app-1"): "duplicate"}
    assert [e["backend"] for e in r["endpoints"]].count(True) == 1  # type: ignore[union-attr]
    assert r["farms"][0]["backends"] == ["10.244.1.1:8080"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "named"), [("web", "NAMESPACE/NAME"), ("default/nope", "no Service default/nope")]
)
def test_explain_errors_exit_2(capsys: pytest.CaptureFixture[str], name: str, named: str) -> None:
    code, _, err = run(capsys, "explain", name, "-f", str(EXAMPLES))
    assert code == 2
    _one_clear_line(err, named)


def test_explain_says_why_a_service_is_not_served(capsys: pytest.CaptureFixture[str]) -> None:
    code, r = _explain(capsys, "default/db", "-f", str(EXAMPLES))
    assert code == 0 and "headless" in str(r["not_served"]) and r["farms"] == []
