"""Helpers that start real servers for the tests, the demo and the benchmark.

They live in the package (not under tests/) because `provisiond demo` and `bench/run`
need the very same private slapd the tests use.
"""
