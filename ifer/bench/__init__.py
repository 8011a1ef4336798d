"""Benchmark helpers: synchronising timers, fast-path switches, throughput records (CSV + chart).

    pytest benchmark/ --benchmark-only          # see benchmark/README.md
"""
