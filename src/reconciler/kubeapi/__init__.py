"""The shell's Kubernetes API side: list/watch informers and Event writes.

May import the core and the kubernetes client; never the agent, the nftlb side or the test doubles.
"""
