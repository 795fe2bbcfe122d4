"""The Intercom and Stream Chat data sets the tests assert, and the accounts that read them.

Kept apart from ``conftest`` so that the four first providers' fixtures stay as they are: a
test that wants these providers too calls ``populate_reach`` and appends ``reach_accounts``.
"""

from __future__ import annotations

from exporter.simulator import IntercomConversation, Simulator, StreamChannel

INTERCOM_TEAM = "5017691"
INTERCOM_ADMIN = 991267
INTERCOM_WAITING = 1_750_000_000  # unix seconds


def intercom_backlog(size: int) -> dict[str, IntercomConversation]:
    """``size`` open conversations waiting since ``INTERCOM_WAITING`` + i minutes.

    Every second one is the team's, every fifth one the teammate's; ids count down as waiting
    times go up, so an API that ignores ``sort`` answers newest first.
    """
    return {
        str(900_000 - i): IntercomConversation(
            waiting_since=INTERCOM_WAITING + i * 60,
            team_assignee_id=INTERCOM_TEAM if i % 2 == 0 else None,
            admin_assignee_id=INTERCOM_ADMIN if i % 5 == 0 else None,
        )
        for i in range(1, size + 1)
    }


def populate_reach(sim: Simulator) -> None:
    """40 waiting conversations, and three that are not waiting on the team."""
    conversations = intercom_backlog(40)
    # closed, snoozed, and answered by a teammate: none of them is waiting on the team
    conversations["1"] = IntercomConversation(
        waiting_since=INTERCOM_WAITING - 1000, state="closed", team_assignee_id=INTERCOM_TEAM
    )
    conversations["2"] = IntercomConversation(
        waiting_since=INTERCOM_WAITING - 2000, state="snoozed"
    )
    conversations["3"] = IntercomConversation(
        team_assignee_id=INTERCOM_TEAM, admin_assignee_id=INTERCOM_ADMIN
    )
    sim.intercom.conversations = conversations
    sim.stream.users = {
        "agent-42": [
            StreamChannel("messaging", "support-1", unread=4),
            StreamChannel("messaging", "support-2", unread=3),
            StreamChannel("livestream", "launch", unread=9),
            StreamChannel("team", "ops", unread=0),
        ],
        "agent-7": [StreamChannel("messaging", "support-3", unread=2)],
    }


# (conversations, oldest waiting) per dialog of ``reach_accounts`` for ``populate_reach``
INTERCOM_EXPECTED = {
    "inbox": (40.0, INTERCOM_WAITING + 60.0),
    "billing": (20.0, INTERCOM_WAITING + 120.0),
    "alice": (8.0, INTERCOM_WAITING + 300.0),
}


# The account of each provider in ``reach_accounts``
# (messages, unread channels) per dialog of ``reach_accounts`` for ``populate_reach``
STREAM_EXPECTED = {
    "agent-42": (16.0, 3.0),
    "agent-42-messaging": (7.0, 2.0),
    "agent-42-team": (0.0, 0.0),  # a member of a team channel, with nothing unread in it
    "agent-7": (2.0, 1.0),
}


def reach_accounts(sim: Simulator) -> str:
    """Accounts to append to ``conftest.config_yaml`` (list items under ``accounts:``)."""
    return f"""\
  - name: acme-intercom
    provider: intercom
    base_url: {sim.intercom.url}
    access_token: {sim.intercom.access_token}
    dialogs:
      - name: inbox
      - name: billing
        team_id: "{INTERCOM_TEAM}"
      - name: alice
        admin_id: {INTERCOM_ADMIN}
  - name: acme-stream
    provider: stream
    base_url: {sim.stream.url}
    api_key: {sim.stream.api_key}
    api_secret: {sim.stream.api_secret}
    dialogs:
      - name: agent-42
        user_id: agent-42
      - name: agent-42-messaging
        user_id: agent-42
        channel_type: messaging
      - name: agent-42-team
        user_id: agent-42
        channel_type: team
      - name: agent-7
        user_id: agent-7
"""


def reach_config(sim: Simulator) -> str:
    """A config of only these providers' accounts."""
    return "accounts:\n" + reach_accounts(sim)
