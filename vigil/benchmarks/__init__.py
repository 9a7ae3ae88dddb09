"""Speed and memory benchmarks (`make bench`); every `bench_*.py` module is one section."""
