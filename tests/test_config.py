"""The config loader: what a valid file becomes, and how an invalid one is refused.

Every refusal is checked for the exact ``file:line: field.path:`` it names, because that is what
makes a message actionable; and no message may quote a credential, wherever it was written.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TypeVar

import pytest

from exporter.config import MAX_NODES, ConfigError, ExporterConfig, load_config, parse_config
from exporter.models import AccountConfig
from exporter.providers.crisp import CrispAccount
from exporter.providers.imkit import IMKitAccount
from exporter.providers.quickblox import QuickBloxAccount
from exporter.providers.sendbird import SendbirdAccount
from exporter.registry import PROVIDERS

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
MATRIX = """\
accounts:
  - name: mx
    provider: matrix
    base_url: https://matrix.example.org
    access_token: mx-token
    dialogs:
      - name: all
"""


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

REFUSALS: list[tuple[str, str, str, str, int, str]] = [
    # (id, config, field path, text on the reported line, which occurrence, problem)
    ("unknown-top-level", SENDBIRD + "scrape_interval: 30s\n", "scrape_interval",
     "scrape_interval", 1, "unknown field"),
    ("unknown-account-field", with_fields(SENDBIRD, "api_tokn: x"), "accounts[0].api_tokn",
     "api_tokn", 1, "unknown field"),
    ("unknown-dialog-field", SENDBIRD + "        user: agent-7\n",
     "accounts[0].dialogs[0].user", "user: agent-7", 1, "unknown field"),
    ("file-suffix-on-plain-field", with_fields(SENDBIRD, "user_id_file: x"),
     "accounts[0].user_id_file", "user_id_file", 1, "unknown field"),
    ("duplicate-account-name", TWO_SENDBIRD, "accounts[1].name", "- name: sb", 2,
     "account name 'sb' is already used by accounts[0]"),
    ("duplicate-dialog-name", SENDBIRD + "      - name: agent\n        user_id: agent-7\n",
     "accounts[0].dialogs[1].name", "- name: agent", 2,
     "dialog name 'agent' is already used by dialogs[0]"),
    ("sendbird-dialog-without-user-id", without(SENDBIRD, "user_id:"),
     "accounts[0].dialogs[0].user_id", "- name: agent", 1, "required field is missing"),
    ("imkit-without-base-url", without(IMKIT, "base_url:"), "accounts[0].base_url",
     "- name: im", 1, "required field is missing"),
    ("crisp-without-key", without(CRISP, "key: crisp-key"), "accounts[0].key",
     "- name: cr", 1, "required field is missing"),
    ("account-without-name", without(SENDBIRD, "- name: sb").replace(
        "    provider:", "  - provider:"), "accounts[0].name", "provider:", 1,
     "required field is missing"),
    ("bad-tier", with_fields(CRISP, "tier: gold"), "accounts[0].tier", "tier: gold", 1,
     "Input should be 'plugin' or 'website'"),
    ("bad-side", CRISP + "      - name: vip\n        session_id: s-1\n        side: both\n",
     "accounts[0].dialogs[1].side", "side: both", 1, "Input should be 'visitor' or 'operator'"),
    ("bad-channels", SENDBIRD + "        channels: open\n", "accounts[0].dialogs[0].channels",
     "channels: open", 1, "Input should be 'all', 'super_group' or 'non_super_group'"),
    ("negative-timeout", with_fields(SENDBIRD, "timeout: -1"), "accounts[0].timeout",
     "timeout:", 1, "must not be negative"),
    ("negative-timeout-string", with_fields(SENDBIRD, "timeout: -5s"), "accounts[0].timeout",
     "timeout:", 1, "must not be negative"),
    ("zero-timeout", with_fields(SENDBIRD, "timeout: 0"), "accounts[0].timeout",
     "timeout:", 1, "Input should be greater than 0"),
    ("zero-timeout-string", with_fields(SENDBIRD, "timeout: 0s"), "accounts[0].timeout",
     "timeout:", 1, "Input should be greater than 0"),
    ("bad-duration", with_fields(SENDBIRD, "timeout: 5 minutes"), "accounts[0].timeout",
     "timeout:", 1, "not a duration (use e.g. 500ms, 30s, 5m, or seconds)"),
    ("boolean-duration", with_fields(SENDBIRD, "cache_ttl: yes"), "accounts[0].cache_ttl",
     "cache_ttl:", 1, "expected a duration"),
    ("negative-cache-ttl", with_fields(SENDBIRD, "cache_ttl: -1m"), "accounts[0].cache_ttl",
     "cache_ttl:", 1, "must not be negative"),
    ("zero-concurrency", with_fields(SENDBIRD, "max_concurrency: 0"),
     "accounts[0].max_concurrency", "max_concurrency:", 1, "greater than or equal to 1"),
    ("zero-budget", with_fields(SENDBIRD, "daily_request_budget: 0"),
     "accounts[0].daily_request_budget", "daily_request_budget:", 1,
     "greater than or equal to 1"),
    ("base-url-not-http", with_fields(SENDBIRD, "base_url: ftp://files.example"),
     "accounts[0].base_url", "base_url:", 1, "must be an http(s) URL"),
    ("base-url-with-query", with_fields(SENDBIRD, "base_url: https://x.example/?a=1"),
     "accounts[0].base_url", "base_url:", 1, "must be scheme and host only"),
    ("base-url-with-path", with_fields(SENDBIRD, "base_url: https://x.example/v3"),
     "accounts[0].base_url", "base_url:", 1, "must be scheme and host only"),
    ("base-url-with-credentials", with_fields(SENDBIRD, "base_url: https://u:S3CRET@x.example"),
     "accounts[0].base_url", "base_url:", 1, "must not carry credentials"),
    ("name-with-space", SENDBIRD.replace("- name: sb", "- name: my account"),
     "accounts[0].name", "- name: my account", 1, "String should match pattern"),
    ("unknown-provider", SENDBIRD.replace("provider: sendbird", "provider: slack"),
     "accounts[0].provider", "provider: slack", 1,
     "provider 'slack' is not known "
     "(known: crisp, imkit, intercom, matrix, quickblox, sendbird, stream)"),
    ("missing-provider", without(SENDBIRD, "provider:"), "accounts[0].provider",
     "- name: sb", 1,
     "provider is missing (known: crisp, imkit, intercom, matrix, quickblox, sendbird, stream)"),
    ("empty-accounts", "accounts: []\n", "accounts", "accounts:", 1,
     "must be a non-empty list of accounts"),
    ("accounts-null", "accounts:\n", "accounts", "accounts:", 1,
     "must be a non-empty list of accounts"),
    ("accounts-mapping", "accounts:\n  name: sb\n", "accounts", "name: sb", 1,
     "must be a non-empty list of accounts"),
    ("account-not-mapping", "accounts:\n  - sb\n", "accounts[0]", "- sb", 1,
     "each account must be a mapping"),
    ("no-dialogs", SENDBIRD.split("    dialogs:")[0], "accounts[0].dialogs", "- name: sb", 1,
     "required field is missing"),
    ("empty-dialogs", SENDBIRD.split("    dialogs:")[0] + "    dialogs: []\n",
     "accounts[0].dialogs", "dialogs: []", 1, "must list at least one entry"),
    ("dialogs-mapping", SENDBIRD.split("    dialogs:")[0] + "    dialogs:\n      name: a\n",
     "accounts[0].dialogs", "name: a", 1, "must be a list"),
    ("quickblox-two-auth-modes", with_fields(QB_API_KEY, "token: qb-token"), "accounts[0]",
     "- name: qb", 1,
     "set exactly one of api_key, token, or application_id/auth_key/auth_secret"),
    ("quickblox-no-auth-mode", without(without(QB_API_KEY, "api_key:"), "on_behalf_of:"),
     "accounts[0]", "- name: qb", 1,
     "set exactly one of api_key, token, or application_id/auth_key/auth_secret"),
    ("quickblox-incomplete-app-credentials", without(QB_APP, "auth_secret:"), "accounts[0]",
     "- name: qb", 1, "application_id, auth_key and auth_secret go together"),
    ("quickblox-login-without-password", without(QB_APP, "password:"), "accounts[0]",
     "- name: qb", 1, "login and password go together"),
    ("quickblox-login-with-token", with_fields(QB_TOKEN, "login: a", "password: b"),
     "accounts[0]", "- name: qb", 1,
     "login/password apply only with application credentials"),
    ("quickblox-on-behalf-of-without-api-key", with_fields(QB_TOKEN, "on_behalf_of: 7"),
     "accounts[0]", "- name: qb", 1, "on_behalf_of applies only with api_key"),
    ("quickblox-dialog-id-list", QB_TOKEN + "        dialog_id: a,b\n",
     "accounts[0].dialogs[0].dialog_id", "dialog_id:", 1, "String should match pattern"),
    ("crisp-side-without-session", CRISP + "        side: operator\n",
     "accounts[0].dialogs[0]", "- name: backlog", 1,
     "side applies only to a dialog with a session_id"),
    ("duplicate-yaml-key", with_fields(SENDBIRD, "api_token: second"),
     "accounts[0].api_token", "api_token:", 2, "duplicate key"),
    ("duplicate-top-level-key", SENDBIRD + "accounts: []\n", "accounts", "accounts:", 2,
     "duplicate key"),
    ("non-string-key", with_fields(SENDBIRD, "1: x"), "accounts[0]", "1: x", 1,
     "key 1 is not a string"),
    ("unknown-yaml-tag", SENDBIRD.replace("user_id: agent-42", "user_id: !vault agent-42"),
     "accounts[0].dialogs[0].user_id", "!vault", 1,
     "unsupported YAML: could not determine a constructor for the tag '!vault'"),
    ("python-yaml-tag", SENDBIRD.replace("sb-token", "!!python/object/apply:os.getpid []"),
     "accounts[0].api_token", "!!python", 1,
     "unsupported YAML: the tag 'tag:yaml.org,2002:python/object/apply:os.getpid' is not "
     "allowed"),
    ("set-yaml-tag", IMKIT + "        room_tags: !!set {work}\n",
     "accounts[0].dialogs[0].room_tags", "!!set", 1,
     "unsupported YAML: the tag 'tag:yaml.org,2002:set' is not allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "path", "needle", "occurrence", "problem"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_refusal_names_line_and_field_path(
    text: str, path: str, needle: str, occurrence: int, problem: str
) -> None:
    reported = only_problem(text)
    location = f"{SOURCE}:{line_of(text, needle, occurrence)}: {path}: "
    assert reported.startswith(location), reported
    assert problem in reported.removeprefix(location), reported


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


LEAK_CASES: list[tuple[str, str, dict[str, str], str]] = [
    # (id, config, environment, field path the problem must name)
    ("secret-as-list", SENDBIRD.replace("api_token: sb-token", f"api_token: ['{SECRET}']"), {},
     "accounts[0].api_token"),
    ("secret-as-mapping", SENDBIRD.replace("api_token: sb-token", f"api_token: {{v: '{SECRET}'}}"),
     {}, "accounts[0].api_token"),
    ("secret-as-number", SENDBIRD.replace("api_token: sb-token", "api_token: 987654321987"), {},
     "accounts[0].api_token"),
    ("in-timeout", with_fields(SENDBIRD, f"timeout: '{SECRET}'"), {}, "accounts[0].timeout"),
    ("in-cache-ttl-from-env", with_fields(SENDBIRD, "cache_ttl: ${TOKEN}"), {"TOKEN": SECRET},
     "accounts[0].cache_ttl"),
    ("in-name", SENDBIRD.replace("- name: sb", f"- name: '{SECRET}'"), {}, "accounts[0].name"),
    ("in-application-id", SENDBIRD.replace("application_id: APP-1",
     f"application_id: '{SECRET}'"), {}, "accounts[0].application_id"),
    ("in-base-url", with_fields(SENDBIRD, f"base_url: '{SECRET}'"), {}, "accounts[0].base_url"),
    ("in-base-url-from-env", with_fields(SENDBIRD, "base_url: ${TOKEN}"),
     {"TOKEN": SECRET}, "accounts[0].base_url"),
    ("in-on-behalf-of", QB_API_KEY.replace("on_behalf_of: 7", f"on_behalf_of: '{SECRET}'"), {},
     "accounts[0].on_behalf_of"),
    ("in-max-concurrency", with_fields(SENDBIRD, f"max_concurrency: '{SECRET}'"), {},
     "accounts[0].max_concurrency"),
    ("in-tier", with_fields(CRISP, f"tier: '{SECRET}'"), {}, "accounts[0].tier"),
    ("in-channels-from-env", SENDBIRD + "        channels: ${TOKEN}\n", {"TOKEN": SECRET},
     "accounts[0].dialogs[0].channels"),
    ("in-side", CRISP.replace("- name: backlog",
     f"- name: vip\n        session_id: s-1\n        side: '{SECRET}'"), {},
     "accounts[0].dialogs[0].side"),
    ("in-dialog-id", QB_TOKEN + f"        dialog_id: '{SECRET}'\n", {},
     "accounts[0].dialogs[0].dialog_id"),
    ("in-room-tags", IMKIT + f"        room_tags: '{SECRET}'\n", {},
     "accounts[0].dialogs[0].room_tags"),
    ("in-unknown-field", with_fields(SENDBIRD, f"api_tokn: '{SECRET}'"), {},
     "accounts[0].api_tokn"),
    ("beside-a-bad-auth-mode", with_fields(QB_API_KEY, f"token: '{SECRET}'"), {},
     "accounts[0]"),
    ("in-quickblox-login", QB_APP.replace("login: agent", f"login: ['{SECRET}']"), {},
     "accounts[0].login"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "environ", "path"),
    [case[1:] for case in LEAK_CASES],
    ids=[case[0] for case in LEAK_CASES],
)
def test_problems_never_quote_a_secret(text: str, environ: dict[str, str], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(text, environ)
    message = str(caught.value)
    assert f": {path}: " in message, message
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
