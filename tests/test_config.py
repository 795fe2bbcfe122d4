"""The config loader: what a valid file becomes, and how an invalid one is refused.

Every refusal is checked for the exact ``file:line: field.path:`` it names, because that is what
makes a message actionable; and no message may quote a credential, wherever it was written.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from exporter.configuration.loading import (
    MAX_NODES,
    ConfigError,
    ExporterConfig,
    load_config,
    parse_config,
)
from exporter.fetching.registry import PROVIDERS
from exporter.models import AccountConfig
from exporter.providers.crisp import CrispAccount
from exporter.providers.imkit import IMKitAccount
from exporter.providers.quickblox import QuickBloxAccount
from exporter.providers.sendbird import SendbirdAccount

SOURCE = "conf.yaml"

# The example from the user-facing contract, verbatim but for the key file's path.
CONTRACT_EXAMPLE = """\
accounts:
  - name: acme-crisp            # label value `account`; unique
    provider: crisp
    website_id: 8c842203-7ed8-4e29-a608-7cf78a7d2fcc
    tier: plugin                        # X-Crisp-Tier: plugin (default) | website
    identifier: ${CRISP_IDENTIFIER}     # ${VAR} expands from the environment
    key_file: {KEY_FILE}    # any secret field X also accepts X_file
    dialogs:
      - name: backlog                   # label value `dialog`; unique within the account
        # no session_id: the whole website's open conversations (the support backlog):
        # unread messages waiting for operators, conversations with unread, oldest waiting
      - name: vip-visitor
        session_id: session_700c65e1-85e2-465a-b9ac-ecb5ec2c9881
        side: visitor                   # visitor (default, as the Crisp SDK counts) | operator
  - name: qb-support
    provider: quickblox
    api_key: ${QB_API_KEY}              # Authorization: ApiKey ... with On-Behalf-Of
    on_behalf_of: 123
    # or token: ${QB_TOKEN} (QB-Token), or application_id/auth_key/auth_secret(+login/password)
    # to create and renew the session token
    dialogs:
      - name: all                       # no dialog_id: the user's total across dialogs
      - name: escalations
        dialog_id: 5d753421a28f9a2596cb0f98
  - name: imkit-app
    provider: imkit
    base_url: https://your-app.imkit.io
    client_key: ${IMKIT_CLIENT_KEY}
    token: ${IMKIT_TOKEN}
    dialogs:
      - name: work
        room_tags: [work, project]      # omitted: all rooms
  - name: sb-prod
    provider: sendbird
    application_id: 2D7B4CDB-932F-4082-9B09-A1153792DC8D
    api_token: ${SENDBIRD_API_TOKEN}
    dialogs:
      - name: agent-42
        user_id: agent-42
        custom_types: [support]         # optional filter
        channels: all                   # all (default) | super_group | non_super_group
"""
CONTRACT_ENV = {
    "CRISP_IDENTIFIER": "crisp-identifier-1",
    "QB_API_KEY": "qb-api-key-2",
    "IMKIT_CLIENT_KEY": "imkit-client-key-3",
    "IMKIT_TOKEN": "imkit-token-4",
    "SENDBIRD_API_TOKEN": "sendbird-token-5",
}

# One small valid account per provider (two-space list indent, as under ``accounts:``).
SENDBIRD = """\
accounts:
  - name: sb
    provider: sendbird
    application_id: APP-1
    api_token: sb-token
    dialogs:
      - name: agent
        user_id: agent-42
"""
CRISP = """\
accounts:
  - name: cr
    provider: crisp
    website_id: site-1
    identifier: crisp-id
    key: crisp-key
    dialogs:
      - name: backlog
"""
QB_API_KEY = """\
accounts:
  - name: qb
    provider: quickblox
    api_key: qb-key
    on_behalf_of: 7
    dialogs:
      - name: all
"""
QB_TOKEN = """\
accounts:
  - name: qb
    provider: quickblox
    token: qb-session-token
    dialogs:
      - name: all
"""
QB_APP = """\
accounts:
  - name: qb
    provider: quickblox
    application_id: 76730
    auth_key: qb-auth-key
    auth_secret: qb-auth-secret
    login: agent
    password: agent-password
    dialogs:
      - name: all
"""
IMKIT = """\
accounts:
  - name: im
    provider: imkit
    base_url: https://app.imkit.example
    client_key: im-client
    token: im-token
    dialogs:
      - name: all
"""
STREAM = """\
accounts:
  - name: st
    provider: stream
    api_key: streamkey
    api_secret: st-secret
    dialogs:
      - name: agent
        user_id: agent-42
"""
INTERCOM = """\
accounts:
  - name: ic
    provider: intercom
    access_token: ic-token
    dialogs:
      - name: inbox
"""
CHATWOOT = """\
accounts:
  - name: cw
    provider: chatwoot
    account_id: 3
    api_access_token: cw-token
    dialogs:
      - name: backlog
"""
MATRIX = """\
accounts:
  - name: mx
    provider: matrix
    base_url: https://matrix.example.org
    access_token: mx-token
    dialogs:
      - name: all
"""
ZENDESK_TOKEN = """\
accounts:
  - name: zd
    provider: zendesk
    subdomain: acme
    email: agent@example.com
    api_token: zd-token
    dialogs:
      - name: unsolved
        query: status<solved
"""
ZENDESK_OAUTH = ZENDESK_TOKEN.replace(
    "    email: agent@example.com\n    api_token: zd-token\n", "    oauth_token: zd-oauth\n"
)


AccountT = TypeVar("AccountT", bound=AccountConfig)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based number of the ``occurrence``-th line containing ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} is not in the test's YAML {occurrence} times"
    return hits[occurrence - 1]


def with_fields(text: str, *lines: str) -> str:
    """``text`` with ``lines`` added to its first account (right after ``provider:``)."""
    head, provider_line, tail = re.split(r"(?m)^(    provider: .*\n)", text, maxsplit=1)
    return head + provider_line + "".join(f"    {line}\n" for line in lines) + tail


def without(text: str, needle: str) -> str:
    """``text`` without the one line that contains ``needle``."""
    kept = [line for line in text.splitlines(keepends=True) if needle not in line]
    assert len(kept) == len(text.splitlines()) - 1, f"{needle!r} must be on exactly one line"
    return "".join(kept)


def load(text: str, environ: dict[str, str] | None = None) -> ExporterConfig:
    return parse_config(text, SOURCE, environ=environ or {}, base_dir=Path("/nonexistent"))


def refuse(text: str, environ: dict[str, str] | None = None) -> list[str]:
    """The problems of a config that must not load; the exception's text lists them all."""
    with pytest.raises(ConfigError) as caught:
        load(text, environ)
    assert caught.value.problems, "a ConfigError must say what is wrong"
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def only_problem(text: str, environ: dict[str, str] | None = None) -> str:
    problems = refuse(text, environ)
    assert len(problems) == 1, problems
    return problems[0]


def account(config: ExporterConfig, name: str, kind: type[AccountT]) -> AccountT:
    found = config.account(name)
    assert isinstance(found, kind), found
    return found


# --------------------------------------------------------------------------------------------
# Valid files


def test_contract_example_loads_with_expected_values(tmp_path: Path) -> None:
    key_file = tmp_path / "crisp_key"
    key_file.write_text("crisp-key-from-file\n")
    config = load(CONTRACT_EXAMPLE.replace("{KEY_FILE}", str(key_file)), CONTRACT_ENV)

    assert config.source == SOURCE
    assert [(a.name, a.provider) for a in config.accounts] == [
        ("acme-crisp", "crisp"),
        ("qb-support", "quickblox"),
        ("imkit-app", "imkit"),
        ("sb-prod", "sendbird"),
    ]
    for each in config.accounts:  # the defaults the contract promises
        assert (each.timeout, each.cache_ttl) == (5.0, 0.0)
        assert (each.max_concurrency, each.daily_request_budget) == (8, None)

    crisp = account(config, "acme-crisp", CrispAccount)
    assert crisp.website_id == "8c842203-7ed8-4e29-a608-7cf78a7d2fcc"
    assert crisp.tier == "plugin"
    assert crisp.identifier.get_secret_value() == "crisp-identifier-1"
    assert crisp.key.get_secret_value() == "crisp-key-from-file"  # trailing newline stripped
    assert crisp.base_url is None
    assert crisp.api_root() == "https://api.crisp.chat"
    assert [(d.name, d.session_id, d.side) for d in crisp.dialogs] == [
        ("backlog", None, None),
        ("vip-visitor", "session_700c65e1-85e2-465a-b9ac-ecb5ec2c9881", "visitor"),
    ]

    qb = account(config, "qb-support", QuickBloxAccount)
    assert qb.api_key is not None
    assert qb.api_key.get_secret_value() == "qb-api-key-2"
    assert qb.on_behalf_of == 123
    assert (qb.token, qb.application_id, qb.login) == (None, None, None)
    assert qb.api_root() == "https://api.quickblox.com"
    assert [(d.name, d.dialog_id) for d in qb.dialogs] == [
        ("all", None),
        ("escalations", "5d753421a28f9a2596cb0f98"),
    ]

    imkit = account(config, "imkit-app", IMKitAccount)
    assert imkit.api_root() == "https://your-app.imkit.io"
    assert imkit.client_key.get_secret_value() == "imkit-client-key-3"
    assert imkit.token.get_secret_value() == "imkit-token-4"
    assert [(d.name, d.room_tags) for d in imkit.dialogs] == [("work", ("work", "project"))]

    sendbird = account(config, "sb-prod", SendbirdAccount)
    assert sendbird.application_id == "2D7B4CDB-932F-4082-9B09-A1153792DC8D"
    assert sendbird.api_token.get_secret_value() == "sendbird-token-5"
    assert sendbird.api_root() == "https://api-2D7B4CDB-932F-4082-9B09-A1153792DC8D.sendbird.com"
    assert [(d.name, d.user_id, d.custom_types, d.channels) for d in sendbird.dialogs] == [
        ("agent-42", "agent-42", ("support",), "all")
    ]

    assert config.account("no-such-account") is None
    shown = repr(config)  # models hold secrets as SecretStr: a repr (e.g. in a log) hides them
    for secret in [*CONTRACT_ENV.values(), "crisp-key-from-file"]:
        assert secret not in shown


def test_defaults_for_omitted_optional_fields() -> None:
    crisp_text = CRISP + "      - name: vip\n        session_id: s-1\n"
    crisp = account(load(crisp_text), "cr", CrispAccount)
    assert crisp.tier == "plugin"
    assert [(d.session_id, d.side) for d in crisp.dialogs] == [(None, None), ("s-1", None)]

    sendbird = account(load(SENDBIRD), "sb", SendbirdAccount)
    assert (sendbird.dialogs[0].custom_types, sendbird.dialogs[0].channels) == ((), "all")
    assert sendbird.api_root() == "https://api-APP-1.sendbird.com"

    imkit = account(load(IMKIT), "im", IMKitAccount)
    assert imkit.dialogs[0].room_tags == ()


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("12", 12.0),
        ("2.5", 2.5),
        (12, 12.0),
        (0.25, 0.25),
    ],
)
def test_durations_take_prometheus_strings_or_seconds(raw: str | float, seconds: float) -> None:
    config = load(with_fields(SENDBIRD, f"timeout: {raw}", f"cache_ttl: {raw}"))
    assert (config.accounts[0].timeout, config.accounts[0].cache_ttl) == (seconds, seconds)


def test_other_account_wide_settings() -> None:
    text = with_fields(SENDBIRD, "max_concurrency: 3", "daily_request_budget: 5000")
    config = load(text)
    assert (config.accounts[0].max_concurrency, config.accounts[0].daily_request_budget) == (
        3,
        5000,
    )


@pytest.mark.parametrize(
    ("template", "name"), [(CRISP, "cr"), (QB_API_KEY, "qb"), (SENDBIRD, "sb"), (IMKIT, "im")]
)
def test_base_url_trailing_slash_is_stripped(template: str, name: str) -> None:
    text = without(template, "base_url:") if "base_url:" in template else template
    config = load(with_fields(text, "base_url: http://127.0.0.1:8080/"))
    found = config.account(name)
    assert found is not None
    assert found.base_url == "http://127.0.0.1:8080"
    assert found.api_root() == "http://127.0.0.1:8080"


def test_env_references_expand_anywhere_in_a_value() -> None:
    text = with_fields(
        without(IMKIT, "base_url:"),
        "base_url: https://${IMKIT_HOST}:${IMKIT_PORT}/",
        "timeout: ${TIMEOUT}",
    ).replace("token: im-token", "token: ${IMKIT_TOKEN}")
    environ = {
        "IMKIT_HOST": "chat.example",
        "IMKIT_PORT": "8443",
        "TIMEOUT": "1m30s",
        "IMKIT_TOKEN": "tok-$-with-dollar",
    }
    imkit = account(load(text, environ), "im", IMKitAccount)
    assert imkit.api_root() == "https://chat.example:8443"
    assert imkit.timeout == 90.0
    assert imkit.token.get_secret_value() == "tok-$-with-dollar"

    qb_text = QB_API_KEY.replace("on_behalf_of: 7", "on_behalf_of: ${QB_USER}")
    assert account(load(qb_text, {"QB_USER": "123"}), "qb", QuickBloxAccount).on_behalf_of == 123

    # Only ${NAME} is a reference; a bare $NAME is kept as written.
    literal = SENDBIRD.replace("user_id: agent-42", "user_id: $HOME")
    assert account(load(literal), "sb", SendbirdAccount).dialogs[0].user_id == "$HOME"


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_CONFIG_SB_TOKEN", "token-from-process-env")
    text = SENDBIRD.replace("api_token: sb-token", "api_token: ${TEST_CONFIG_SB_TOKEN}")
    sendbird = account(parse_config(text, SOURCE), "sb", SendbirdAccount)
    assert sendbird.api_token.get_secret_value() == "token-from-process-env"


def test_missing_env_variables_are_each_named_with_their_line() -> None:
    text = with_fields(SENDBIRD, "timeout: ${SB_TIMEOUT}").replace(
        "api_token: sb-token", "api_token: ${SB_TOKEN}"
    )
    # One problem per variable: the empty value left behind is not reported a second time.
    assert refuse(text) == [
        f"{SOURCE}:{line_of(text, 'timeout:')}: accounts[0].timeout: "
        "environment variable SB_TIMEOUT is not set",
        f"{SOURCE}:{line_of(text, 'api_token:')}: accounts[0].api_token: "
        "environment variable SB_TOKEN is not set",
    ]
    # Set but empty is a different mistake, reported as such for a secret.
    assert refuse(text, {"SB_TIMEOUT": "5s", "SB_TOKEN": ""}) == [
        f"{SOURCE}:{line_of(text, 'api_token:')}: accounts[0].api_token: must not be empty"
    ]


def test_yaml_merge_keys_share_settings_between_accounts() -> None:
    text = """\
accounts:
  - &sendbird
    name: sb-a
    provider: sendbird
    application_id: APP-1
    api_token: sb-token
    timeout: 3s
    dialogs:
      - name: agent
        user_id: agent-42
  - <<: *sendbird
    name: sb-b
    timeout: 7s
"""
    config = load(text)
    accounts = [account(config, name, SendbirdAccount) for name in ("sb-a", "sb-b")]
    assert [(a.name, a.timeout, a.dialogs[0].user_id) for a in accounts] == [
        ("sb-a", 3.0, "agent-42"),
        ("sb-b", 7.0, "agent-42"),
    ]
    bad = text.replace("<<: *sendbird", "<<: 5")
    assert f"{SOURCE}:{line_of(bad, '<<: 5')}: accounts[1]: << must merge a mapping" in "\n".join(
        refuse(bad)
    )


# --------------------------------------------------------------------------------------------
# Secrets from files

SECRET_FIELDS = [
    ("crisp", CRISP, "identifier"),
    ("crisp", CRISP, "key"),
    ("quickblox", QB_API_KEY, "api_key"),
    ("quickblox", QB_TOKEN, "token"),
    ("quickblox", QB_APP, "auth_key"),
    ("quickblox", QB_APP, "auth_secret"),
    ("quickblox", QB_APP, "password"),
    ("imkit", IMKIT, "client_key"),
    ("imkit", IMKIT, "token"),
    ("sendbird", SENDBIRD, "api_token"),
    ("intercom", INTERCOM, "access_token"),
    ("stream", STREAM, "api_secret"),
    ("matrix", MATRIX, "access_token"),
    ("chatwoot", CHATWOOT, "api_access_token"),
    ("zendesk", ZENDESK_TOKEN, "api_token"),
    ("zendesk", ZENDESK_OAUTH, "oauth_token"),
]


def test_secret_file_cases_cover_every_secret_field() -> None:
    declared = {
        (name, field)
        for name, provider in PROVIDERS.items()
        for field in provider.account_model.secret_fields
    }
    assert {(provider, field) for provider, _, field in SECRET_FIELDS} == declared


def as_file_reference(template: str, field: str, path: str) -> str:
    text, replaced = re.subn(rf"(?m)^    {field}: .*$", f"    {field}_file: {path}", template)
    assert replaced == 1
    return text


@pytest.mark.parametrize(
    ("template", "field"),
    [(template, field) for _, template, field in SECRET_FIELDS],
    ids=[f"{provider}-{field}" for provider, _, field in SECRET_FIELDS],
)
@pytest.mark.parametrize("config_path_style", ["absolute", "relative-to-cwd"])
def test_every_secret_field_reads_from_a_file_next_to_the_config(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    template: str,
    field: str,
    config_path_style: str,
) -> None:
    folder = tmp_path / "etc"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / field).write_text(f"S3CRET-{field}-from-file\n")
    config_file = folder / "config.yaml"
    config_file.write_text(as_file_reference(template, field, f"secrets/{field}"))
    # The working folder holds no secrets/: a path relative to it would not be found.
    monkeypatch.chdir(tmp_path)
    path = config_file if config_path_style == "absolute" else Path("etc/config.yaml")

    config = load_config(path, environ={})

    secret = getattr(config.accounts[0], field)
    assert secret.get_secret_value() == f"S3CRET-{field}-from-file"
    assert config.source == str(path)


def test_secret_file_by_absolute_path_with_crlf_ending(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(b"abs-token\r\n")
    text = as_file_reference(SENDBIRD, "api_token", str(token_file))
    sendbird = account(parse_config(text, SOURCE, environ={}), "sb", SendbirdAccount)
    assert sendbird.api_token.get_secret_value() == "abs-token"


def test_missing_secret_file_is_named_with_its_line(tmp_path: Path) -> None:
    text = as_file_reference(SENDBIRD, "api_token", "missing-token")
    problems = parse_problems(text, tmp_path)
    assert problems == [
        f"{SOURCE}:{line_of(text, 'api_token_file:')}: accounts[0].api_token_file: "
        f"cannot read {tmp_path / 'missing-token'}: No such file or directory"
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "must not be empty"), (b"\n", "must not be empty"), (b"\xff\xfe", "is not UTF-8 text")],
    ids=["empty", "only-newline", "binary"],
)
def test_unusable_secret_file_is_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    (tmp_path / "token").write_bytes(content)
    text = as_file_reference(SENDBIRD, "api_token", "token")
    assert parse_problems(text, tmp_path) == [
        f"{SOURCE}:{line_of(text, 'api_token_file:')}: accounts[0].api_token_file: "
        f"{tmp_path / 'token'} {problem}"
    ]


def test_secret_and_secret_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("from-file")
    text = with_fields(CRISP, "key_file: key")
    assert parse_problems(text, tmp_path) == [
        f"{SOURCE}:{line_of(text, 'key_file:')}: accounts[0].key_file: "
        "set either key or key_file, not both"
    ]


def parse_problems(text: str, base_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, SOURCE, environ={}, base_dir=base_dir)
    return caught.value.problems


# --------------------------------------------------------------------------------------------
# Refusals: one mistake each, reported at its line with its field path

TWO_SENDBIRD = SENDBIRD + SENDBIRD.removeprefix("accounts:\n")


@dataclass(frozen=True)
class Refusal:
    """A config with one mistake, and how the loader must report it: at the line of the
    ``occurrence``-th ``line_with`` in ``text``, naming the field ``path`` and the ``problem``."""

    text: str
    path: str
    line_with: str
    problem: str
    occurrence: int = 1


REFUSALS = [
    pytest.param(
        Refusal(
            text=SENDBIRD + "scrape_interval: 30s\n",
            path="scrape_interval",
            line_with="scrape_interval",
            problem="unknown field",
        ),
        id="unknown-top-level",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "api_tokn: x"),
            path="accounts[0].api_tokn",
            line_with="api_tokn",
            problem="unknown field",
        ),
        id="unknown-account-field",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD + "        user: agent-7\n",
            path="accounts[0].dialogs[0].user",
            line_with="user: agent-7",
            problem="unknown field",
        ),
        id="unknown-dialog-field",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "user_id_file: x"),
            path="accounts[0].user_id_file",
            line_with="user_id_file",
            problem="unknown field",
        ),
        id="file-suffix-on-plain-field",
    ),
    pytest.param(
        Refusal(
            text=TWO_SENDBIRD,
            path="accounts[1].name",
            line_with="- name: sb",
            occurrence=2,
            problem="account name 'sb' is already used by accounts[0]",
        ),
        id="duplicate-account-name",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD + "      - name: agent\n        user_id: agent-7\n",
            path="accounts[0].dialogs[1].name",
            line_with="- name: agent",
            occurrence=2,
            problem="dialog name 'agent' is already used by dialogs[0]",
        ),
        id="duplicate-dialog-name",
    ),
    pytest.param(
        Refusal(
            text=without(SENDBIRD, "user_id:"),
            path="accounts[0].dialogs[0].user_id",
            line_with="- name: agent",
            problem="required field is missing",
        ),
        id="sendbird-dialog-without-user-id",
    ),
    pytest.param(
        Refusal(
            text=without(IMKIT, "base_url:"),
            path="accounts[0].base_url",
            line_with="- name: im",
            problem="required field is missing",
        ),
        id="imkit-without-base-url",
    ),
    pytest.param(
        Refusal(
            text=without(CRISP, "key: crisp-key"),
            path="accounts[0].key",
            line_with="- name: cr",
            problem="required field is missing",
        ),
        id="crisp-without-key",
    ),
    pytest.param(
        Refusal(
            text=without(SENDBIRD, "- name: sb").replace("    provider:", "  - provider:"),
            path="accounts[0].name",
            line_with="provider:",
            problem="required field is missing",
        ),
        id="account-without-name",
    ),
    pytest.param(
        Refusal(
            text=with_fields(CRISP, "tier: gold"),
            path="accounts[0].tier",
            line_with="tier: gold",
            problem="must be one of 'plugin' or 'website'",
        ),
        id="bad-tier",
    ),
    pytest.param(
        Refusal(
            text=CRISP + "      - name: vip\n        session_id: s-1\n        side: both\n",
            path="accounts[0].dialogs[1].side",
            line_with="side: both",
            problem="must be one of 'visitor' or 'operator'",
        ),
        id="bad-side",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD + "        channels: open\n",
            path="accounts[0].dialogs[0].channels",
            line_with="channels: open",
            problem="must be one of 'all', 'super_group' or 'non_super_group'",
        ),
        id="bad-channels",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "timeout: -1"),
            path="accounts[0].timeout",
            line_with="timeout:",
            problem="must not be negative",
        ),
        id="negative-timeout",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "timeout: -5s"),
            path="accounts[0].timeout",
            line_with="timeout:",
            problem="must not be negative",
        ),
        id="negative-timeout-string",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "timeout: 0"),
            path="accounts[0].timeout",
            line_with="timeout:",
            problem="must be more than 0",
        ),
        id="zero-timeout",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "timeout: 0s"),
            path="accounts[0].timeout",
            line_with="timeout:",
            problem="must be more than 0",
        ),
        id="zero-timeout-string",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "timeout: 5 minutes"),
            path="accounts[0].timeout",
            line_with="timeout:",
            problem="not a duration (use e.g. 500ms, 30s, 5m, or seconds)",
        ),
        id="bad-duration",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "cache_ttl: yes"),
            path="accounts[0].cache_ttl",
            line_with="cache_ttl:",
            problem="expected a duration",
        ),
        id="boolean-duration",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "cache_ttl: -1m"),
            path="accounts[0].cache_ttl",
            line_with="cache_ttl:",
            problem="must not be negative",
        ),
        id="negative-cache-ttl",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "max_concurrency: 0"),
            path="accounts[0].max_concurrency",
            line_with="max_concurrency:",
            problem="must be at least 1",
        ),
        id="zero-concurrency",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "daily_request_budget: 0"),
            path="accounts[0].daily_request_budget",
            line_with="daily_request_budget:",
            problem="must be at least 1",
        ),
        id="zero-budget",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "base_url: ftp://files.example"),
            path="accounts[0].base_url",
            line_with="base_url:",
            problem="must be an http(s) URL",
        ),
        id="base-url-not-http",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "base_url: https://x.example/?a=1"),
            path="accounts[0].base_url",
            line_with="base_url:",
            problem="must be scheme and host only",
        ),
        id="base-url-with-query",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "base_url: https://x.example/v3"),
            path="accounts[0].base_url",
            line_with="base_url:",
            problem="must be scheme and host only",
        ),
        id="base-url-with-path",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "base_url: https://u:S3CRET@x.example"),
            path="accounts[0].base_url",
            line_with="base_url:",
            problem="must not carry credentials",
        ),
        id="base-url-with-credentials",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD.replace("- name: sb", "- name: my account"),
            path="accounts[0].name",
            line_with="- name: my account",
            problem="must not be empty or contain spaces or control characters",
        ),
        id="name-with-space",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD.replace("provider: sendbird", "provider: slack"),
            path="accounts[0].provider",
            line_with="provider: slack",
            problem="provider 'slack' is not known "
            "(known: chatwoot, crisp, imkit, intercom, matrix, quickblox, sendbird, stream, "
            "zendesk)",
        ),
        id="unknown-provider",
    ),
    pytest.param(
        Refusal(
            text=without(SENDBIRD, "provider:"),
            path="accounts[0].provider",
            line_with="- name: sb",
            problem="provider is missing "
            "(known: chatwoot, crisp, imkit, intercom, matrix, quickblox, sendbird, stream, "
            "zendesk)",
        ),
        id="missing-provider",
    ),
    pytest.param(
        Refusal(
            text="accounts: []\n",
            path="accounts",
            line_with="accounts:",
            problem="must be a non-empty list of accounts",
        ),
        id="empty-accounts",
    ),
    pytest.param(
        Refusal(
            text="accounts:\n",
            path="accounts",
            line_with="accounts:",
            problem="must be a non-empty list of accounts",
        ),
        id="accounts-null",
    ),
    pytest.param(
        Refusal(
            text="accounts:\n  name: sb\n",
            path="accounts",
            line_with="name: sb",
            problem="must be a non-empty list of accounts",
        ),
        id="accounts-mapping",
    ),
    pytest.param(
        Refusal(
            text="accounts:\n  - sb\n",
            path="accounts[0]",
            line_with="- sb",
            problem="each account must be a mapping",
        ),
        id="account-not-mapping",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD.split("    dialogs:")[0],
            path="accounts[0].dialogs",
            line_with="- name: sb",
            problem="required field is missing",
        ),
        id="no-dialogs",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD.split("    dialogs:")[0] + "    dialogs: []\n",
            path="accounts[0].dialogs",
            line_with="dialogs: []",
            problem="must list at least one entry",
        ),
        id="empty-dialogs",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD.split("    dialogs:")[0] + "    dialogs:\n      name: a\n",
            path="accounts[0].dialogs",
            line_with="name: a",
            problem="must be a list",
        ),
        id="dialogs-mapping",
    ),
    pytest.param(
        Refusal(
            text=with_fields(QB_API_KEY, "token: qb-token"),
            path="accounts[0]",
            line_with="- name: qb",
            problem="set exactly one of api_key, token, or application_id/auth_key/auth_secret",
        ),
        id="quickblox-two-auth-modes",
    ),
    pytest.param(
        Refusal(
            text=without(without(QB_API_KEY, "api_key:"), "on_behalf_of:"),
            path="accounts[0]",
            line_with="- name: qb",
            problem="set exactly one of api_key, token, or application_id/auth_key/auth_secret",
        ),
        id="quickblox-no-auth-mode",
    ),
    pytest.param(
        Refusal(
            text=without(QB_APP, "auth_secret:"),
            path="accounts[0]",
            line_with="- name: qb",
            problem="application_id, auth_key and auth_secret go together",
        ),
        id="quickblox-incomplete-app-credentials",
    ),
    pytest.param(
        Refusal(
            text=without(QB_APP, "password:"),
            path="accounts[0]",
            line_with="- name: qb",
            problem="login and password go together",
        ),
        id="quickblox-login-without-password",
    ),
    pytest.param(
        Refusal(
            text=with_fields(QB_TOKEN, "login: a", "password: b"),
            path="accounts[0]",
            line_with="- name: qb",
            problem="login/password apply only with application credentials",
        ),
        id="quickblox-login-with-token",
    ),
    pytest.param(
        Refusal(
            text=with_fields(QB_TOKEN, "on_behalf_of: 7"),
            path="accounts[0]",
            line_with="- name: qb",
            problem="on_behalf_of applies only with api_key",
        ),
        id="quickblox-on-behalf-of-without-api-key",
    ),
    pytest.param(
        Refusal(
            text=QB_TOKEN + "        dialog_id: a,b\n",
            path="accounts[0].dialogs[0].dialog_id",
            line_with="dialog_id:",
            problem="must not contain commas, spaces or control characters",
        ),
        id="quickblox-dialog-id-list",
    ),
    pytest.param(
        Refusal(
            text=CRISP + "        side: operator\n",
            path="accounts[0].dialogs[0]",
            line_with="- name: backlog",
            problem="side applies only to a dialog with a session_id",
        ),
        id="crisp-side-without-session",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "api_token: second"),
            path="accounts[0].api_token",
            line_with="api_token:",
            occurrence=2,
            problem="duplicate key",
        ),
        id="duplicate-yaml-key",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD + "accounts: []\n",
            path="accounts",
            line_with="accounts:",
            occurrence=2,
            problem="duplicate key",
        ),
        id="duplicate-top-level-key",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "1: x"),
            path="accounts[0]",
            line_with="1: x",
            problem="key 1 is not a string",
        ),
        id="non-string-key",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD.replace("user_id: agent-42", "user_id: !vault agent-42"),
            path="accounts[0].dialogs[0].user_id",
            line_with="!vault",
            problem="unsupported YAML: could not determine a constructor for the tag '!vault'",
        ),
        id="unknown-yaml-tag",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD.replace("sb-token", "!!python/object/apply:os.getpid []"),
            path="accounts[0].api_token",
            line_with="!!python",
            problem="unsupported YAML: "
            "the tag 'tag:yaml.org,2002:python/object/apply:os.getpid' is not allowed",
        ),
        id="python-yaml-tag",
    ),
    pytest.param(
        Refusal(
            text=IMKIT + "        room_tags: !!set {work}\n",
            path="accounts[0].dialogs[0].room_tags",
            line_with="!!set",
            problem="unsupported YAML: the tag 'tag:yaml.org,2002:set' is not allowed",
        ),
        id="set-yaml-tag",
    ),
]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_refusal_names_line_and_field_path(refusal: Refusal) -> None:
    reported = only_problem(refusal.text)
    line = line_of(refusal.text, refusal.line_with, refusal.occurrence)
    location = f"{SOURCE}:{line}: {refusal.path}: "
    assert reported.startswith(location), reported
    assert refusal.problem in reported.removeprefix(location), reported


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Indentation one space short on line 3.
        ("accounts:\n  - name: sb\n   provider: sendbird\n",
         f"{SOURCE}:3: not valid YAML: while parsing a block collection, expected <block end>, "
         "but found '<block mapping start>' (from line 2)"),
        # A flow list opened on line 3 and never closed.
        ("accounts:\n  - name: sb\n    dialogs: [a, b\n  - name: c\n",
         f"{SOURCE}:4: not valid YAML: while parsing a flow sequence, expected ',' or ']', "
         "but got ':' (from line 3)"),
        ("accounts:\n\t- name: sb\n",
         f"{SOURCE}:2: not valid YAML: while scanning for the next token, found character "
         "'\\t' that cannot start any token"),
        (SENDBIRD + "---\n" + SENDBIRD,
         f"{SOURCE}:9: not valid YAML: expected a single document in the stream, "
         "but found another document (from line 1)"),
        ("- name: sb\n- name: other\n",
         f"{SOURCE}: the file must be a mapping with an 'accounts' list"),
        ("just some text\n", f"{SOURCE}: the file must be a mapping with an 'accounts' list"),
        ("", f"{SOURCE}: the file is empty; it must hold an 'accounts' list"),
        ("# accounts: to be added\n",
         f"{SOURCE}: the file is empty; it must hold an 'accounts' list"),
    ],
    ids=["bad-indent", "unclosed-list", "tab", "two-documents", "list", "scalar", "empty",
         "only-comment"],
)  # fmt: skip
def test_unusable_file_is_refused_as_a_whole(text: str, expected: str) -> None:
    assert refuse(text) == [expected]


def test_alias_bomb_is_refused_quickly() -> None:
    levels = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    text = "\n".join(levels) + "\naccounts: []\n"
    started = time.monotonic()
    assert refuse(text) == [
        f"{SOURCE}:5: a4: holds more than {MAX_NODES} values "
        "once aliases and merge keys are expanded"
    ]
    assert time.monotonic() - started < 5.0


def test_all_problems_are_reported_at_once() -> None:
    text = """\
accounts:
  - name: sb
    provider: sendbird
    application_id: APP-1
    api_token: ${SB_TOKEN}
    dialogs:
      - name: agent
      - name: agent-7
        user_id: agent-7
        channels: open
  - name: cr
    provider: crisp
    website_id: site-1
    tier: gold
    identifier: crisp-id
    key: crisp-key
    dialogs:
      - name: backlog
  - name: im
    provider: imkit
    client_key: im-client
    token: im-token
    dialogs:
      - name: all
  - name: sb
    provider: sendbird
    application_id: APP-1
    api_token: sb-token
    timeout: soon
    dialogs:
      - name: agent
        user_id: agent-42
  - name: x
    provider: telegram
    dialogs: []
interval: 30s
"""
    problems = refuse(text)
    expected_locations = {
        "5: accounts[0].api_token",
        "7: accounts[0].dialogs[0].user_id",
        "10: accounts[0].dialogs[1].channels",
        "14: accounts[1].tier",
        "19: accounts[2].base_url",
        "25: accounts[3].name",
        "29: accounts[3].timeout",
        "34: accounts[4].provider",
        "36: interval",
    }
    locations = {p.removeprefix(f"{SOURCE}:").split(": ")[0] + ": " + p.split(": ")[1]
                 for p in problems}  # fmt: skip
    assert locations == expected_locations
    assert len(problems) == len(expected_locations)


# --------------------------------------------------------------------------------------------
# Secrets never appear in a problem, wherever they were written

SECRET = "S3CRET:v@lue/9f8e 7d"  # invalid as a name, URL, id, number, duration or enum value


@dataclass(frozen=True)
class Leak:
    """A config with a secret where it is invalid; the problem must name the field ``path``."""

    text: str
    path: str
    environ: dict[str, str] = field(default_factory=dict)


LEAK_CASES = [
    pytest.param(
        Leak(
            text=SENDBIRD.replace("api_token: sb-token", f"api_token: ['{SECRET}']"),
            path="accounts[0].api_token",
        ),
        id="secret-as-list",
    ),
    pytest.param(
        Leak(
            text=SENDBIRD.replace("api_token: sb-token", f"api_token: {{v: '{SECRET}'}}"),
            path="accounts[0].api_token",
        ),
        id="secret-as-mapping",
    ),
    pytest.param(
        Leak(
            text=SENDBIRD.replace("api_token: sb-token", "api_token: 987654321987"),
            path="accounts[0].api_token",
        ),
        id="secret-as-number",
    ),
    pytest.param(
        Leak(text=with_fields(SENDBIRD, f"timeout: '{SECRET}'"), path="accounts[0].timeout"),
        id="in-timeout",
    ),
    pytest.param(
        Leak(
            text=with_fields(SENDBIRD, "cache_ttl: ${TOKEN}"),
            environ={"TOKEN": SECRET},
            path="accounts[0].cache_ttl",
        ),
        id="in-cache-ttl-from-env",
    ),
    pytest.param(
        Leak(text=SENDBIRD.replace("- name: sb", f"- name: '{SECRET}'"), path="accounts[0].name"),
        id="in-name",
    ),
    pytest.param(
        Leak(
            text=SENDBIRD.replace("application_id: APP-1", f"application_id: '{SECRET}'"),
            path="accounts[0].application_id",
        ),
        id="in-application-id",
    ),
    pytest.param(
        Leak(text=with_fields(SENDBIRD, f"base_url: '{SECRET}'"), path="accounts[0].base_url"),
        id="in-base-url",
    ),
    pytest.param(
        Leak(
            text=with_fields(SENDBIRD, "base_url: ${TOKEN}"),
            environ={"TOKEN": SECRET},
            path="accounts[0].base_url",
        ),
        id="in-base-url-from-env",
    ),
    pytest.param(
        Leak(
            text=QB_API_KEY.replace("on_behalf_of: 7", f"on_behalf_of: '{SECRET}'"),
            path="accounts[0].on_behalf_of",
        ),
        id="in-on-behalf-of",
    ),
    pytest.param(
        Leak(
            text=with_fields(SENDBIRD, f"max_concurrency: '{SECRET}'"),
            path="accounts[0].max_concurrency",
        ),
        id="in-max-concurrency",
    ),
    pytest.param(
        Leak(text=with_fields(CRISP, f"tier: '{SECRET}'"), path="accounts[0].tier"), id="in-tier"
    ),
    pytest.param(
        Leak(
            text=SENDBIRD + "        channels: ${TOKEN}\n",
            environ={"TOKEN": SECRET},
            path="accounts[0].dialogs[0].channels",
        ),
        id="in-channels-from-env",
    ),
    pytest.param(
        Leak(
            text=CRISP.replace(
                "- name: backlog", f"- name: vip\n        session_id: s-1\n        side: '{SECRET}'"
            ),
            path="accounts[0].dialogs[0].side",
        ),
        id="in-side",
    ),
    pytest.param(
        Leak(
            text=QB_TOKEN + f"        dialog_id: '{SECRET}'\n",
            path="accounts[0].dialogs[0].dialog_id",
        ),
        id="in-dialog-id",
    ),
    pytest.param(
        Leak(
            text=IMKIT + f"        room_tags: '{SECRET}'\n", path="accounts[0].dialogs[0].room_tags"
        ),
        id="in-room-tags",
    ),
    pytest.param(
        Leak(text=with_fields(SENDBIRD, f"api_tokn: '{SECRET}'"), path="accounts[0].api_tokn"),
        id="in-unknown-field",
    ),
    pytest.param(
        Leak(text=with_fields(QB_API_KEY, f"token: '{SECRET}'"), path="accounts[0]"),
        id="beside-a-bad-auth-mode",
    ),
    pytest.param(
        Leak(text=QB_APP.replace("login: agent", f"login: ['{SECRET}']"), path="accounts[0].login"),
        id="in-quickblox-login",
    ),
]


@pytest.mark.parametrize("leak", LEAK_CASES)
def test_problems_never_quote_a_secret(leak: Leak) -> None:
    with pytest.raises(ConfigError) as caught:
        load(leak.text, leak.environ)
    message = str(caught.value)
    assert f": {leak.path}: " in message, message
    for fragment in (SECRET, "S3CRET", "v@lue", "987654321987"):
        assert fragment not in message


# --------------------------------------------------------------------------------------------
# load_config: the file itself


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SENDBIRD)
    config = load_config(path, environ={})
    assert config.source == str(path)
    assert [a.name for a in config.accounts] == ["sb"]


def test_load_config_problems_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = with_fields(SENDBIRD, "timeout: never")
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems[0].startswith(
        f"{path}:{line_of(text, 'timeout:')}: accounts[0].timeout: "
    )


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("missing.yaml", None, ": cannot read the config file: No such file or directory"),
        (".", None, ": cannot read the config file: not a regular file"),
        ("latin1.yaml", b"accounts:\n  caf\xe9\n", ":2: not UTF-8 text (byte 15)"),
    ],
    ids=["missing", "directory", "not-utf8"],
)
def test_load_config_unreadable_file(
    tmp_path: Path, name: str, content: bytes | None, problem: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems == [f"{path}{problem}"]


# Issue 16's papercuts: what a newcomer's first broken config is told, in plain words.
PAPERCUTS = [
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "timout: 5s"),
            path="accounts[0].timout",
            line_with="timout",
            problem="unknown field (did you mean timeout?)",
        ),
        id="did-you-mean-field",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD.replace("provider: sendbird", "provider: SendBird"),
            path="accounts[0].provider",
            line_with="provider",
            problem="provider 'SendBird' is not known (did you mean sendbird?)",
        ),
        id="did-you-mean-provider",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD.replace("accounts:", "acounts:"),
            path="acounts",
            line_with="acounts",
            problem="unknown field (did you mean accounts?)",
        ),
        id="misspelt-accounts-at-its-own-line-alone",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD.replace("- name: sb", "- name: no"),
            path="accounts[0].name",
            line_with="name: no",
            problem='must be a string; YAML reads no as a boolean: quote it ("no")',
        ),
        id="yaml-boolean-quoting-hint",
    ),
    pytest.param(
        Refusal(
            text=with_fields(SENDBIRD, "max_concurrency: lots"),
            path="accounts[0].max_concurrency",
            line_with="max_concurrency",
            problem="must be a whole number",
        ),
        id="plain-words-integer",
    ),
    pytest.param(
        Refusal(
            text=SENDBIRD.replace("- name: sb", "- name: my sb"),
            path="accounts[0].name",
            line_with="name: my sb",
            problem="must not be empty or contain spaces or control characters",
        ),
        id="plain-words-pattern",
    ),
]


@pytest.mark.parametrize("refusal", PAPERCUTS)
def test_refusals_speak_plainly_at_the_key_line(refusal: Refusal) -> None:
    reported = only_problem(refusal.text)
    location = f"{SOURCE}:{line_of(refusal.text, refusal.line_with)}: {refusal.path}: "
    assert reported.startswith(location + refusal.problem), reported


def test_problems_are_in_file_order_without_follow_on_errors() -> None:
    text = with_fields(
        SENDBIRD.replace("api_token: sb-token", "api_token: ${SB_TOKEN}"),
        "max_concurrency: lots",
    ).replace("user_id: agent-42", "user_id: agent-42\n        channels: open")
    problems = refuse(text, environ={})
    lines = [int(problem.split(":")[1]) for problem in problems]
    assert lines == sorted(lines)
    assert [problem.split(": ", 1)[1] for problem in problems] == [
        "accounts[0].max_concurrency: must be a whole number",
        "accounts[0].api_token: environment variable SB_TOKEN is not set",
        "accounts[0].dialogs[0].channels: must be one of 'all', 'super_group' or 'non_super_group'",
    ]


def test_an_unset_variable_is_the_only_problem_of_its_account() -> None:
    """config.example.yaml's QuickBlox account without its variables: each unset variable is
    reported, never the follow-on 'application_id, auth_key and auth_secret go together'."""
    text = """\
accounts:
  - name: qb
    provider: quickblox
    application_id: 1
    auth_key: ${QB_AUTH_KEY}
    auth_secret: ${QB_AUTH_SECRET}
    dialogs:
      - name: all
"""
    assert refuse(text, environ={}) == [
        f"{SOURCE}:5: accounts[0].auth_key: environment variable QB_AUTH_KEY is not set",
        f"{SOURCE}:6: accounts[0].auth_secret: environment variable QB_AUTH_SECRET is not set",
    ]
