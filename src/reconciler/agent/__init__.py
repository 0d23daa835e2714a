"""The agent that wires the shell together: controller, daemon, settings, logs, metrics, health.

May import the core and every shell package; never the test doubles (reconciler.testing).
"""
