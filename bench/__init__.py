"""Benchmarks: run as scripts; the tests import their measures."""
