"""The `spherehead` command: tools for generating, converting, datasets and benchmarks.

Each sub-command lives in the module that owns its job and is registered here.
"""
from __future__ import annotations

import click


@click.group(context_settings={'help_option_names': ['-h', '--help']})
def main() -> None:
    """SphereHead tools: generate, video, dataset, convert, bench, ..."""


def _register() -> None:
    from spherehead.tools.generate import generate
    main.add_command(generate)
    from spherehead.data.commands import dataset; main.add_command(dataset)
    from spherehead.tools.bench import bench; main.add_command(bench)
    from spherehead.tools.convert import convert; main.add_command(convert)


_register()

if __name__ == '__main__':
    main()
