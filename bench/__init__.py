"""Benchmarks, run inside the testbed against the physical baseline measured in the same run."""
