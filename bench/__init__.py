"""The provisiond benchmark: `bench/run` (see bench/README.md)."""
