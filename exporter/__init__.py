"""chat-unread-exporter: Prometheus exporter for unread chat messages."""

__version__ = "0.1.0"
