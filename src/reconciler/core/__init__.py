"""The functional core: Kubernetes objects to farms, the diff and the plan, the wire format.

Pure values in, pure values out: no I/O, no clock, no environment. May import only attrs and the
standard library's pure parts; never a shell package (import-linter enforces it).
"""
