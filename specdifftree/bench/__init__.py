"""Benchmarks: exactness on enumerable problems (and, later, speed)."""
