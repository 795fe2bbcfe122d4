"""The providers this exporter knows: adding one is a module plus one line here."""

from __future__ import annotations

from typing import Any

from exporter.providers import crisp, imkit, matrix, quickblox, sendbird
from exporter.providers.base import Provider

PROVIDERS: dict[str, Provider[Any]] = {
    provider.name: provider
    for provider in (
        crisp.PROVIDER,
        quickblox.PROVIDER,
        imkit.PROVIDER,
        sendbird.PROVIDER,
        matrix.PROVIDER,
    )
}
