"""What a benchmark runs that is not one (make bench runs only benchmarks/*.py)."""
