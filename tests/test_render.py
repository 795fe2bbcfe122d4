"""The exporter's renderer against prometheus_client's encoders, parsers and promtool.

The renderer (``exporter.rendering.exposition``) replaces prometheus_client's encoders on
/metrics for speed, so it must write the same bytes. Label values are fuzzed with what escaping
must handle (quotes, backslashes, newlines, other control characters, non-ASCII text), in both
text formats and every name-escaping scheme a scraper can ask for; the output is parsed back
by prometheus_client's parsers and checked by ``promtool check metrics``.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable, Iterable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.rendering.exposition import encoder_for, render
from tests.support import prometheus_tool

# The OpenMetrics parser is untyped in prometheus_client.
parse_openmetrics: Callable[[str], Iterable[Metric]] = (
    openmetrics_parser.text_string_to_metric_families
)

ALPHABET = ['"', "\\", "\n", "\r", "\t", "{", "}", ",", "=", " ", "#", "a", "Z", "0", "é", "ß"]
ALPHABET += ["日本", "😀", "\u2028", "\\n", '\\"', "_total"]
SEEDS = range(5)
ACCEPT_HEADERS = {
    "text 0.0.4": "",
    "text 1.0.0 utf-8": "text/plain; version=1.0.0; escaping=allow-utf-8",
    "openmetrics 1.0.0": "application/openmetrics-text; version=1.0.0",
    "openmetrics dots": "application/openmetrics-text; version=1.0.0; escaping=dots",
    "openmetrics 2.0.0 values": "application/openmetrics-text; version=2.0.0; escaping=values",
}


HELP = 'Help with \\ and "quotes"\nand a newline.'


def fuzzed(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 12)))


class Families:
    """The shapes the exporter's collectors produce, with fuzzed label values."""

    def __init__(self, seed: int, help_: str = HELP) -> None:
        self._seed = seed
        self._help = help_

    def collect(self) -> Iterator[Metric]:
        rng = random.Random(self._seed)
        dialog = GaugeMetricFamily("chat_unread_messages", self._help, labels=["b", "a"])
        errors = CounterMetricFamily(
            "chat_unread_fetch_errors", "Errors.", labels=["provider", "account", "reason"]
        )
        for i in range(40):
            dialog.add_metric([fuzzed(rng), fuzzed(rng)], rng.choice([0, 1, i, 1e22, 0.5, 2**53]))
            errors.add_metric([fuzzed(rng), fuzzed(rng), "timeout"], float(i))
        yield dialog
        yield errors
        yield GaugeMetricFamily("chat_unread_exporter_build_info", "Build.", value=1.0)
        yield GaugeMetricFamily("chat_unread_empty", "No samples.", labels=["x"])


def registry(seed: int, help_: str = HELP) -> CollectorRegistry:
    built = CollectorRegistry(auto_describe=False)
    built.register(Families(seed, help_))
    return built


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("accept", ACCEPT_HEADERS.values(), ids=ACCEPT_HEADERS.keys())
def test_same_bytes_as_prometheus_client(accept: str, seed: int) -> None:
    encoder, content_type = choose_encoder(accept)
    assert encoder_for(content_type)(registry(seed)) == encoder(registry(seed))


def _samples(families: Iterable[Metric]) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in families for s in family.samples]


@pytest.mark.parametrize("seed", SEEDS)
def test_text_format_parses_back_to_the_samples(seed: int) -> None:
    body = render(registry(seed)).decode()
    expected = _samples(Families(seed).collect())
    assert _samples(parse_text(body)) == expected


@pytest.mark.parametrize("seed", SEEDS)
def test_openmetrics_parses_back_to_the_samples(seed: int) -> None:
    body = render(registry(seed), openmetrics=True).decode()
    expected = _samples(Families(seed).collect())
    assert _samples(parse_openmetrics(body)) == expected


@pytest.mark.parametrize("seed", SEEDS)
def test_promtool_accepts_the_text_format(seed: int) -> None:
    checked = subprocess.run(
        [prometheus_tool("promtool"), "check", "metrics"],
        input=render(registry(seed)),
        capture_output=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("seed", SEEDS)
def test_promtool_parses_openmetrics(seed: int) -> None:
    """promtool (2.42) reads OpenMetrics with the text format's parser. So the HELP text has no
    quote (OpenMetrics escapes it, which the text format refuses), and its linter misses a
    counter's HELP, which OpenMetrics gives the family name without ``_total``: that lint
    finding (exit 3), and only it, is expected. Exit 1 would be a parse error."""
    checked = subprocess.run(
        [prometheus_tool("promtool"), "check", "metrics"],
        input=render(registry(seed, "Help with \\ and a\nnewline."), openmetrics=True),
        capture_output=True,
        check=False,
    )
    problems = (checked.stdout + checked.stderr).decode().splitlines()
    assert checked.returncode in (0, 3), problems
    assert problems == ["chat_unread_fetch_errors_total no help text"]


class Unsupported:
    """A family type the renderer does not write."""

    def collect(self) -> Iterator[Metric]:
        yield HistogramMetricFamily("latency", "Latency.", buckets=[("+Inf", 1.0)], sum_value=1.0)


def test_refuses_what_it_does_not_render() -> None:
    unsupported = CollectorRegistry(auto_describe=False)
    unsupported.register(Unsupported())
    with pytest.raises(ValueError, match="histogram"):
        render(unsupported)
