"""Benchmarks and measurements (not tests): ``python -m sadpipe.bench.<module> --help``."""
