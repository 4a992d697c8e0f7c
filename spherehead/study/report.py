"""Measure the arms of a study and write the report: a table (Markdown), the same numbers as JSON,
and one figure (the same seeds for every arm at yaws 0 / 90 / 180, and the sphere weights).

Per arm, on its newest EMA generator snapshot:

- ``ff_rate``: fraction of seeds whose back views show a face (spherehead.metrics.ff_rate);
- ``mirror_score``: how much the back repeats the mirrored front (spherehead.metrics.mirror);
- per-view Fréchet distance (front |yaw| < 45, side, back |yaw| >= 135) and the 3D-consistency
  variant (conditioned on the frontal camera, rendered at dataset poses), against the dataset:
  FID when an Inception file is named, else **FD-VGG16** (the same protocol on VGG16 relu5_3
  features, spherehead.metrics.vgg16; its numbers are not FIDs);
- seam and pole ratios (spherehead.metrics.seams) of the image the arm renders; for dual-sphere
  arms also of sphere A and sphere B rendered alone;
- kimg, median sec/kimg of its training ticks, and the device and wall time of its sessions.

Results are cached per arm and snapshot under ``<out>/cache`` so a second report only measures new
snapshots.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from spherehead.errors import UserError
from spherehead.study.arms import ARMS
from spherehead.study.runner import SESSIONS_FILE, arm_run_dir, load_study

FIGURE_YAWS = (0.0, 90.0, 180.0)


@dataclass
class ReportSettings:
    """How much each measurement renders (the report states them)."""
    num_fd: int = 1000            # generated images per view bin and for the 3D variant
    seeds: int = 200              # seeds for ff_rate and mirror_score
    seam_seeds: int = 50          # seeds for the seam / pole ratios (5 views each)
    figure_seeds: tuple[int, ...] = (0, 1, 2)
    seed: int = 0                 # first latent seed of every measurement

    def key(self, features: str) -> str:
        text = json.dumps([asdict(self), features], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass
class ArmRecord:
    """What the study folder says of one arm."""
    name: str
    label: str
    representation: str
    vico: bool | None                    # None: a reference network, not an arm
    run_dir: str | None
    snapshot: str | None
    kimg: float | None = 0.0             # None: unknown (a reference network)
    sec_per_kimg: float | None = None
    devices: list = field(default_factory=list)
    train_wall_s: float = 0.0            # wall seconds of the sessions that trained it
    gpu_share_s: float = 0.0             # wall seconds / arms trained at once, summed over sessions


def collect_arms(study_dir: str | Path) -> list[ArmRecord]:
    """The arms of a study folder with their newest snapshot, kimg, speed and sessions."""
    from spherehead.checkpoint import numbered_files
    study_dir = Path(study_dir)
    study = load_study(study_dir)
    if study is None:
        raise UserError(f'{study_dir}: no study.json here; give the --out folder of `spherehead study run`')
    sessions = []
    if (study_dir / SESSIONS_FILE).is_file():
        sessions = [json.loads(l) for l in (study_dir / SESSIONS_FILE).read_text().splitlines() if l.strip()]
    records = []
    for name in study.arms:
        arm = ARMS[name]
        run = arm_run_dir(study_dir, name)
        snaps = numbered_files(run) if run is not None else []
        rec = ArmRecord(name, arm.label, arm.representation, arm.vico, str(run) if run else None,
                        str(snaps[-1][1]) if snaps else None, kimg=snaps[-1][0] if snaps else 0.0)
        if run is not None and (run / 'stats.jsonl').is_file():
            ticks = [json.loads(l) for l in (run / 'stats.jsonl').read_text().splitlines() if l.strip()]
            spk = [t['Timing/sec_per_kimg'] for t in ticks if t.get('Timing/sec_per_kimg')]
            if spk:
                rec.sec_per_kimg = statistics.median(spk)
            if ticks:   # the true kimg (snapshot names round it down to whole kimg)
                rec.kimg = float(ticks[-1].get('kimg', rec.kimg))
        for s in sessions:
            if name in s.get('arms', {}):
                rec.train_wall_s += float(s['wall_s'])
                rec.gpu_share_s += float(s['wall_s']) / max(1, len(s['arms']))
                if s['device'] not in rec.devices:
                    rec.devices.append(s['device'])
        records.append(rec)
    return records


def measure_arm(G, data: str, feature_net, settings: ReportSettings, device: str | torch.device = 'cpu',
                cache_dir: str | Path | None = None, progress: bool = True, fid: bool = False) -> dict:
    """All numbers of one generator (see the module docstring). ``fid``: feature_net is Inception."""
    from spherehead.metrics import compute_metrics
    from spherehead.metrics.seams import seam_pole_scores
    prefix = 'fid' if fid else 'fd'
    out: dict = {}
    t0 = time.time()
    r = compute_metrics(G, None, ['ff_rate', 'mirror_score'], num=settings.seeds, device=device, seed=settings.seed,
                        progress=progress)
    out.update(r)
    r = compute_metrics(G, data, ['fid_front', 'fid_side', 'fid_back', 'fid3d'], num=settings.num_fd, device=device,
                        seed=settings.seed, progress=progress, cache_dir=cache_dir, feature_net=feature_net)
    out.update({f'{prefix}_front': r['fid_front'], f'{prefix}_side': r['fid_side'], f'{prefix}_back': r['fid_back'],
                f'{prefix}3d': r['fid3d']})
    modes = ('fused', 'A', 'B') if G.config.representation == 'dual_sphere' else ('fused',)
    seams = seam_pole_scores(G, settings.seam_seeds, settings.seed, modes, device=device, progress=progress)
    out['seams'] = seams
    own = seams['fused']
    out['seam'] = _nanmax([own['A']['seam'], own['B']['seam']])
    out['pole'] = _nanmax([own['A']['pole'], own['B']['pole']])
    out['measure_s'] = round(time.time() - t0, 1)
    return out


def _nanmax(values) -> float:
    values = [v for v in values if v == v]
    return max(values) if values else math.nan


@torch.no_grad()
def render_figure(generators: list[tuple[str, object]], seeds, device='cpu') -> np.ndarray:
    """uint8 [rows * R, max(R, 128) + (3 * len(seeds) + 3) * R, 3]: a row per arm: its label, each seed at yaws
    0 / 90 / 180 (conditioned on the frontal camera, truncation 0.7), then for sphere arms the sphere
    weights on the surface of the first seed at the same yaws (red = sphere A's weight, blue = B's;
    dark = a seam or a pole). All generators must have one output resolution."""
    from PIL import Image, ImageDraw
    from spherehead import camera
    from spherehead.metrics.sampling import latents
    from spherehead.render.spherical import sphere_weights
    rows = []
    res = generators[0][1].img_resolution
    for label, G in generators:
        if G.img_resolution != res:
            raise UserError(f'the figure needs one image size; {label} renders {G.img_resolution} px, not {res}')
        z = latents(G, list(seeds)).to(device)
        ws = G.mapping(z, camera.lookat(0, 0).to(device).expand(len(seeds), -1), truncation_psi=0.7)
        tiles, weights = [], []
        for i in range(len(seeds)):
            for yaw in FIGURE_YAWS:
                out = G.synthesis(ws[i:i + 1], camera.lookat(yaw, 0).to(device), noise_mode='const', deterministic=True)
                tiles.append(_to_uint8(out['image'][0]))
                if i == 0:
                    weights.append(_weight_tile(out, G, res, sphere_weights))
        label_w = max(res, 128)       # room for about 18 characters of the default font
        im = Image.fromarray(np.full((res, label_w, 3), 255, np.uint8))
        draw = ImageDraw.Draw(im)
        y = 4
        for word_line in _wrap(label, label_w // 7):
            draw.text((4, y), word_line, fill=(0, 0, 0))
            y += 12
        rows.append(np.concatenate([np.asarray(im)] + tiles + weights, axis=1))
    return np.concatenate(rows, axis=0)


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return img.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _weight_tile(out: dict, G, res: int, sphere_weights) -> np.ndarray:
    import torch.nn.functional as F
    if not G.config.is_sphere:
        return np.full((res, res, 3), 235, np.uint8)
    xyz = out['image_xyz'][0].permute(1, 2, 0).float()
    wA, wB = sphere_weights(xyz, G.config.rendering.box_warp)
    if G.config.representation == 'single_sphere':
        wB = torch.zeros_like(wB)
    mask = out['image_mask'][0, 0].float()
    rgb = torch.stack([wA, torch.zeros_like(wA), wB]) * mask + (1 - mask) * 0.92
    rgb = F.interpolate(rgb[None], size=(res, res), mode='nearest')[0]
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ''
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f'{line} {word}'.strip()
    return lines + ([line] if line else [])


def make_report(study_dir: str | Path, out: str | Path, data: str | None = None, inception: str | None = None,
                vgg16: str | None = None, settings: ReportSettings | None = None,
                device: str | torch.device = 'cpu', progress: bool = True, echo=print,
                references: tuple[str, ...] = ()) -> dict:
    """Measure every arm with a snapshot and write ``study_report.md``, ``study_results.json`` and
    ``study_figure.png`` into ``out``. ``references``: other networks (``load_generator`` sources, e.g.
    'demo') measured the same way, as extra rows marked 'reference'. Returns the JSON content."""
    from spherehead.checkpoint import atomic_file, load_generator
    from spherehead.train.snapshot import save_png
    settings = settings or ReportSettings()
    study_dir, out = Path(study_dir), Path(out)
    study = load_study(study_dir)
    records = collect_arms(study_dir)
    data = data or (study.data if study else None)
    if not data or not Path(data).exists():
        raise UserError(f'the dataset {data!r} of this study is not here; pass --data with the same dataset '
                        f'(made with the study\'s command, see docs/study.md)')
    measured = [r for r in records if r.snapshot is not None]
    if not measured:
        raise UserError(f'{study_dir}: no arm has a network snapshot yet; run `spherehead study run` first')
    if inception:
        from spherehead.metrics.inception import load_feature_network
        net, features, fid = load_feature_network(inception, device), f'inception:{Path(inception).name}', True
    else:
        from spherehead.metrics.vgg16 import VGGFeatureNetwork
        net = VGGFeatureNetwork(vgg16, device)
        features, fid = net.identity, False
    (out / 'cache').mkdir(parents=True, exist_ok=True)
    refs = []
    for source in dict.fromkeys(references):
        G = load_generator(source, device=device)      # a source that does not load: one line, before any work
        rec = ArmRecord(f'reference:{source}', f'{source} (reference)', G.config.representation, None, None, source,
                        kimg=None)
        records.append(rec)
        refs.append((rec, G))
    results = {}
    gens = []
    for rec in measured + [r for r, _ in refs]:
        ref_G = next((G for r, G in refs if r is rec), None)
        stem = Path(rec.snapshot).stem if ref_G is None else _source_key(rec.snapshot)
        cache = out / 'cache' / f'{_slug(rec.name)}-{stem}-{settings.key(features)}.json'
        G = ref_G if ref_G is not None else load_generator(rec.snapshot, device=device)
        gens.append((rec.label if rec.kimg is None else f'{rec.label} ({rec.kimg:g} kimg)', G))
        if cache.is_file():
            results[rec.name] = json.loads(cache.read_text())
            echo(f'{rec.name}: cached ({cache.name})')
            continue
        echo(f'{rec.name}: measuring {Path(rec.snapshot).name if ref_G is None else rec.snapshot} ...')
        results[rec.name] = measure_arm(G, data, net, settings, device, out / 'cache', progress, fid)
        with atomic_file(cache) as tmp:
            Path(tmp).write_text(json.dumps(results[rec.name], indent=1))
        echo(f'{rec.name}: done in {results[rec.name]["measure_s"]:.0f} s')
    figure = render_figure(gens, settings.figure_seeds, device)
    save_png(figure, out / 'study_figure.png')
    doc = {'study': str(study_dir), 'dataset': str(data), 'features': 'Inception (FID)' if fid else 'VGG16 relu5_3 (FD-VGG16)',
           'settings': asdict(settings), 'date': time.strftime('%Y-%m-%d'),
           'arms': [{**asdict(r), **results.get(r.name, {})} for r in records]}
    with atomic_file(out / 'study_results.json') as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1, default=_json_default))
    with atomic_file(out / 'study_report.md') as tmp:
        Path(tmp).write_text(markdown_table(doc))
    n_ref = len(refs)
    echo(f'wrote {out / "study_report.md"}, {out / "study_results.json"}, {out / "study_figure.png"} '
         f'({len(results) - n_ref} arm(s)' + (f' and {n_ref} reference(s)' if n_ref else '') + ' measured)')
    return doc


def _slug(name: str) -> str:
    """A file-name-safe form of an arm or reference name ('reference:random:tiny' -> 'reference-random-tiny')."""
    return ''.join(c if c.isalnum() or c in '._-' else '-' for c in name)


def _source_key(source: str) -> str:
    """Identifies a reference network in cache names: a file by its size and first MiB (another file at
    the same path is measured anew), a name ('demo', 'random:tiny') by itself."""
    path = Path(source)
    if not path.is_file():
        return 'named'
    with open(path, 'rb') as f:
        head = f.read(1 << 20)
    return hashlib.sha1(head + str(path.stat().st_size).encode()).hexdigest()[:10]


def _json_default(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    raise TypeError(type(v))


def markdown_table(doc: dict) -> str:
    """The report's table: a row per arm."""
    fd = 'FID' if doc['features'].startswith('Inception') else 'FD-VGG16'
    fd3d = 'FID3D' if fd == 'FID' else 'FD3D-VGG16'
    key = 'fid' if fd == 'FID' else 'fd'
    s = doc['settings']
    head = (f'| arm | kimg | FF rate (back) | mirror | {fd} front | {fd} side | {fd} back | {fd3d} | seam | pole '
            f'| sec/kimg | GPU (wall s, share) |')
    lines = [head, '|' + '---|' * 12]
    fmt = lambda v, p=3: '-' if v is None or (isinstance(v, float) and v != v) else f'{v:.{p}f}'
    for a in doc['arms']:
        if 'ff_rate' not in a:
            lines.append(f'| {a["label"]} | {a["kimg"]:g} | not measured (no snapshot) |' + ' |' * 9)
            continue
        gpu = (f"{', '.join(a['devices'])} ({a['train_wall_s']:.0f}, {a['gpu_share_s']:.0f})" if a['devices'] else '-')
        kimg = '-' if a['kimg'] is None else f'{a["kimg"]:g}'
        lines.append(f'| {a["label"]} | {kimg} | {fmt(a["ff_rate"])} | {fmt(a["mirror_score"])} '
                     f'| {fmt(a[key + "_front"], 1)} | {fmt(a[key + "_side"], 1)} | {fmt(a[key + "_back"], 1)} '
                     f'| {fmt(a[key + "3d"], 1)} | {fmt(a["seam"], 2)} | {fmt(a["pole"], 2)} '
                     f'| {fmt(a["sec_per_kimg"], 1)} | {gpu} |')
    lines.append('')
    lines.append(f'{doc["date"]}; {fd} on {s["num_fd"]} generated images per view bin against every '
                 f'dataset image of the bin ({fd3d}: conditioned on the frontal camera, against all images); FF rate and mirror on {s["seeds"]} seeds; seam / pole ratios on '
                 f'{s["seam_seeds"]} seeds x 5 views (1 = invisible). Dataset: {doc["dataset"]}.')
    sph = [a for a in doc['arms'] if a.get('seams') and 'A' in a['seams']]
    if sph:
        lines += ['', 'Dual-sphere arms, each sphere rendered alone (seam / pole ratio at its own seam and poles):', '',
                  '| arm | A alone: seam | A alone: pole | B alone: seam | B alone: pole | fused: worst seam | fused: worst pole |',
                  '|---|---|---|---|---|---|---|']
        for a in sph:
            sm = a['seams']
            lines.append(f'| {a["label"]} | {fmt(sm["A"]["A"]["seam"], 2)} | {fmt(sm["A"]["A"]["pole"], 2)} '
                         f'| {fmt(sm["B"]["B"]["seam"], 2)} | {fmt(sm["B"]["B"]["pole"], 2)} | {fmt(a["seam"], 2)} '
                         f'| {fmt(a["pole"], 2)} |')
    return '\n'.join(lines) + '\n'
