"""Fetching, apart from rendering: which providers exist, when each account calls
upstream (budgets, pacing, single flight), and what a provider is not trusted with."""
