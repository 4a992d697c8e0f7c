"""The one exception class of the data package.

Every problem with a user's dataset (missing file, bad label, unreadable image, ...) is
raised as a :class:`DatasetError` whose message is one line: which file, what is wrong,
what to do. The command line turns it into ``Error: <message>`` and exit status 1.
"""
from __future__ import annotations


class DatasetError(Exception):
    """A bad dataset input; ``str(err)`` is a single user-facing line."""

    def __init__(self, message: str):
        super().__init__(' '.join(str(message).split()))
