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


@main.command('view', add_help_option=False, context_settings={'ignore_unknown_options': True})
@click.argument('args', nargs=-1, type=click.UNPROCESSED)
def view(args: tuple[str, ...]) -> None:
    """The live visualizer: view [NETWORK|RUN_FOLDER] [OPTIONS] (view --help for its options)."""
    # The GUI is the top-level `viz` package, imported only when this command runs, so `spherehead --help`
    # loads no GUI package and the library never depends on it.
    import importlib
    try:
        gui = importlib.import_module('viz.cli')
    except ModuleNotFoundError as e:
        if e.name not in ('viz', 'viz.cli'):
            raise
        from spherehead.errors import UserError
        raise UserError(f'the visualizer is not installed ({e}); reinstall with `pip install -e .[gui]` '
                        'in the checkout') from None
    gui.main.main(args=list(args), prog_name='spherehead view')


def _register() -> None:
    from spherehead.tools.generate import generate
    main.add_command(generate)
    from spherehead.tools.dataset import dataset; main.add_command(dataset)
    from spherehead.tools.bench import bench; main.add_command(bench)
    from spherehead.tools.convert import convert; main.add_command(convert)
    from spherehead.tools.video import video; main.add_command(video)
    from spherehead.tools.interpolate import interpolate; main.add_command(interpolate)
    from spherehead.tools.mesh import mesh; main.add_command(mesh)
    from spherehead.tools.splats import splats; main.add_command(splats)
    from spherehead.tools.metrics import metrics; main.add_command(metrics)
    from spherehead.tools.study import study; main.add_command(study)
    from spherehead.tools.prepare import prepare; main.add_command(prepare)
    from spherehead.tools.invert import invert; main.add_command(invert)


_register()

if __name__ == '__main__':
    main()
