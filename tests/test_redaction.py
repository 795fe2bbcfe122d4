"""The account's redactor: configured, derived and obtained credentials removed alike."""

from __future__ import annotations

from exporter.redaction import RUNTIME_SECRETS_KEPT, Redactor


def test_a_derived_credential_holding_a_configured_one_is_redacted_whole() -> None:
    redactor = Redactor(["s3cret-key", "abc"])  # too short to redact: innocent text
    redactor.derived("Zm9vOnMzY3JldC1rZXk=s3cret-key.sig")
    text = "echo Zm9vOnMzY3JldC1rZXk=s3cret-key.sig and s3cret-key, abc"
    assert redactor.redact(text) == "echo <redacted> and <redacted>, abc"


def test_only_the_newest_obtained_credentials_are_kept() -> None:
    redactor = Redactor([])
    redactor.derived("lasting-token")
    tokens = [f"session-{i:02d}" for i in range(RUNTIME_SECRETS_KEPT + 1)]
    for token in tokens:
        redactor.obtained(token)
    shown = redactor.redact(" ".join(["lasting-token", *tokens]))
    assert shown.split() == ["<redacted>", tokens[0], *["<redacted>"] * RUNTIME_SECRETS_KEPT]
