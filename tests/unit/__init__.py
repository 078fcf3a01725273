"""Unit tests: pure code, no processes, no ../shared; `pytest tests/unit` is the inner loop (< 15 s)."""
