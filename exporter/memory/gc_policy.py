"""The garbage collector's policy for a process whose scrapes hold many objects at once.

CPython collects its youngest generation every 700 net allocations of container objects, a
threshold made for small heaps. A scrape keeps every upstream request in flight at once (900
requests of 300 accounts at 200 ms latency, issue 10), each with its response, futures, task
and frames: while they are alive the collector ran about 100 times per scrape, traversing them
again and again, and freed nothing (a scrape makes no cyclic garbage). That was a third of the
exporter's CPU per scrape (measured with ``gc.callbacks``), half again the cost of the requests
themselves.

The count that triggers a collection is of live objects (a freed object is taken off it), so a
threshold above what one scrape holds at its peak lets a scrape run without a collection; the
cyclic garbage a failure can leave (an exception and its frames) is still collected after this
many allocations, and then by the older generations as before.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 100_000


def apply() -> None:
    """Raise the youngest generation's threshold; the older generations keep theirs."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
