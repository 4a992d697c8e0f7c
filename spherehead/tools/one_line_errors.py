"""One-line errors for every command: ``Error: <what is wrong, with which value>; <what to do>``.

``command()`` / ``group()`` are click's with these errors and ``-h``. Exit status 2 for a bad
argument, 1 for a failure while running; never a traceback for a user's mistake:

- ``click.BadParameter(msg, param_hint='--x')`` raised in the body -> exit 2;
  ``spherehead.errors.UserError(msg)`` -> exit 1. Both become one line.
- DatasetError, OSError (file system), MemoryError and out-of-memory RuntimeErrors are turned
  into one line too. Anything else is a bug and keeps its traceback.
- A group gives the same treatment to every sub-command, even one made with plain
  ``click.command`` (the group catches what its sub-commands raise).
- Warnings print as one ``warning: ...`` line.
- ``SPHEREHEAD_TRACEBACK=1`` in the environment re-raises errors with their traceback (debugging).
"""
from __future__ import annotations

import os
import warnings

import click

from spherehead.errors import UserError

def one_line(text: str) -> str:
    """Collapse whitespace (newlines included) so a message stays on one line."""
    return ' '.join(str(text).split())


class OneLineError(click.ClickException):
    """What the user sees: ``Error: <message>`` on one line of stderr, with an exit status."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(one_line(message))
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f'Error: {self.format_message()}', err=True, file=file)


def _is_oom(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, MemoryError) or type(e).__name__ == 'OutOfMemoryError' or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in text or 'out of memory' in text))


def translate_error(e: BaseException, ctx: click.Context | None = None) -> BaseException:
    """The one-line error a user should see for ``e``, or ``e`` itself if it is a bug or not an error."""
    from spherehead.data.errors import DatasetError
    no_args_help = getattr(click.exceptions, 'NoArgsIsHelpError', ())   # a bare group prints its help
    if isinstance(e, (OneLineError, click.exceptions.Exit, click.Abort)) or isinstance(e, no_args_help):
        return e
    if isinstance(e, click.UsageError):
        ctx = e.ctx or ctx
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ''
        msg = one_line(e.format_message()).rstrip('.')
        return OneLineError(msg[:1].lower() + msg[1:] + hint, 2)
    if isinstance(e, click.ClickException):
        return OneLineError(e.format_message(), e.exit_code)
    if isinstance(e, (UserError, DatasetError)):
        return OneLineError(str(e), 1)
    if _is_oom(e):
        return OneLineError(f'out of memory ({one_line(e)[:160]}); ask for less (smaller sizes, batch or counts) '
                            f'or use a machine with more memory', 1)
    if isinstance(e, OSError) and e.strerror:
        where = f'{e.filename}: ' if e.filename else ''
        return OneLineError(f'{where}{e.strerror}; check the path, its permissions and free disk space', 1)
    return e


class _OneLineErrorsMixin:
    """Turns user mistakes raised while parsing or running into one-line errors (see module doc)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except Exception as e:  # noqa: BLE001 - translate_error re-raises what it does not know
            raise self._translate(e, parent)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as e:  # noqa: BLE001
            raise self._translate(e, ctx)

    def main(self, *args, **kwargs):
        # Warnings (e.g. "the demo model file is missing") as one 'warning: ...' line, not file:line + source.
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return super().main(*args, **kwargs)

    @staticmethod
    def _translate(e: Exception, ctx) -> BaseException:
        if os.environ.get('SPHEREHEAD_TRACEBACK') == '1':
            return e
        out = translate_error(e, ctx)
        if out is not e:
            out.__cause__ = None
            out.__suppress_context__ = True
        return out


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f'warning: {one_line(message)}', err=True)


class Command(_OneLineErrorsMixin, click.Command):
    """click.Command with one-line errors."""


class Group(_OneLineErrorsMixin, click.Group):
    """click.Group with one-line errors, for itself and every sub-command."""


_CONTEXT = {'help_option_names': ['-h', '--help']}


def command(name: str | None = None, **kwargs):
    """``click.command`` with one-line errors and ``-h``."""
    kwargs.setdefault('cls', Command)
    kwargs.setdefault('context_settings', _CONTEXT)
    return click.command(name, **kwargs)


def group(name: str | None = None, **kwargs):
    """``click.group`` with one-line errors and ``-h``."""
    kwargs.setdefault('cls', Group)
    kwargs.setdefault('context_settings', _CONTEXT)
    return click.group(name, **kwargs)
