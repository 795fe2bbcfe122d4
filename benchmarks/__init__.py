"""Benchmarks for chat-unread-exporter: ``python benchmarks/run.py`` (see README.md here)."""
