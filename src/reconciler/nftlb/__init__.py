"""The shell's nftlb side: the HTTP client that reads farms back and applies plans.

May import the core and httpx; never the agent, the Kubernetes side or the test doubles.
"""
