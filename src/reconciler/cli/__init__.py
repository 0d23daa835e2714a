"""The command line: run, render, diff and the demo, plus the manifest-file reader.

May import everything; only the demo imports the test doubles.
"""
