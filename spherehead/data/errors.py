"""The one exception class of the data package.

Every problem with a user's dataset (missing file, bad label, unreadable image, ...) is
raised as a :class:`DatasetError` whose message is one line: which file, what is wrong,
what to do. The command line turns it into ``Error: <message>`` and exit status 1.
"""
from __future__ import annotations

_PREFIX = 'DatasetError: '


class DatasetError(Exception):
    """A bad dataset input; ``str(err)`` is a single user-facing line.

    A DataLoader worker re-raises the error in the main process with the worker's traceback
    in the message; only the original line is kept, so the message stays one line there too.
    """

    def __init__(self, message: str):
        text = str(message)
        if 'Traceback' in text and _PREFIX in text:
            text = text[text.rindex(_PREFIX) + len(_PREFIX):]
        super().__init__(' '.join(text.split()))
