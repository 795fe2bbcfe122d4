"""Pacing of upstream calls under a daily request budget (e.g. Crisp's 5,000 a day).

Two rules together keep a day of scrapes within the budget whatever the scrape interval:
refreshes are spaced so that, at the cost the last refresh had, the budget lasts the whole
day; and a rolling 24-hour ledger refuses a refresh that would overspend outright.
"""

from __future__ import annotations

from collections import deque

DAY_SECONDS = 86400.0


class DailyBudget:
    """Rolling 24-hour ledger of requests spent for one account."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._spent: deque[float] = deque()
        self._last_refresh_at: float | None = None
        self._last_refresh_cost = 1

    def spent(self, now: float) -> int:
        """Requests made in the 24 hours before ``now``."""
        while self._spent and self._spent[0] <= now - DAY_SECONDS:
            self._spent.popleft()
        return len(self._spent)

    def spend(self, now: float) -> None:
        """Account for one request made at ``now``."""
        self._spent.append(now)

    def interval(self) -> float:
        """Seconds between refreshes that spread the budget evenly over a day."""
        return self._last_refresh_cost * DAY_SECONDS / self.budget

    def allows_refresh(self, now: float) -> bool:
        """Whether a refresh may start now, given pacing and what is left for today."""
        if self.spent(now) + self._last_refresh_cost > self.budget:
            return False
        return self._last_refresh_at is None or now - self._last_refresh_at >= self.interval()

    def refresh_started(self, now: float) -> None:
        """Note the start of a refresh (pacing is measured between starts)."""
        self._last_refresh_at = now

    def refresh_finished(self, cost: int) -> None:
        """Remember what the refresh cost; the next one is expected to cost about the same."""
        self._last_refresh_cost = max(1, cost)
