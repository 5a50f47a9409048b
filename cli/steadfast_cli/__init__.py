"""The ``steadfast`` command line: one entry point over the worker, operator and dev sandbox.

The top layer: it may import every other Steadfast package, and none imports it.
"""
