"""The contract's "Providers beyond the four" example, verbatim: it loads with the values it
shows, ``--config.check`` accepts it, and the same file broken in one place is refused with
``file:line: path: problem`` (a new user's first three tries)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from exporter.configuration.loading import parse_config
from exporter.providers.intercom import IntercomAccount
from exporter.providers.matrix import MatrixAccount
from exporter.providers.stream import StreamAccount
from tests.support import EXE

# ../shared/contract.md, "Providers beyond the four", under an `accounts:` key.
EXAMPLE = """\
accounts:
  - name: team-matrix
    provider: matrix                    # Matrix client-server API (Synapse, Conduit, ...)
    base_url: https://matrix.example.org   # the homeserver; required
    access_token: ${MATRIX_TOKEN}       # the watched user's token (Authorization: Bearer)
    dialogs:
      - name: support
        room: "!AbCdEf:example.org"     # a room id, or an alias such as "#support:example.org"
      - name: all                       # no room: every joined room, summed
    # messages = unread_notifications.notification_count, mentions = highlight_count
  - name: acme-intercom
    provider: intercom
    access_token: ${INTERCOM_TOKEN}
    region: us                          # us (default) | eu | au: picks the API host
    dialogs:
      - name: inbox                     # open conversations waiting on the team
      - name: billing
        team_id: "5017691"              # only those assigned to a team
      - name: alice
        admin_id: "991267"              # only those assigned to a teammate
    # conversations and oldest_unread_timestamp_seconds, as for the Crisp backlog
  - name: acme-stream
    provider: stream                    # Stream Chat, server-side auth
    api_key: ${STREAM_KEY}
    api_secret: ${STREAM_SECRET}
    dialogs:
      - name: agent-42
        user_id: agent-42
        channel_type: messaging         # optional: only channels of this type
"""
ENV = {
    "MATRIX_TOKEN": "syt_matrix-token-1",
    "INTERCOM_TOKEN": "intercom-token-2",
    "STREAM_KEY": "stream-key-3",
    "STREAM_SECRET": "stream-secret-4",
}


def test_the_example_loads_with_the_values_it_shows() -> None:
    config = parse_config(EXAMPLE, "contract.yaml", environ=ENV, base_dir=Path("/nonexistent"))
    matrix, intercom, stream = config.accounts
    assert isinstance(matrix, MatrixAccount)
    assert matrix.api_root() == "https://matrix.example.org"
    assert matrix.access_token.get_secret_value() == "syt_matrix-token-1"
    assert [(d.name, d.room) for d in matrix.dialogs] == [
        ("support", "!AbCdEf:example.org"),
        ("all", None),
    ]
    assert isinstance(intercom, IntercomAccount)
    assert intercom.api_root() == "https://api.intercom.io"
    assert [(d.name, d.assignee) for d in intercom.dialogs] == [
        ("inbox", None),
        ("billing", ("team_assignee_id", "5017691")),
        ("alice", ("admin_assignee_id", "991267")),
    ]
    assert isinstance(stream, StreamAccount)
    assert (stream.api_key, stream.api_secret.get_secret_value()) == (
        "stream-key-3",
        ENV["STREAM_SECRET"],
    )
    assert stream.api_root() == "https://chat.stream-io-api.com"
    assert [(d.name, d.user_id, d.channel_type) for d in stream.dialogs] == [
        ("agent-42", "agent-42", "messaging")
    ]


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return subprocess.run(
        [str(EXE), f"--config.file={path}", "--config.check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV},
        cwd=tmp_path,
    )


def test_config_check_accepts_the_example(tmp_path: Path) -> None:
    result = check(tmp_path, EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "is valid: 3 accounts, 6 dialogs" in result.stdout


@pytest.mark.parametrize(
    ("old", "new", "line", "problem"),
    [
        pytest.param(
            "    base_url: https://matrix.example.org   # the homeserver; required\n",
            "",
            2,  # the account's line
            "accounts[0].base_url: required field is missing",
            id="matrix-without-homeserver",
        ),
        pytest.param(
            "region: us ",
            "region: mars ",
            14,
            "accounts[1].region: must be one of 'us', 'eu' or 'au'",
            id="intercom-unknown-region",
        ),
        pytest.param(
            '        team_id: "5017691"',
            '        team_id: "5017691"\n        admin_id: "991267"',
            17,  # the dialog's line
            "accounts[1].dialogs[1]: set team_id or admin_id, not both",
            id="intercom-two-assignees",
        ),
        pytest.param(
            "    api_secret: ${STREAM_SECRET}\n",
            "",
            22,  # the account's line
            "accounts[2].api_secret: required field is missing",
            id="stream-without-secret",
        ),
    ],
)
def test_config_check_refuses_a_broken_example_at_its_line(
    tmp_path: Path, old: str, new: str, line: int, problem: str
) -> None:
    assert old in EXAMPLE
    result = check(tmp_path, EXAMPLE.replace(old, new, 1))
    assert result.returncode == 1
    assert f"{tmp_path / 'config.yaml'}:{line}: {problem}" in result.stderr, result.stderr
