"""Names of farms, addresses and backends: deterministic, unique, safe, and parseable back.

A farm name is ``k8s.<namespace>.<service>.<port>.<protocol>.<v4|v6>[.<frontend>]``:

* ``<port>`` is the Service port's name, or its number when the port is unnamed (a port name
  always holds a letter, so the two never collide);
* one farm serves one frontend (nftlb 1.0.7 mishandles farms with several addresses): the
  cluster IP's farm has no ``<frontend>`` segment; a node port's is ``n`` plus a short hash of the
  node address, an external IP's ``x`` plus a hash of it, a load-balancer IP's ``l`` plus a hash.

Kubernetes namespace, Service and port names hold no dots, so the segments split back
unambiguously. A name longer than nftlb's safe 63 characters is cut and ends in ``.h`` plus a
hash of the full name; such names are recognised, and `farm_name(key)` recomputes them exactly.
The ``k8s.`` prefix marks farms the reconciler owns; no other farm is ever changed or deleted.
"""

from __future__ import annotations

import base64
import hashlib
import re

from attrs import frozen

from reconciler.core.farms import NAME_RE, Family, Protocol

OWNED_PREFIX = "k8s."
MAX_NAME = 63
#: Frontend kinds and the letter their farm names carry.
NODE_PORT, EXTERNAL_IP, LOAD_BALANCER = "n", "x", "l"
_FRONTEND_RE = re.compile(r"[nxl][a-z2-7]{6}")
_HASH_LEN = 11
_SHORT_RE = re.compile(r"k8s\.[A-Za-z0-9._-]*\.h[a-z2-7]{11}")
_SEGMENT_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _digest(text: str, length: int) -> str:
    raw = hashlib.sha256(text.encode()).digest()
    return base64.b32encode(raw).decode().lower()[:length]


@frozen(order=True)
class FarmKey:
    """What a farm is made from: one port of one Service, one family, one frontend."""

    namespace: str
    service: str
    port: str
    protocol: Protocol
    family: Family
    frontend: str = ""

    @property
    def external(self) -> bool:
        """Node ports, external IPs and load-balancer IPs follow externalTrafficPolicy."""
        return self.frontend != ""

    @property
    def full_name(self) -> str:
        parts = [
            "k8s",
            self.namespace,
            self.service,
            self.port,
            self.protocol.value,
            self.family.short,
        ]
        if self.frontend:
            parts.append(self.frontend)
        return ".".join(parts)


def frontend_segment(kind: str, ip: str) -> str:
    """The name segment of a non-cluster-IP frontend: its kind and a hash of its address."""
    return f"{kind}{_digest(ip, 6)}"


def port_segment(port_name: str, port_number: int) -> str:
    return port_name or str(port_number)


def farm_name(key: FarmKey) -> str:
    full = key.full_name
    if len(full) <= MAX_NAME:
        return full
    cut = full[: MAX_NAME - _HASH_LEN - 2].rstrip(".-")
    return f"{cut}.h{_digest(full, _HASH_LEN)}"


def parse_farm_name(name: str) -> FarmKey | None:
    """The key a full-length owned name came from; None for foreign and shortened names."""
    parts = name.split(".")
    if len(parts) not in (6, 7) or parts[0] != "k8s" or len(name) > MAX_NAME:
        return None
    _, namespace, service, port, protocol, family, *scope = parts
    if not all(_SEGMENT_RE.fullmatch(p) for p in (namespace, service, port)):
        return None
    if scope and not _FRONTEND_RE.fullmatch(scope[0]):
        return None
    try:
        proto = Protocol(protocol)
        fam = {"v4": Family.IPV4, "v6": Family.IPV6}[family]
    except (ValueError, KeyError):
        return None
    key = FarmKey(namespace, service, port, proto, fam, scope[0] if scope else "")
    return key if farm_name(key) == name else None


def is_shortened(name: str) -> bool:
    return bool(_SHORT_RE.fullmatch(name)) and len(name) <= MAX_NAME


def is_owned(name: str) -> bool:
    """Owned farms are ours to change and delete; everything else in nftlb is left alone."""
    return bool(NAME_RE.fullmatch(name)) and (
        parse_farm_name(name) is not None or is_shortened(name)
    )


def address_name(farm: str) -> str:
    """nftlb's name for the address a farm's ``virtual-addr`` makes (its only one)."""
    return f"{farm}-addr"


def backend_name(ip: str, port: int) -> str:
    """Unique per (ip, port): endpoints without a targetRef never collapse into one backend."""
    return f"b-{ip.replace(':', '-')}-{port}"
