"""`spherehead convert`: a network (released .pkl or our .safetensors) -> our .safetensors."""
from __future__ import annotations

from pathlib import Path

import click

from spherehead.errors import UserError


@click.command()
@click.argument('source', type=click.Path(dir_okay=False))
@click.argument('dest', type=click.Path(dir_okay=False))
@click.option('--which', type=click.Choice(['G_ema', 'G']), default='G_ema', show_default=True,
              help='which generator of a released pickle')
@click.option('--verbose', '-v', is_flag=True, help='also print the training-only tensors that were skipped')
def convert(source: str, dest: str, which: str, verbose: bool) -> None:
    """Convert SOURCE (a released EG3D / PanoHead / SphereHead .pkl, read without running its code)
    to DEST, a .safetensors network of ours."""
    from spherehead.checkpoint import load_generator, save_generator
    try:
        if Path(dest).suffix != '.safetensors':
            raise UserError(f'{dest}: the output must end in .safetensors')
        if not Path(source).is_file():
            raise UserError(f'{source}: no such file')
        if Path(source).suffix == '.pkl':
            from spherehead.released import load_released_generator
            G = load_released_generator(source, which=which)
        else:
            G = load_generator(source)
        save_generator(G, dest)
    except UserError as e:
        raise click.ClickException(str(e))
    cfg = G.config
    click.echo(f'{dest}: {getattr(G, "released_family", "spherehead")} {cfg.representation} generator, '
               f'{cfg.img_resolution}px, {sum(t.numel() for t in G.state_dict().values())} weights, from {source}')
    if verbose:
        ignored = getattr(G, 'released_ignored', [])
        click.echo(f'{source}: ignored {len(ignored)} training-only tensors'
                   + (f': {", ".join(ignored)}' if ignored else ''))
