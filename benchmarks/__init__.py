"""Benchmark-only model wrappers and the bare gRPC servicer that `scripts/bench.py` compares against."""
