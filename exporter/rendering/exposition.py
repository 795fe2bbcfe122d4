"""A fast writer of the exposition formats for the exporter's own metric families.

prometheus_client's encoders format every sample on its own: each label name is checked and
escaped, every label set sorted and every value converted afresh. At hundreds of accounts that
was about a sixth of a scrape's CPU (issue 10: a scrape of 300 accounts x 3 dialogs exposes
about 8,000 series, nearly half of them per-account self-metrics). The
exporter's families are plain gauges and counters whose few label and metric names repeat on
every sample, so this writer escapes each name once per render and only label values and
numbers per sample.

Its output is byte for byte prometheus_client's (``tests/test_render.py`` compares them on
fuzzed label values, parses both formats back and runs ``promtool check metrics``); families it
does not handle (histograms, timestamps, exemplars, units) raise rather than render wrongly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Names outside the legacy character set are quoted in the UTF-8 escaping scheme, a layout this
# writer does not produce: such names are refused.
from prometheus_client.validation import (
    _is_valid_legacy_labelname,
    _is_valid_legacy_metric_name,
)

__all__ = ["encoder_for", "render"]

_go_float: Callable[[float], str] = floatToGoString  # untyped in prometheus_client

OPENMETRICS = "application/openmetrics-text"
# The suffix each supported family type gives its samples' names.
_SAMPLE_SUFFIX = {"gauge": "", "counter": "_total"}


def encoder_for(content_type: str) -> Callable[[Collector], bytes]:
    """The renderer for the format and name escaping that ``content_type`` announces.

    ``content_type`` is what prometheus_client's ``choose_encoder`` chose, so content
    negotiation stays prometheus_client's: OpenMetrics or the Prometheus text format, and the
    ``escaping`` parameter it names (underscores when it names none).
    """
    params = dict(part.strip().split("=", 1) for part in content_type.split(";")[1:] if "=" in part)
    escaping = params.get(om.ESCAPING_HEADER_TAG, om.UNDERSCORES)
    return partial(render, openmetrics=content_type.startswith(OPENMETRICS), escaping=escaping)


def render(
    registry: Collector, *, openmetrics: bool = False, escaping: str = om.UNDERSCORES
) -> bytes:
    """Every family the registry collects, in OpenMetrics or the Prometheus text format."""
    out: list[str] = []
    values: dict[float, str] = {}  # most values repeat (0 and 1): format each once
    texts: dict[str, str] = {}  # label values repeat too (accounts, dialogs): escape each once
    for family in registry.collect():
        out.extend(_family_lines(family, openmetrics, escaping, values, texts))
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")


def _family_lines(
    family: Metric,
    openmetrics: bool,
    escaping: str,
    values: dict[float, str],
    texts: dict[str, str],
) -> Iterator[str]:
    suffix = _SAMPLE_SUFFIX.get(family.type)
    if suffix is None or family.unit:
        raise ValueError(f"{family.name}: a {family.type} family is not rendered here")
    sample_name = family.name + suffix
    if not _is_valid_legacy_metric_name(sample_name):
        raise ValueError(f"{sample_name!r} is not a legacy Prometheus name")
    name = om.escape_metric_name(family.name if openmetrics else sample_name, escaping)
    if openmetrics:
        help_ = om._escape(family.documentation, om.ALLOWUTF8, om._is_legacy_labelname_rune)
    else:
        help_ = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    yield f"# HELP {name} {help_}\n# TYPE {name} {family.type}\n"
    if openmetrics:  # prometheus_client escapes OpenMetrics sample names unconditionally
        line_start = om._escape(sample_name, escaping, om._is_legacy_labelname_rune)
    else:
        line_start = om.escape_metric_name(sample_name, escaping)
    # Label names, sorted and escaped, per distinct set of names (a family has one or two).
    layouts: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for sample in family.samples:
        if sample.name != sample_name:
            raise ValueError(f"{family.name}: sample {sample.name} is not rendered here")
        if sample.timestamp is not None or sample.exemplar or sample.native_histogram:
            raise ValueError(f"{family.name}: timestamps and exemplars are not rendered here")
        value = values.get(sample.value)
        if value is None:
            value = values[sample.value] = _go_float(sample.value)
        labels = sample.labels
        if not labels:
            yield f"{line_start} {value}\n"
            continue
        keys = tuple(labels)
        layout = layouts.get(keys)
        if layout is None:
            layout = layouts[keys] = _layout(keys, escaping)
        order, prefixes = layout
        pairs = []
        for key, prefix in zip(order, prefixes, strict=True):
            text = labels[key]
            escaped = texts.get(text)
            if escaped is None:
                escaped = texts[text] = (
                    text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
                )
            pairs.append(prefix + escaped)
        yield f'{line_start}{{{"".join(pairs)}"}} {value}\n'


def _layout(keys: tuple[str, ...], escaping: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Label names in output order and the text before each value (``,name="``)."""
    order = tuple(sorted(keys))
    for key in order:
        if not _is_valid_legacy_labelname(key):
            raise ValueError(f"label {key!r} is not a legacy Prometheus name")
    prefixes = tuple(
        ("" if i == 0 else '",') + om.escape_label_name(key, escaping) + '="'
        for i, key in enumerate(order)
    )
    return order, prefixes
