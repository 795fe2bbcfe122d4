"""Allows ``python -m exporter`` as well as the console script."""

from exporter.cli import main

raise SystemExit(main())
