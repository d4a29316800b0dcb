"""Benchmarks of dbops.partitioning: ``python -m bench`` (``make bench``); see docs/benchmarks.md."""
