"""Integration tests: real worker, front door and Lambda processes on 127.0.0.1, model builds, ../shared data."""
