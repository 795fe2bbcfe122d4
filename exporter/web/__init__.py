"""The HTTP side: the aiohttp app and its endpoints, where it listens, the bounds on its
connections, and ``--web.config.file`` (TLS, basic auth)."""
