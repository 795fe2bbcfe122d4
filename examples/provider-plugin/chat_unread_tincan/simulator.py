"""A loopback Tincan API for the plugin's tests (and for trying the plugin without an account).

It checks what the real API would: the key, the agent, the queue; and answers errors in
Tincan's envelope ``{"error": {"type", "message"}}``. ``rate_limited`` makes the next answers
429 with ``Retry-After``, as Tincan throttles.

Run it alone: ``python -m chat_unread_tincan.simulator --port 9870 --api-key KEY``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from aiohttp import web

Inbox = dict[str, int | float | None]


@dataclass
class FakeTincan:
    """Agents' inboxes keyed by (agent, queue); queue ``None`` is the whole inbox."""

    api_key: str
    inboxes: dict[tuple[str, str | None], Inbox] = field(default_factory=dict)
    rate_limited: int = 0
    seen_queries: list[dict[str, str]] = field(default_factory=list)

    def set_inbox(
        self,
        agent: str,
        *,
        messages: int,
        mentions: int = 0,
        threads: int = 0,
        oldest: float | None = None,
        queue: str | None = None,
    ) -> None:
        self.inboxes[(agent, queue)] = {
            "unread_messages": messages,
            "unread_mentions": mentions,
            "waiting_threads": threads,
            "oldest_waiting_at": oldest,
        }

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v2/agents/{agent}/inbox", self._inbox)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    @staticmethod
    def _error(status: int, kind: str, message: str, **headers: str) -> web.Response:
        body = {"error": {"type": kind, "message": message}}
        return web.json_response(body, status=status, headers=headers)

    async def _inbox(self, request: web.Request) -> web.Response:
        self.seen_queries.append(dict(request.query))
        if request.headers.get("Authorization") != f"Tincan-Key {self.api_key}":
            return self._error(401, "unauthorized", "missing or wrong Tincan-Key")
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return self._error(429, "rate_limited", "slow down", **{"Retry-After": "30"})
        agent = request.match_info["agent"]
        inbox = self.inboxes.get((agent, request.query.get("queue")))
        if inbox is None:
            return self._error(404, "not_found", f"no inbox for agent {agent}")
        return web.json_response({"agent_id": agent, "inbox": inbox})

    async def _unknown(self, request: web.Request) -> web.Response:
        return self._error(404, "not_found", f"no route {request.method} {request.path}")


def main() -> None:
    """Serve a simulator with two demo agents on loopback until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9870)
    parser.add_argument("--api-key", default="tincan-demo-key")
    args = parser.parse_args()
    fake = FakeTincan(args.api_key)
    fake.set_inbox("alice", messages=4, mentions=1, threads=2, oldest=1_700_000_000)
    fake.set_inbox("bob", messages=0)
    web.run_app(fake.make_app(), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
