"""The queue tally over random worlds: sums that hold, cardinality held, junk refused.

The oracle is the world itself: each test draws items (conversations, rooms, channels) with
their group and values, and computes what a support lead would count by hand (a plain sum per
group, the minimum wait) independently of the tally's own bookkeeping.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.outcome import FetchError, GroupReading, GroupSplit, Reading
from exporter.queues.tally import (
    MAX_GROUP_ID_LENGTH,
    OTHER,
    UNASSIGNED,
    GroupTally,
    split_problem,
)

GROUP_IDS = st.one_of(st.none(), st.sampled_from(["t1", "t2", "t3", "t4", "other", "x" * 30]))
ITEMS = st.lists(
    st.tuples(
        GROUP_IDS,
        st.integers(0, 10**6),
        st.integers(0, 50),
        st.one_of(st.none(), st.floats(1.6e9, 1.8e9)),
    ),
    max_size=60,
)


def _tally(items: list[tuple[str | None, int, int, float | None]], max_groups: int) -> Reading:
    tally = GroupTally(("messages", "mentions", "conversations"), "team", max_groups)
    for group, messages, mentions, oldest in items:
        tally.add(group, messages=messages, mentions=mentions, conversations=1, oldest=oldest)
    return tally.reading()


@settings(max_examples=300, deadline=None)
@given(items=ITEMS, max_groups=st.integers(1, 8))
def test_groups_add_up_to_the_dialog_and_stay_within_max_groups(
    items: list[tuple[str | None, int, int, float | None]], max_groups: int
) -> None:
    reading = _tally(items, max_groups)
    assert reading.messages == sum(item[1] for item in items)
    assert reading.mentions == sum(item[2] for item in items)
    assert reading.conversations == len(items)
    waits = [item[3] for item in items if item[3] is not None]
    assert reading.oldest_unread_timestamp == (min(waits) if waits else None)
    split = reading.groups
    assert split is not None
    assert len(split.groups) <= max_groups
    assert sum(g.messages or 0 for g in split.groups) == reading.messages
    assert sum(g.mentions or 0 for g in split.groups) == reading.mentions
    assert sum(g.conversations or 0 for g in split.groups) == reading.conversations
    group_waits = [g.oldest_unread_timestamp for g in split.groups if g.oldest_unread_timestamp]
    assert (min(group_waits) if group_waits else None) == reading.oldest_unread_timestamp
    distinct = {UNASSIGNED if group is None else group for group, *_ in items}
    served = {g.group for g in split.groups}
    if len(distinct) <= max_groups:
        assert split.folded == 0
        # Every group is served, a provider id "other" escaped so it never merges with ours.
        assert served == {"id:other" if g == OTHER else g for g in distinct}
    else:
        assert split.folded == len(distinct) - (max_groups - 1)
        assert OTHER in served
    assert split_problem(reading, max_groups) is None


@settings(max_examples=200, deadline=None)
@given(items=ITEMS, max_groups=st.integers(1, 8))
def test_the_groups_kept_are_those_with_the_most_waiting(
    items: list[tuple[str | None, int, int, float | None]], max_groups: int
) -> None:
    by_group: dict[str, int] = defaultdict(int)
    for group, messages, *_ in items:
        by_group["id:other" if group == OTHER else group or UNASSIGNED] += messages
    reading = _tally(items, max_groups)
    assert reading.groups is not None
    kept = {g.group: g.messages or 0 for g in reading.groups.groups if g.group != OTHER}
    if reading.groups.folded:
        smallest_kept = min(kept.values(), default=math.inf)
        folded = [n for group, n in by_group.items() if group not in kept]
        assert all(n <= smallest_kept for n in folded)
    for group, messages in kept.items():
        assert messages == by_group[group]


def test_without_group_by_the_tally_only_sums() -> None:
    tally = GroupTally(("messages", "conversations"))
    tally.add("t1", messages=3, conversations=1, oldest=1_700_000_000.0)
    tally.add(None, messages=2, conversations=1)
    assert tally.reading() == Reading(
        messages=5, conversations=2, oldest_unread_timestamp=1_700_000_000.0
    )


def test_an_empty_answer_counts_zero_not_absent() -> None:
    reading = GroupTally(("messages", "conversations"), "inbox").reading()
    assert reading == Reading(messages=0, conversations=0, groups=GroupSplit("inbox", ()))


def test_a_capped_list_leaves_the_rest_of_the_total_in_other() -> None:
    tally = GroupTally(("messages",), "channel", 20)
    tally.add_group("c1", messages=4)
    tally.add_group("c2", messages=1)
    reading = tally.reading(totals=Reading(messages=9))
    assert reading.messages == 9
    assert reading.groups is not None
    assert {g.group: g.messages for g in reading.groups.groups} == {"c1": 4, "c2": 1, OTHER: 4}
    with pytest.raises(FetchError, match="add up to more than the total"):
        tally.reading(totals=Reading(messages=2))


@pytest.mark.parametrize(
    ("group", "problem"),
    [
        pytest.param("a\nb", "control characters", id="line-break"),
        pytest.param("x" * 10_240, f"longer than {MAX_GROUP_ID_LENGTH}", id="10-kb"),
        pytest.param("", "empty", id="empty"),
    ],
)
def test_a_junk_group_id_fails_the_dialog(group: str, problem: str) -> None:
    tally = GroupTally(("messages",), "room")
    with pytest.raises(FetchError, match=problem):
        tally.add_group(group, messages=1)


def test_a_group_seen_twice_in_one_answer_is_refused() -> None:
    tally = GroupTally(("messages",), "channel")
    tally.add_group("c1", messages=1)
    with pytest.raises(FetchError, match="appears twice"):
        tally.add_group("c1", messages=1)


def test_names_are_never_email_addresses() -> None:
    tally = GroupTally(("messages",), "operator")
    tally.add("u1", messages=1, name="alice@example.com")
    tally.add("u2", messages=1, name="Bob\nSmith")
    reading = tally.reading()
    assert reading.groups is not None
    assert {g.group: g.name for g in reading.groups.groups} == {"u1": None, "u2": "Bob Smith"}


def test_100000_groups_fold_into_max_groups() -> None:
    tally = GroupTally(("messages",), "channel", 1000)
    for number in range(100_000):
        tally.add_group(f"c{number}", messages=number % 97)
    reading = tally.reading()
    assert reading.groups is not None
    assert len(reading.groups.groups) == 1000
    assert reading.groups.folded == 100_000 - 999
    assert sum(g.messages or 0 for g in reading.groups.groups) == sum(
        n % 97 for n in range(100_000)
    )


@pytest.mark.parametrize(
    ("split", "problem"),
    [
        pytest.param(
            GroupSplit("team", (GroupReading("a", messages=1), GroupReading("b", messages=1))),
            "add up to 2, not the dialog's 3",
            id="sum",
        ),
        pytest.param(
            GroupSplit("team", (GroupReading("a", messages=3), GroupReading("a", messages=0))),
            "appears twice",
            id="duplicate",
        ),
        pytest.param(
            GroupSplit("team", (GroupReading("a", messages=True),)),
            "not a valid value",
            id="bool",
        ),
        pytest.param(
            GroupSplit(
                "team", tuple(GroupReading(f"g{n}", messages=1 if n < 3 else 0) for n in range(30))
            ),
            "more than max_groups",
            id="too-many",
        ),
    ],
)
def test_a_split_that_does_not_hold_is_named(split: GroupSplit, problem: str) -> None:
    assert problem in (split_problem(Reading(messages=3, groups=split), 20) or "")
