"""Checks, run by `./dev test` (and so by CI) inside the project's venv.

The sessions reuse the venv `./dev setup` made instead of building their own, so CI installs
everything once and the e2e session, which runs as root in a private network namespace, installs
nothing at run time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

# Sessions run in the interpreter nox itself runs in (the project's venv): put its bin first so
# `python`, `ruff`, `mypy` and `lint-imports` are the venv's, whatever PATH the caller had.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests", "e2e"]
nox.options.error_on_missing_interpreters = True


@nox.session
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.run("mypy", "--strict", "src", "benchmarks")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and property tests (no root needed)."""
    session.run(sys.executable, "-m", "pytest", "tests/unit", "tests/property", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """The real nftlb daemon, as root, inside a private network namespace (`unshare -n`)."""
    if os.geteuid() != 0:
        session.error("the e2e tests need root (they run nftlb in a private network namespace)")
    session.run(
        "unshare",
        "-n",
        "env",
        "KUBE_NFTLB_E2E_NETNS=1",
        sys.executable,
        "-m",
        "pytest",
        "tests/e2e",
        *session.posargs,
        external=True,
    )


#: The issue 11 benchmarks: the outage window after an nftlb restart, the churn soak, and failed
#: connections during a rolling update of 100 endpoints.
NODE_SAFE_BENCHMARKS = ("benchmarks.node_safe", "benchmarks.soak", "benchmarks.rolling")


def _bench(session: nox.Session, modules: tuple[str, ...]) -> None:
    if os.geteuid() != 0:
        session.error("the benchmarks need root (they run nftlb in a private network namespace)")
    for module in modules:
        session.run(
            "unshare",
            "-n",
            "env",
            "KUBE_NFTLB_BENCH_NETNS=1",
            sys.executable,  # the venv's python, which runs nox
            "-m",
            module,
            *session.posargs,
            external=True,
        )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (root): the real nftlb in a private network namespace, the fake API server and
    the real `kube-nftlb run` process. Timings are reported, never asserted. `-- --quick` for a
    short run; see docs/benchmarks.md."""
    _bench(session, ("benchmarks.run", *NODE_SAFE_BENCHMARKS))


@nox.session(name="bench_node_safe")
def bench_node_safe(session: nox.Session) -> None:
    """Only the issue 11 benchmarks (root): outage window, churn soak, rolling update.
    `-- --quick` for a short run; see docs/benchmarks.md."""
    _bench(session, NODE_SAFE_BENCHMARKS)


@nox.session(name="bench_table")
def bench_table(session: nox.Session) -> None:
    """The node rules' cost per sync (root): table inet kube-nftlb at 0, 1,000 and 5,000
    Services with the real nft, in a private network namespace. See docs/benchmarks.md."""
    if os.geteuid() != 0:
        session.error(
            "the benchmark needs root (it writes nftables in a private network namespace)"
        )
    session.run(
        "unshare",
        "-n",
        sys.executable,
        "-m",
        "benchmarks.node_table",
        *session.posargs,
        external=True,
    )
