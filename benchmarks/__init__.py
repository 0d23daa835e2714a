"""Benchmarks of the reconciler against the real nftlb daemon (root, private network namespace).

Plain scripts, not tests: timings are reported, never asserted. Run them with
``sudo .venv/bin/nox -s bench [-- --quick]`` or, inside a private network namespace,
``unshare -n env KUBE_NFTLB_BENCH_NETNS=1 .venv/bin/python -m benchmarks.run [--quick]``.
See docs/benchmarks.md for the method and the results.
"""
