"""End-to-end fixtures: the real nftlb daemon in a private network namespace, and the kernel.

Everything here runs only as root inside a network namespace of its own (so the host's
nftables ruleset is never touched):

    unshare -n env KUBE_NFTLB_E2E_NETNS=1 .venv/bin/pytest tests/e2e

Otherwise every test in this directory is skipped with the reason. Because nftlb's GET is not
the truth (`nftlb-api.md` item 22), the daemon fixture also reads ``nft -j list ruleset`` and
extracts the service map elements and the backend DNAT maps, so tests can check the kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.farms import Farm
from reconciler.core.nftlb_ruleset import (
    DnatEntries,
    ServiceElements,
    dnat_entries,
    expected_dnat_entries,
    expected_service_elements,
    nftlb_objects,
    service_elements,
)
from reconciler.nftlb.client import NftlbClient
from reconciler.testing.fakeapi import FakeApiServer
from reconciler.testing.nftlbd import NFTLB, NftlbProcess, delete_tables

HERE = Path(__file__).parent
NETNS_ENV = "KUBE_NFTLB_E2E_NETNS"
RUN_HINT = f"unshare -n env {NETNS_ENV}=1 .venv/bin/pytest tests/e2e"


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False)
    return [line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()]


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return f"e2e tests need root in a private network namespace: {RUN_HINT}"
    if not NFTLB.exists() or shutil.which("nft") is None:
        return "e2e tests need Debian's nftlb (/usr/sbin/nftlb) and nft"
    if os.environ.get(NETNS_ENV) != "1" and _links() != ["lo"]:
        return f"refusing to touch this network namespace's nftables; run: {RUN_HINT}"
    return None


_SKIP_REASON = _why_skip()  # decided once, before any test adds links


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)
            if _SKIP_REASON:
                item.add_marker(pytest.mark.skip(reason=_SKIP_REASON))


# -- the kernel ---------------------------------------------------------------------------


def nft(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", *args], capture_output=True, text=True, check=check)


def ruleset_json() -> list[dict[str, Any]]:
    """``nft -j list ruleset`` as its list of objects (nft warns on stderr about some maps)."""
    doc = json.loads(nft("-j", "list", "ruleset").stdout)
    return [o for o in doc["nftables"] if "metainfo" not in o]


def nftlb_tables(ruleset: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (obj["table"]["family"], obj["table"]["name"])
        for obj in ruleset
        if "table" in obj and obj["table"].get("name") == "nftlb"
    }


def leftovers(ruleset: Iterable[dict[str, Any]], farms: Iterable[str]) -> list[str]:
    """Every nftlb object (chain, rule, map, set, ct helper, element ...) that still names one
    of these farms: nothing of a deleted farm may be left in the kernel."""
    names = list(farms)
    out = []
    for kind, body in nftlb_objects(ruleset):
        text = json.dumps(body)
        if any(name in text for name in names):
            out.append(f"{kind} {body['family']} {body.get('name') or body.get('chain', '?')}")
    return out


# -- the daemon ---------------------------------------------------------------------------


class NftlbDaemon(NftlbProcess):
    """The shared private daemon (`reconciler.testing.nftlbd`), plus what the tests read of it."""

    def delete_tables(self) -> None:
        delete_tables()

    def client(self, **kwargs: Any) -> NftlbClient:
        return NftlbClient(self.url, self.key, **kwargs)

    def ruleset_json(self) -> list[dict[str, Any]]:
        return ruleset_json()

    def service_elements(self) -> ServiceElements:
        return service_elements(ruleset_json())

    def dnat_entries(self) -> DnatEntries:
        return dnat_entries(ruleset_json())

    def tables(self) -> set[tuple[str, str]]:
        return nftlb_tables(ruleset_json())

    def leftovers(self, farms: Iterable[str]) -> list[str]:
        return leftovers(ruleset_json(), farms)

    expected_service_elements = staticmethod(expected_service_elements)
    expected_dnat_entries = staticmethod(expected_dnat_entries)

    def assert_kernel(self, farms: Iterable[Farm]) -> None:
        """Exactly these farms' service elements and backend DNAT maps, nothing else."""
        farms = list(farms)
        assert self.service_elements() == expected_service_elements(farms)
        assert self.dnat_entries() == expected_dnat_entries(farms)

    def reset(self) -> None:
        """Delete every farm by name (never ``DELETE /farms``, which is what a bug would send);
        restart instead when there are many (faster), or when deleting left rules behind
        (nftlb 1.0.7 does, see test_nftlb_client_e2e.py)."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        with self.client() as c:
            names = [farm["name"] for farm in c.get_farms_document()["farms"]]
            if len(names) <= 50:
                for name in names:
                    c.delete_farm(name)
            remaining = c.get_farms_document()["farms"]
        if remaining or self.tables():
            self.restart()


@pytest.fixture(scope="session")
def nftlb_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NftlbDaemon]:
    daemon = NftlbDaemon(tmp_path_factory.mktemp("nftlb"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        daemon.delete_tables()  # nftlb leaves its rules in the kernel when it exits


@pytest.fixture
def clean_daemon(nftlb_daemon: NftlbDaemon) -> Iterator[NftlbDaemon]:
    """The session daemon with no farms and no nftlb tables, before and after the test; nor
    kube-nftlb's own table (``kube-nftlb run`` writes it)."""
    nftlb_daemon.reset()
    nft("delete", "table", "inet", "kube-nftlb", check=False)
    yield nftlb_daemon
    nftlb_daemon.reset()
    nft("delete", "table", "inet", "kube-nftlb", check=False)


@pytest.fixture
def client(clean_daemon: NftlbDaemon) -> Iterator[NftlbClient]:
    with clean_daemon.client() as c:
        yield c


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    """A fake Kubernetes API server on loopback, for a `kube-nftlb run` to list and watch."""
    with FakeApiServer() as server:
        yield server
