"""The shell's node-kernel side: our own nftables table and conntrack cleanup.

May import the core; never the agent, the Kubernetes or nftlb sides, or the test doubles.
"""
