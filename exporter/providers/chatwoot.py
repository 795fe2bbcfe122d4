"""Chatwoot: an account's backlog of open conversations, optionally one inbox or one team.

Application API with a user's access token in the ``api_access_token`` header; ``base_url`` is
the installation (self-hosted, or Chatwoot Cloud by default). Each dialog reads the fewest
requests that carry its values (``docs/chatwoot.md`` has the field-to-metric table):

- a dialog without ``group_by`` or ``unread_messages``: one ``GET .../conversations/meta`` with
  ``status=open`` (and ``inbox_id`` / ``team_id``); its ``meta.all_count`` is
  ``chat_unread_conversations``. Dialogs with the same filter share that request.
- ``group_by: team`` or ``agent``: one ``GET /api/v2/.../live_reports/grouped_conversation_metrics``
  (``group_by=team_id`` or ``assignee_id``, and ``team_id`` when set); each group's ``open``
  count, a null id being the ``unassigned`` group. The dialog's value is the sum of the same
  answer's groups, so the split adds up by construction.
- ``group_by: inbox`` or ``unread_messages: true``: the conversation list
  (``GET .../conversations?status=open&page=N``, 25 a page) is read to its end once per filter,
  and every such dialog of the filter is counted from those pages: conversations, the sum of
  ``unread_count`` (``chat_unread_messages``) and the oldest ``waiting_since``.

Chatwoot's error bodies are ``{"error": "..."}`` or ``{"errors": [...]}`` (the common
envelope); its rate limit (Rack::Attack) answers 429, by default without ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field, SecretStr, model_validator

from exporter.models import AccountConfig, GroupingDialog
from exporter.providers.base import (
    Coverage,
    FetchError,
    GroupTally,
    Provider,
    Reading,
    Reason,
    Record,
    count,
    nested,
    record_all,
)
from exporter.queues.shared import SharedPass
from exporter.upstream import Upstream

# A backlog walk stops here rather than loop without end on a misbehaving API: 5,000 open
# conversations at Chatwoot's 25 a page.
MAX_PAGES = 200
# The live reports' name of each dimension they group by.
REPORT_GROUPS = {"team": "team_id", "agent": "assignee_id"}

ChatwootId = Annotated[int, Field(ge=1, le=2**53)]


class ChatwootDialog(GroupingDialog):
    """No filter: the account's open conversations; ``inbox_id`` or ``team_id``: those of one
    inbox or team. ``unread_messages`` also counts unread messages and the oldest waiting by
    reading the conversation list (one request per 25 open conversations)."""

    group_dimensions: ClassVar[tuple[str, ...]] = ("team", "agent", "inbox")

    inbox_id: ChatwootId | None = None
    team_id: ChatwootId | None = None
    unread_messages: bool = False

    @model_validator(mode="after")
    def _one_filter(self) -> Self:
        if self.inbox_id is not None and self.team_id is not None:
            raise ValueError("set inbox_id or team_id, not both")
        if self.group_by in REPORT_GROUPS and (self.inbox_id is not None or self.unread_messages):
            raise ValueError(
                f"group_by {self.group_by} reads Chatwoot's live reports, which filter by team"
                " only and count no messages: not with inbox_id or unread_messages"
            )
        return self

    @property
    def walks(self) -> bool:
        """Whether this dialog is read from the conversation list, page by page."""
        return self.unread_messages or self.group_by == "inbox"

    @property
    def filter(self) -> dict[str, str]:
        """The query parameters that pick this dialog's conversations."""
        if self.inbox_id is not None:
            return {"inbox_id": str(self.inbox_id)}
        if self.team_id is not None:
            return {"team_id": str(self.team_id)}
        return {}


class ChatwootAccount(AccountConfig):
    """A Chatwoot account (``account_id``) on an installation, read with an access token."""

    secret_fields: ClassVar[tuple[str, ...]] = ("api_access_token",)
    default_base_url: ClassVar[str] = "https://app.chatwoot.com"

    provider: Literal["chatwoot"]
    account_id: ChatwootId
    api_access_token: SecretStr
    dialogs: tuple[ChatwootDialog, ...] = Field(min_length=1)


def _identifier(value: Any, what: str) -> str | None:
    """A Chatwoot id (an integer; null: none) as label text."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FetchError(Reason.BAD_RESPONSE, f"{what} is {type(value).__name__}, not an id")
    return str(value)


def _filter_key(dialog: ChatwootDialog) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(dialog.filter.items()))


class ChatwootFetcher:
    """Fetches a Chatwoot account's dialogs, each filter's and report's request made once."""

    def __init__(self, account: ChatwootAccount, upstream: Upstream) -> None:
        self._headers = {
            "api_access_token": account.api_access_token.get_secret_value(),
            "Accept": "application/json",
        }
        root = account.api_root()
        self._v1 = f"{root}/api/v1/accounts/{account.account_id}"
        self._v2 = f"{root}/api/v2/accounts/{account.account_id}"
        self._upstream = upstream
        budget = account.daily_request_budget
        self._max_pages = min(MAX_PAGES, budget) if budget else MAX_PAGES

    async def fetch(self, dialogs: Sequence[ChatwootDialog], record: Record) -> None:
        reports: dict[tuple[str, tuple[tuple[str, str], ...]], list[ChatwootDialog]] = {}
        walks: dict[tuple[tuple[str, str], ...], list[ChatwootDialog]] = {}
        metas: dict[tuple[tuple[str, str], ...], list[ChatwootDialog]] = {}
        for dialog in dialogs:
            key = _filter_key(dialog)
            if dialog.group_by in REPORT_GROUPS:
                reports.setdefault((dialog.group_by, key), []).append(dialog)
            elif dialog.walks:
                walks.setdefault(key, []).append(dialog)
            else:
                metas.setdefault(key, []).append(dialog)
        # A filter whose list is read anyway needs no meta request: its pages count it too.
        jobs = [self._walk(group, metas.pop(key, []), record) for key, group in walks.items()]
        jobs += [self._meta(group, record) for group in metas.values()]
        jobs += [self._report(group, record) for group in reports.values()]
        await asyncio.gather(*jobs)

    async def _get(self, url: str, params: Mapping[str, str]) -> Any:
        response = await self._upstream.request(
            "GET", url, params=dict(params), headers=self._headers
        )
        return response.body

    async def _meta(self, dialogs: Sequence[ChatwootDialog], record: Record) -> None:
        """Open conversations of one filter: ``meta.all_count`` of the conversation counts."""
        try:
            body = await self._get(f"{self._v1}/conversations/meta", _open(dialogs[0]))
            reading = Reading(None, conversations=count(body, "meta", "all_count"))
        except FetchError as exc:
            record_all(dialogs, record, exc)
            return
        record_all(dialogs, record, reading)

    async def _report(self, dialogs: Sequence[ChatwootDialog], record: Record) -> None:
        """Open conversations by team or agent, from one grouped live report."""
        dialog = dialogs[0]
        assert dialog.group_by is not None
        scope = REPORT_GROUPS[dialog.group_by]
        params = {"group_by": scope, **dialog.filter}
        url = f"{self._v2}/live_reports/grouped_conversation_metrics"
        try:
            rows = await self._get(url, params)
            if not isinstance(rows, list):
                raise FetchError(Reason.BAD_RESPONSE, "grouped metrics are not a list")
            shared = SharedPass(dialogs, ("conversations",))
            shared.add([_report_row(row, scope) for row in rows], _count_rows)
        except FetchError as exc:
            record_all(dialogs, record, exc)
            return
        shared.record(record)

    async def _walk(
        self, walkers: Sequence[ChatwootDialog], plain: Sequence[ChatwootDialog], record: Record
    ) -> None:
        """Every open conversation of one filter, page by page, counted for every dialog:
        unread messages, conversations and the oldest waiting for the dialogs that walk, the
        conversations alone for the ``plain`` ones of the same filter (served from the same
        pages instead of a request of their own).

        The first page's ``meta.all_count`` says how many there are: the walk ends once that
        many distinct conversations are read (no request for an empty last page), or at an
        empty page. A page of conversations all read before means Chatwoot ignored ``page``:
        a bad answer, never a count that loops.
        """
        dialogs = [*walkers, *plain]
        passes = (
            (SharedPass(walkers, ("messages", "conversations")), _count_detailed),
            (SharedPass(plain, ("conversations",)), _count_plain),
        )
        seen: set[int] = set()
        params = _open(walkers[0])
        try:
            expected: int | None = None
            for page in range(1, self._max_pages + 1):
                body = await self._get(f"{self._v1}/conversations", {**params, "page": str(page)})
                data = body.get("data") if isinstance(body, dict) else None
                items = data.get("payload") if isinstance(data, dict) else None
                if not isinstance(items, list):
                    raise FetchError(Reason.BAD_RESPONSE, "data.payload is not a list")
                if expected is None:
                    expected = count(data, "meta", "all_count")
                fresh = [item for item in items if _new(item, seen)]
                if items and not fresh:
                    raise FetchError(Reason.BAD_RESPONSE, f"page {page} repeats conversations")
                listed = [_Listed(item) for item in fresh]
                for shared, count_listed in passes:
                    shared.add(listed, count_listed)
                if not items or len(seen) >= expected:
                    for shared, _ in passes:
                        shared.record(record)
                    return
            raise FetchError(Reason.BAD_RESPONSE, f"backlog longer than {self._max_pages} pages")
        except FetchError as exc:
            record_all(dialogs, record, exc)

    async def group_names(self, group_by: str) -> Mapping[str, str]:
        """Team, agent (``available_name`` or ``name``, never the email) or inbox names from
        the account's lists; none of them is paged."""
        path = {"team": "teams", "agent": "agents", "inbox": "inboxes"}[group_by]
        body = await self._get(f"{self._v1}/{path}", {})
        # The inboxes list is ``{"payload": [...]}`` (its jbuilder view); the swagger
        # description says a bare array, as the teams and agents lists are.
        items = body.get("payload") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise FetchError(Reason.BAD_RESPONSE, f"{path} is not a list")
        names: dict[str, str] = {}
        for item in items:
            if not isinstance(item, dict):
                continue
            shown = item.get("available_name") or item.get("name")
            identifier = item.get("id")
            if isinstance(shown, str) and isinstance(identifier, int):
                names[str(identifier)] = shown
        return names


def _open(dialog: ChatwootDialog) -> dict[str, str]:
    return {"status": "open", **dialog.filter}


def _new(item: Any, seen: set[int]) -> bool:
    """Whether a listed conversation is one not read before (and remember it)."""
    if not isinstance(item, dict):
        raise FetchError(Reason.BAD_RESPONSE, "conversation is not an object")
    identifier = count(item, "id")
    if identifier in seen:
        return False
    seen.add(identifier)
    return True


class _Listed:
    """One listed conversation: one conversation, its ``unread_count``, its ``waiting_since``
    (0: nobody waits) and its inbox (the group of a dialog split by inbox)."""

    def __init__(self, item: dict[str, Any]) -> None:
        self.unread = count(item, "unread_count")
        waiting = count(item, "waiting_since") if "waiting_since" in item else 0
        self.oldest = float(waiting) if waiting > 0 else None
        self.inbox = _identifier(item.get("inbox_id"), "inbox_id")


def _count_detailed(dialog: ChatwootDialog, tally: GroupTally, page: Sequence[_Listed]) -> None:
    """A page's unread messages, conversations and oldest waiting, into a walking dialog's."""
    by_inbox = dialog.group_by == "inbox"
    for listed in page:
        group = listed.inbox if by_inbox else None
        tally.add(group, messages=listed.unread, conversations=1, oldest=listed.oldest)


def _count_plain(dialog: ChatwootDialog, tally: GroupTally, page: Sequence[_Listed]) -> None:
    """A page's conversations alone, for a plain dialog served from the same pages."""
    by_inbox = dialog.group_by == "inbox"
    for listed in page:
        tally.add(listed.inbox if by_inbox else None, conversations=1)


def _report_row(row: Any, scope: str) -> tuple[str | None, int]:
    """One group of a grouped live report: its id and ``open`` count; a null id is nobody's."""
    if not isinstance(row, dict):
        raise FetchError(Reason.BAD_RESPONSE, "grouped metric is not an object")
    if scope not in row:
        raise FetchError(Reason.BAD_RESPONSE, f"grouped metric lacks {scope}")
    return _identifier(row[scope], scope), count(row, "open")


def _count_rows(
    _dialog: ChatwootDialog, tally: GroupTally, rows: Sequence[tuple[str | None, int]]
) -> None:
    for group, opened in rows:
        tally.add(group, conversations=opened)


def coverage(account: ChatwootAccount) -> Coverage:
    """The dialog without a filter holds every inbox's and team's conversations; two inboxes
    (or two teams) never share one, an inbox and a team may.

    The whole the others are ``part_of`` is the first unfiltered dialog that reads the list
    (``unread_messages`` or ``group_by: inbox``), else the first unfiltered one: a sum leaves
    a part out only beside a whole with the same value, and only a listing whole has unread
    messages. A counting whole named instead (``meta``, a live report) would leave a listing
    inbox and a listing whole both in the "All" sum of unread messages, counting them twice.
    """

    def disjoint(a: ChatwootDialog, b: ChatwootDialog) -> bool:
        first, second = a.filter, b.filter
        return bool(first) and first.keys() == second.keys() and first != second

    return nested(
        sorted(account.dialogs, key=lambda dialog: bool(dialog.filter) or not dialog.walks),
        name=lambda dialog: dialog.name,
        scope=lambda _dialog: account.name,
        is_whole=lambda dialog: not dialog.filter,
        disjoint=disjoint,
    )


PROVIDER = Provider(
    name="chatwoot",
    account_model=ChatwootAccount,
    make_fetcher=ChatwootFetcher,
    coverage=coverage,
)
