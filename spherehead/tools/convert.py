"""`spherehead convert`: a network (released .pkl or our .safetensors) -> our .safetensors."""
from __future__ import annotations

from pathlib import Path

import click

from spherehead.tools import cli_common as cc


class _NetworkFile(cc.Network):
    """An existing .pkl / .safetensors file ('demo' and 'random:' are not files to convert)."""

    def convert(self, value, param, ctx) -> str:
        if str(value) == 'demo' or str(value).startswith('random:'):
            self.fail(f"{value!r} is not a file; give a released .pkl or a .safetensors to convert", param, ctx)
        return super().convert(value, param, ctx)


@cc.command()
@click.argument('source', type=_NetworkFile())
@click.argument('dest', type=cc.OutputFile(('.safetensors',), 'network'))
@click.option('--which', type=click.Choice(['G_ema', 'G']), default='G_ema', show_default=True,
              help='which generator of a released pickle')
@click.option('--verbose', '-v', is_flag=True, help='also print the training-only tensors that were skipped')
def convert(source: str, dest: str, which: str, verbose: bool) -> None:
    """Convert SOURCE (a released EG3D / PanoHead / SphereHead .pkl, read without running its code)
    to DEST, a .safetensors network of ours."""
    from spherehead.checkpoint import check_network_file, load_generator, save_generator
    if Path(source).suffix.lower() == '.pkl':
        from spherehead.released import load_released_generator
        G = load_released_generator(check_network_file(source), which=which)
    else:
        G = load_generator(source)
    save_generator(G, cc.make_parent(dest))
    cfg = G.config
    click.echo(f'{dest}: {getattr(G, "released_family", "spherehead")} {cfg.representation} generator, '
               f'{cfg.img_resolution}px, {sum(t.numel() for t in G.state_dict().values())} weights, from {source}')
    if verbose:
        ignored = getattr(G, 'released_ignored', [])
        click.echo(f'{source}: ignored {len(ignored)} training-only tensors'
                   + (f': {", ".join(ignored)}' if ignored else ''))
