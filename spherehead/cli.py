"""The `spherehead` command: tools for generating, converting, datasets and benchmarks.

Each sub-command lives in the module that owns its job and is registered here.
"""
from __future__ import annotations

import click

from spherehead import __version__
from spherehead.tools.cli_common import group


@group()
@click.version_option(__version__, '--version', prog_name='spherehead', message='%(prog)s %(version)s')
def main() -> None:
    """SphereHead tools (each command has --help). Errors print one line; exit status 2 = bad arguments,
    1 = failed."""


def _register() -> None:
    from spherehead.tools.generate import generate
    main.add_command(generate)
    from spherehead.data.commands import dataset; main.add_command(dataset)
    from spherehead.tools.bench import bench; main.add_command(bench)
    from spherehead.tools.convert import convert; main.add_command(convert)
    from spherehead.tools.video import video; main.add_command(video)
    from spherehead.tools.interpolate import interpolate; main.add_command(interpolate)
    from spherehead.tools.mesh import mesh; main.add_command(mesh)


_register()

if __name__ == '__main__':
    main()
