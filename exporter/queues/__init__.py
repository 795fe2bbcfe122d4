"""Queues: a dialog's value split by team, inbox, owner, room or channel (``group_by``).

``tally`` adds a dialog's items up and splits them with the cardinality held; ``names`` looks
up groups' display names apart from scrapes; ``coverage`` says which dialogs already count
which others' items, so totals count each unread item once.
"""
