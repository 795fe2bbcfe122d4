"""What was built and what runs it: ``chat_unread_exporter_build_info`` and the process metrics.

``build_info`` carries the labels of Prometheus' common build info (``version``, ``revision``,
``branch``, and the runtime's version, ``goversion`` there, ``pythonversion`` here). A Python
package has no linker flags to stamp a revision with, so the revision and branch come from a
``BUILD_INFO`` file in the package (``revision=...`` and ``branch=...`` lines) that a build
writes before installing (``scripts/stamp-build``); without it they are ``unknown``, which is
the truth about a build nobody stamped.

The process metrics (``process_*``, ``python_info``, ``python_gc_*``) are those of
prometheus_client's own collectors, read *before* rendering like everything else the exporter
serves: the collectors on a scrape's registry only format what was already read.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__

__all__ = ["BUILD", "BUILD_INFO_FILE", "BuildInfo", "RuntimeMetrics"]

BUILD_INFO_FILE: Final = Path(__file__).with_name("BUILD_INFO")
UNKNOWN: Final = "unknown"


@dataclass(frozen=True)
class BuildInfo:
    """The labels of ``chat_unread_exporter_build_info``."""

    version: str
    revision: str = UNKNOWN
    branch: str = UNKNOWN
    pythonversion: str = platform.python_version()

    @classmethod
    def read(cls, path: Path = BUILD_INFO_FILE) -> BuildInfo:
        """This installation's build info: the stamped file's revision and branch, if any."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return cls(__version__)
        stamped = _key_values(text)
        return cls(
            __version__,
            revision=stamped.get("revision") or UNKNOWN,
            branch=stamped.get("branch") or UNKNOWN,
        )

    def metric(self, name: str) -> GaugeMetricFamily:
        """The ``build_info`` family, value 1, one label per field."""
        labels = {
            "version": self.version,
            "revision": self.revision,
            "branch": self.branch,
            "pythonversion": self.pythonversion,
        }
        family = GaugeMetricFamily(
            name,
            "A metric with a constant '1' value labeled by version, revision, branch, and "
            "pythonversion from which chat-unread-exporter was built.",
            labels=list(labels),
        )
        family.add_metric(list(labels.values()), 1.0)
        return family


def _key_values(text: str) -> Mapping[str, str]:
    pairs = (line.partition("=") for line in text.splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


BUILD: Final = BuildInfo.read()


class RuntimeMetrics(Collector):
    """The process's own metrics, read when this is made and served as they were then."""

    def __init__(self) -> None:
        scratch = CollectorRegistry(auto_describe=False)
        for source in (ProcessCollector, PlatformCollector, GCCollector):
            source(registry=scratch)
        self._families = list(scratch.collect())

    def collect(self) -> Iterator[Metric]:
        yield from self._families
