"""One module per chat provider, each implementing :mod:`exporter.providers.base`."""
