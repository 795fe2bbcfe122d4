"""A chat-unread-exporter provider plugin for Tincan, a made-up helpdesk chat API.

It exists to show, and to test, everything a third-party provider needs: a config model, a
fetcher that talks HTTP through the exporter's ``Upstream``, an entry point, and a simulator of
the API for its own tests.
"""
