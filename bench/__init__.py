"""Benchmarks: synthetic rulesets, evaluation micro-benchmarks and a gRPC load generator."""
