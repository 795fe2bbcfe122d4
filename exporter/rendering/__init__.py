"""Rendering, apart from fetching: metric families from results already fetched,
and a fast writer of the exposition formats. Nothing here does I/O."""
