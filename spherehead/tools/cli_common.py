"""Shared pieces of every command line: one-line errors, checked option types, common options.

One face for the commands (``cc.command``, ``cc.SeedList``, ``cc.network_option``, ...): the errors
are one_line_errors.py, the value types option_types.py; the common options are here.

Every mistake a user can make on the command line ends as ONE line on stderr,
``Error: <what is wrong, with which value>; <what to do>``, never a traceback, with exit
status 2 for a bad argument and 1 for a failure while running. Use it like this::

    import click
    from spherehead.tools import cli_common as cc

    @cc.command()                                   # = click.command with one-line errors and -h
    @cc.network_option()                            # --network: a file, released .pkl, 'demo', 'random:tiny'
    @cc.device_option()                             # --device: cpu | cuda | cuda:N (checked; default cuda if usable)
    @click.option('--seeds', type=cc.SeedList(), default='0-3')       # -> list[int], unique, 0..2**32-1
    @click.option('--yaws', type=cc.FloatList('yaw'), default='0,90')  # -> list[float], finite
    @click.option('--trunc', type=cc.Finite(), default=0.7)          # float, not nan/inf
    @click.option('--out', type=cc.OutputFile(('.mp4', '.gif')), required=True)
    def video(network, device, seeds, yaws, trunc, out):
        cc.make_parent(out)                         # creates folders; failure -> UserError
        G = cc.load_network(network, device)        # UserError from loading -> one line, exit 1
        ...

- Raise ``click.BadParameter(msg, param_hint='--x')`` for a bad value found in the body (exit 2),
  ``spherehead.errors.UserError(msg)`` for a failure (exit 1). Both become one line.
- DatasetError, OSError (file system), MemoryError and out-of-memory RuntimeErrors are turned
  into one line too. Anything else is a bug and keeps its traceback.
- Groups: ``@cc.group()``; a command registered in such a group gets the same treatment even
  if it was made with plain ``click.command`` (the group catches what its sub-commands raise).
- Standalone scripts (visualizer.py) use ``@cc.command()`` the same way.
- ``SPHEREHEAD_TRACEBACK=1`` in the environment re-raises errors with their traceback (debugging).
"""
from __future__ import annotations

import click

from spherehead.tools.one_line_errors import (Command, Group, OneLineError, command, group, one_line,
                                              translate_error)
from spherehead.tools.option_types import (MAX_LIST, MAX_SEED, NETWORK_HELP, NETWORK_SUFFIXES, Device, Finite,
                                           FloatList, Network, OutputDir, OutputFile, OutputPath, SeedList,
                                           check_count, check_finite, default_device, make_dir, make_parent)

__all__ = ['command', 'group', 'Command', 'Group', 'OneLineError', 'one_line', 'translate_error',
           'SeedList', 'FloatList', 'Finite', 'Device', 'Network', 'OutputFile', 'OutputDir', 'OutputPath',
           'check_finite', 'default_device', 'make_dir', 'make_parent', 'check_count',
           'MAX_SEED', 'MAX_LIST', 'NETWORK_SUFFIXES', 'NETWORK_HELP', 'TRUNC_RANGE',
           'network_option', 'device_option', 'trunc_option', 'sphere_option', 'load_network']

# ----------------------------------------------------------------------------- common options

def network_option(default: str = 'demo', allow_dir: bool = False, **kwargs):
    """``--network`` (checked, see Network); the value is a str for load_network."""
    kwargs.setdefault('help', NETWORK_HELP)
    return click.option('--network', type=Network(allow_dir), default=default, show_default=True, **kwargs)


def device_option(**kwargs):
    """``--device`` (checked, see Device); default: cuda if usable, else cpu."""
    kwargs.setdefault('help', 'cpu, cuda or cuda:N  [default: cuda if usable, else cpu]')
    return click.option('--device', type=Device(), default='auto', **kwargs)


TRUNC_RANGE = (0.0, 2.0)      # psi < 0 mirrors the latent through the average head; > 1 exaggerates (up to 2)


def trunc_option(default: float = 0.7, **kwargs):
    """``--trunc`` truncation psi in 0..2 (1 = none, 0 = the average head)."""
    kwargs.setdefault('help', 'truncation psi, 0..2 (1 = none, 0 = the average head, above 1 exaggerates)')
    return click.option('--trunc', 'truncation_psi', type=Finite('truncation psi', *TRUNC_RANGE), default=default,
                        show_default=True, **kwargs)


def sphere_option(default: str = 'fused', **kwargs):
    """``--sphere A|B|fused`` (A = F1, B = F2)."""
    from spherehead.config import SPHERE_MODES
    kwargs.setdefault('help', 'which sphere renders: A (F1), B (F2) or fused (tri-plane / tri-grid models: fused only)')
    return click.option('--sphere', type=click.Choice(SPHERE_MODES), default=default, show_default=True, **kwargs)


def load_network(source: str, device: str = 'cpu'):
    """sh.load_generator with the CLI's conventions (UserError -> one line, exit 1)."""
    from spherehead.checkpoint import load_generator
    return load_generator(source, device=device)
