"""Which Services and EndpointSlices this proxy serves: kube-proxy's label selector.

kube-proxy lists and watches both with `!service.kubernetes.io/service-proxy-name,
!service.kubernetes.io/headless`: a Service (or slice) labelled for another proxy, or marked
headless, is never read. With `--proxy-name NAME` kube-nftlb is a named proxy and the first term
becomes `service.kubernetes.io/service-proxy-name=NAME`. The agent hands the selector to its
informers so the API server filters; the core applies the same rule (`selected`) to everything it
is given, so `render` and `diff` on manifest files decide as `run` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from reconciler.core.kube import HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL

_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def proxy_name_error(proxy_name: str) -> str | None:
    """Why `proxy_name` cannot be a label value (the selector would be refused), or None."""
    if len(proxy_name) <= 63 and _LABEL_VALUE.fullmatch(proxy_name):
        return None
    return (
        f"--proxy-name {proxy_name!r} is not a label value: at most 63 characters of "
        "[A-Za-z0-9-_.], alphanumeric at both ends"
    )


def label_selector(proxy_name: str = "") -> str:
    """The label selector for listing and watching Services and EndpointSlices."""
    first = (
        f"{SERVICE_PROXY_NAME_LABEL}={proxy_name}" if proxy_name else f"!{SERVICE_PROXY_NAME_LABEL}"
    )
    return f"{first},!{HEADLESS_LABEL}"


def selected(labels: Iterable[tuple[str, str]], proxy_name: str = "") -> bool:
    """True when `label_selector(proxy_name)` selects an object with these labels."""
    found = dict(labels)
    if HEADLESS_LABEL in found:
        return False
    if proxy_name:
        return found.get(SERVICE_PROXY_NAME_LABEL) == proxy_name
    return SERVICE_PROXY_NAME_LABEL not in found
