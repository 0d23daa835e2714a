"""Test doubles: the fake Kubernetes API server, the in-memory nftlb model, a private nftlb daemon.

For the demo, the tests and the benchmarks, like structlog.testing; the agent never imports them.
"""
