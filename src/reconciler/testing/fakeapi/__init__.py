"""A faithful fake Kubernetes API server for tests, demos and benchmarks (stdlib only).

The unmodified official ``kubernetes`` client talks to it over real HTTP on 127.0.0.1::

    with FakeApiServer() as fake:
        cfg = kubernetes.client.Configuration()
        cfg.host = fake.url
        api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(cfg))

It serves Services (+``/status``), Endpoints, EndpointSlices (discovery.k8s.io/v1), Nodes
(+``/status``), Events (core v1 and events.k8s.io/v1, one shared store) and Leases
(coordination.k8s.io/v1). It follows sections 3 and 4 of the kube-api-fake research notes:
one global integer resourceVersion, server-set metadata, Service clusterIP/nodePort
allocation, list/watch with label and field selectors and the DELETED/ADDED edge rule,
resumable watches with a bounded history and 410 ``Expired``, bookmarks, ``timeoutSeconds``,
optimistic concurrency, the four PATCH content types, finalizers, and JSON ``Status`` errors.

Simplified or left out, on purpose:

* ``limit``/``continue`` are ignored: every list is one page (the API allows that).
* ``resourceVersionMatch=Exact`` only succeeds for the current RV (older ones get 410).
* Server-side apply (``application/apply-patch+yaml``) needs ``fieldManager`` and creates
  missing objects, but is applied as a strategic merge: no managedFields, no ownership, no
  conflicts, and fields left out of a later apply are not removed. Bodies must be JSON
  (which is valid YAML); real YAML is answered with 400.
* Strategic merge knows only the patch-merge keys of the lists these kinds have
  (``patches.STRATEGIC_LISTS``); ``$setElementOrder`` is ignored.
* No admission, no namespaces (any namespace exists), little validation beyond names,
  immutable clusterIP and resourceVersion/UID preconditions; no ``dryRun`` (400); no
  discovery endpoints (``/api``, ``/apis`` answer a 404 Status); no protobuf/CBOR, no auth.
* Field selectors: ``metadata.name``/``metadata.namespace`` everywhere, plus the Event and
  Node ones; Services reject others with the v1.20 message.
* A watch without ``timeoutSeconds`` ends after ``default_watch_timeout`` (60 s); a watch that
  falls ``watch_queue_size`` events behind is ended cleanly, as the apiserver does.
* Test hooks write ``.status`` as given (as if its controller had already set it); the HTTP
  verbs follow the ``/status`` subresource rules.
"""

from .errors import ApiError
from .server import FakeApiServer, RequestRecord

__all__ = ["ApiError", "FakeApiServer", "RequestRecord"]
