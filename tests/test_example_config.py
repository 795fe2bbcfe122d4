"""The shipped config.example.yaml stays valid: every provider and option in it loads."""

from __future__ import annotations

from pathlib import Path

from exporter.configuration.loading import parse_config
from tests.support import ROOT


def test_example_config_loads_with_its_secrets_provided(tmp_path: Path) -> None:
    text = (ROOT / "config.example.yaml").read_text()
    for name in ("crisp_key", "qb_auth_secret"):
        (tmp_path / name).write_text(f"{name}-value\n")
        text = text.replace(f"/run/secrets/{name}", str(tmp_path / name))
    environ = {
        name: f"{name.lower()}-value"
        for name in (
            "CRISP_IDENTIFIER",
            "QB_API_KEY",
            "QB_AUTH_KEY",
            "QB_PASSWORD",
            "IMKIT_CLIENT_KEY",
            "IMKIT_TOKEN",
            "SENDBIRD_API_TOKEN",
            "INTERCOM_TOKEN",
            "STREAM_KEY",
            "STREAM_SECRET",
            "MATRIX_TOKEN",
            "CHATWOOT_TOKEN",
            "ZENDESK_TOKEN",
        )
    }
    config = parse_config(text, "config.example.yaml", environ=environ)

    assert [a.provider for a in config.accounts] == [
        "crisp",
        "quickblox",
        "quickblox",
        "imkit",
        "sendbird",
        "intercom",
        "stream",
        "matrix",
        "chatwoot",
        "zendesk",
    ]
    crisp = config.accounts[0]
    assert crisp.secret_values() == ["crisp_identifier-value", "crisp_key-value"]
    assert crisp.daily_request_budget == 5000
    assert crisp.timeout == 10.0
    assert config.accounts[3].cache_ttl == 30.0
    assert config.accounts[4].timeout == 0.5
    assert (
        config.accounts[4].api_root()
        == "https://api-2D7B4CDB-932F-4082-9B09-A1153792DC8D.sendbird.com"
    )
