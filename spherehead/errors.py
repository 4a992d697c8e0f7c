"""User-facing errors: one line saying which file, what is wrong and what to do.

Command-line entry points catch ``UserError`` and print its message without a traceback.
"""


class UserError(Exception):
    """A mistake in what the user gave us (a path, a file's content, an option)."""
