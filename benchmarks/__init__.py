"""Side-by-side benchmarks of t5electra against transformers and CTranslate2.

    python -m benchmarks --quick          # < 5 min on 2 cores: one shape per case
    python -m benchmarks                  # the full run (< 40 min on 2 cores); writes BENCHMARKS.md
    t5electra bench --cases generate      # the same command through the CLI

See docs/performance.md for the method, and benchmarks/data_pipeline.py for the data pipeline alone.
"""
