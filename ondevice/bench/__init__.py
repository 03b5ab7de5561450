"""Benchmarks (``ondevice bench ...``): timings against peers in the same run, with the machine recorded."""
