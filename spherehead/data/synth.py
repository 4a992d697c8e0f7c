"""Synthetic full-head dataset: procedural heads ray-cast analytically in numpy.

Each image is a different random head (ellipsoid skull, nose, ears, neck, shoulders, a hair
shell over top and back with a random hairline, optional long hair) seen from a camera on
the sphere of radius 2.7 looking at the origin, with the released intrinsics (focal 4.2647,
principal point 0.5). Face features (eyes, brows, lips) are painted on the FRONT of the
skull by their longitude/latitude on it, so no back view can show them.

Pixels are rendered with exactly the rays the generator builds from the label (EG3D
convention): pixel (row i, column j) of an R x R image has uv = ((j + 0.5) / R, (i + 0.5) / R),
camera direction ((u - cx) / fx, (v - cy) / fy, 1) in OpenCV axes, rotated by cam2world.

View distribution (``front_bias`` F in [0, 1]): with probability F the yaw is drawn from
a normal of sd 25 deg around the front (0), otherwise uniform over (-180, 180]; the pitch
is normal with sd 15 deg, clipped to [-40, 40]. F = 0 gives uniform yaw over 360 degrees.

Every image draws its head and camera from its own generator seeded with (seed, index),
so the output does not depend on the number of worker processes.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from spherehead.camera import DEFAULT_RADIUS, camera_position, intrinsics, lookat_matrix, make_label
from spherehead.parsing_classes import CLASS_ID

FRONT_YAW_SD = 25.0
PITCH_SD = 15.0
PITCH_LIMIT = 40.0

_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 125], [198, 134, 86], [160, 104, 64],
                  [120, 78, 48], [250, 208, 170]], np.float32) / 255
_HAIR = np.array([[28, 24, 22], [60, 40, 28], [105, 70, 42], [150, 105, 60], [205, 170, 110],
                  [150, 60, 30], [170, 170, 170], [90, 60, 50]], np.float32) / 255
_IRIS = np.array([[70, 45, 25], [40, 90, 140], [60, 110, 70], [110, 80, 40]], np.float32) / 255


@dataclass
class HeadStyle:
    """Shape, colours and hairstyle of one synthetic head (world units, head-centred)."""
    center_y: float
    axes: tuple[float, float, float]        # skull semi-axes (x, y, z)
    hair_scale: float                       # hair shell = skull scaled by this
    hairline: tuple[float, float, float]    # shell-normalised y of the hairline at front, side, back
    long_hair: bool
    long_len: float                         # long-hair ellipsoid half height
    neck: tuple[float, float]               # neck radii (x, z)
    skin: np.ndarray                        # [3] albedo in [0, 1]
    hair: np.ndarray
    iris: np.ndarray
    cloth: np.ndarray
    background: np.ndarray
    eye: tuple[float, float, float, float]  # longitude, latitude, half width, half height (radians)
    brow_lift: float
    mouth: tuple[float, float, float, float]  # latitude, half width, lip half height, smile
    light: np.ndarray                       # [3] unit light direction (world)
    ambient: float


def sample_style(rng: np.random.Generator) -> HeadStyle:
    """A random head."""
    def jitter(c, s):
        return np.clip(c + rng.normal(0, s, 3).astype(np.float32), 0, 1)
    ax, ay, az = rng.uniform(0.155, 0.175), rng.uniform(0.205, 0.225), rng.uniform(0.185, 0.2)
    long_hair = bool(rng.random() < 0.4)
    back = rng.uniform(-0.75, -0.25) if not long_hair else -1.0
    bg = np.full(3, rng.uniform(0.35, 0.95), np.float32) + rng.normal(0, 0.05, 3).astype(np.float32)
    light = np.array([rng.normal(0, 0.6), rng.uniform(0.3, 1.0), rng.normal(0, 0.6)])
    return HeadStyle(
        center_y=float(rng.uniform(0.02, 0.045)),
        axes=(ax, ay, az),
        hair_scale=float(rng.uniform(1.05, 1.12)),
        hairline=(float(rng.uniform(0.3, 0.6)), float(rng.uniform(0.0, 0.3)), float(back)),
        long_hair=long_hair,
        long_len=float(rng.uniform(0.2, 0.3)),
        neck=(float(rng.uniform(0.07, 0.085)), float(rng.uniform(0.075, 0.09))),
        skin=jitter(_SKIN[rng.integers(len(_SKIN))], 0.03),
        hair=jitter(_HAIR[rng.integers(len(_HAIR))], 0.03),
        iris=jitter(_IRIS[rng.integers(len(_IRIS))], 0.03),
        cloth=rng.uniform(0.1, 0.9, 3).astype(np.float32),
        background=np.clip(bg, 0, 1),
        eye=(float(rng.uniform(0.36, 0.42)), float(rng.uniform(0.05, 0.1)),
             float(rng.uniform(0.13, 0.15)), float(rng.uniform(0.065, 0.08))),
        brow_lift=float(rng.uniform(0.13, 0.16)),
        mouth=(float(rng.uniform(-0.43, -0.38)), float(rng.uniform(0.2, 0.28)),
               float(rng.uniform(0.06, 0.075)), float(rng.uniform(-0.02, 0.04))),
        light=light / np.linalg.norm(light),
        ambient=float(rng.uniform(0.35, 0.5)),
    )


def sample_view(rng: np.random.Generator, front_bias: float = 0.0) -> tuple[float, float]:
    """(yaw, pitch) in degrees from the distribution in the module docstring."""
    if rng.random() < front_bias:
        yaw = rng.normal(0.0, FRONT_YAW_SD)
    else:
        yaw = rng.uniform(-180.0, 180.0)
    yaw = -((-yaw + 180.0) % 360.0 - 180.0)   # wrap into (-180, 180]
    pitch = float(np.clip(rng.normal(0.0, PITCH_SD), -PITCH_LIMIT, PITCH_LIMIT))
    return float(yaw), pitch


def view_label(yaw_deg: float, pitch_deg: float, radius: float = DEFAULT_RADIUS) -> np.ndarray:
    """[25] float64 label of a camera at (yaw, pitch) looking at the origin, released intrinsics."""
    return make_label(lookat_matrix(camera_position(yaw_deg, pitch_deg, radius)), intrinsics())


def label_rays(label: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays of a label, EG3D convention: ([3] origin, [R*R, 3] unit directions, row-major pixels)."""
    label = np.asarray(label, dtype=np.float64)
    c2w, k = label[:16].reshape(4, 4), label[16:25].reshape(3, 3)
    uv = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution
    v, u = np.meshgrid(uv, uv, indexing='ij')
    x = (u - k[0, 2] + k[0, 1] * k[1, 2] / k[1, 1] - k[0, 1] * v / k[1, 1]) / k[0, 0]
    y = (v - k[1, 2]) / k[1, 1]
    d = np.einsum('pj,ij->pi', np.stack([x, y, np.ones_like(x)], -1).reshape(-1, 3), c2w[:3, :3])  # no BLAS threads
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return c2w[:3, 3].astype(np.float32), d.astype(np.float32)


# ---------------------------------------------------------------------------- ray casting
_INF = np.float32(np.inf)


def _ellipsoid(o, d, center, axes):
    """Entry and exit distances of rays (o [3], d [P, 3]) with an ellipsoid; inf where missed."""
    inv = 1.0 / np.asarray(axes, np.float32)
    oc = (o - np.asarray(center, np.float32)) * inv
    dd = d * inv
    a = np.einsum('pi,pi->p', dd, dd)
    b = 2.0 * np.einsum('pi,i->p', dd, oc)
    c = np.float32(np.sum(oc * oc) - 1.0)
    disc = b * b - 4.0 * a * c
    miss = disc <= 0
    s = np.sqrt(np.maximum(disc, 0))
    t0 = (-b - s) / (2 * a)
    t1 = (-b + s) / (2 * a)
    t0[miss] = _INF
    t1[miss] = _INF
    return t0, t1


def _cylinder_y(o, d, cx, cz, rx, rz):
    """Entry distance of rays with the infinite vertical elliptic cylinder; inf where missed."""
    ox, oz = (o[0] - cx) / rx, (o[2] - cz) / rz
    dx, dz = d[:, 0] / rx, d[:, 2] / rz
    a = dx * dx + dz * dz
    b = 2 * (ox * dx + oz * dz)
    c = ox * ox + oz * oz - 1
    disc = b * b - 4 * a * c
    t0 = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * np.maximum(a, 1e-12))
    t0[disc <= 0] = _INF
    return t0


def _smooth(t):
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


def _hairline(lon_abs, hairline):
    """Shell-normalised y above which the shell is hair, as a function of |longitude| (0 = front)."""
    front, side, back = hairline
    half = np.float32(np.pi / 2)
    return np.where(lon_abs < half, front + (side - front) * _smooth(lon_abs / half),
                    side + (back - side) * _smooth((lon_abs - half) / half))


# primitive ids in the ray caster
_HEAD, _HAIR_OUT, _HAIR_IN, _LONG, _NOSE, _EAR_L, _EAR_R, _NECK, _CLOTH = range(9)


def _trace(o: np.ndarray, d: np.ndarray, s: HeadStyle, with_colour: bool = True):
    """Cast rays; returns (colour [P, 3] float32 or None, class id [P] uint8, hit [P] bool)."""
    hc = np.array([0.0, s.center_y, 0.0], np.float32)
    ax, ay, az = s.axes
    axes = np.array(s.axes, np.float32)
    P = d.shape[0]
    ts = np.full((9, P), _INF, np.float32)

    ts[_HEAD] = _ellipsoid(o, d, hc, axes)[0]
    shell = axes * s.hair_scale
    t0, t1 = _ellipsoid(o, d, hc, shell)
    for k, t in ((_HAIR_OUT, t0), (_HAIR_IN, t1)):
        ok = np.isfinite(t)
        n = ((o + t[ok, None] * d[ok]) - hc) / shell
        hair = n[:, 1] > _hairline(np.abs(np.arctan2(n[:, 0], n[:, 2])), s.hairline)
        tk = np.full(P, _INF, np.float32)
        tk[np.nonzero(ok)[0][hair]] = t[ok][hair]
        ts[k] = tk
    if s.long_hair:
        lc = hc + np.array([0.0, -0.1 - 0.5 * (s.long_len - 0.2), -0.035], np.float32)
        t = _ellipsoid(o, d, lc, (ax * 1.15, s.long_len, az * 0.95))[0]
        ok = np.isfinite(t)
        z = o[2] + t[ok] * d[ok, 2] - hc[2]
        t[np.nonzero(ok)[0][z > -0.02]] = _INF
        ts[_LONG] = t
    ts[_NOSE] = _ellipsoid(o, d, hc + np.array([0, -0.028, az * 0.9], np.float32), (0.026, 0.05, 0.05))[0]
    for k, sign in ((_EAR_L, 1.0), (_EAR_R, -1.0)):
        ts[k] = _ellipsoid(o, d, hc + np.array([sign * ax * 0.96, -0.01, -0.012], np.float32),
                           (0.024, 0.055, 0.034))[0]
    t = _cylinder_y(o, d, 0.0, -0.02, *s.neck)
    y = o[1] + t * d[:, 1]
    t[(y > hc[1] - 0.05) | (y < -0.7)] = _INF
    ts[_NECK] = t
    ts[_CLOTH] = _ellipsoid(o, d, np.array([0, -0.5, -0.03], np.float32), (0.3, 0.2, 0.17))[0]

    prim = np.argmin(ts, axis=0)
    tmin = ts[prim, np.arange(P)]
    hit = np.isfinite(tmin)
    prim[~hit] = -1
    cls = np.zeros(P, np.uint8)
    colour = np.broadcast_to(s.background, (P, 3)).copy() if with_colour else None
    p = o + np.where(hit, tmin, 0)[:, None] * d

    def normal_ellipsoid(idx, center, ax3):
        n = (p[idx] - center) / (np.asarray(ax3, np.float32) ** 2)
        return n / np.linalg.norm(n, axis=-1, keepdims=True)

    def shade(idx, albedo, normal):
        lam = np.maximum(np.einsum('pi,i->p', normal, s.light.astype(np.float32)), 0)
        fill = 0.15 * np.maximum(normal[:, 1], 0)
        colour[idx] = np.clip(albedo * (s.ambient + (1 - s.ambient) * lam + fill)[:, None], 0, 1)

    # skull with the painted face
    idx = np.nonzero(prim == _HEAD)[0]
    n = (p[idx] - hc) / axes
    lon = np.arctan2(n[:, 0], n[:, 2])
    lat = np.arcsin(np.clip(n[:, 1], -1, 1))
    c = np.full(len(idx), CLASS_ID['skin'], np.uint8)
    alb = np.broadcast_to(s.skin, (len(idx), 3)).copy()
    e_lon, e_lat, e_w, e_h = s.eye
    m_lat, m_w, lip_h, smile = s.mouth
    front = n[:, 2] > 0.5
    for sign, eye, brow in ((1.0, 'left_eye', 'left_brow'), (-1.0, 'right_eye', 'right_brow')):
        du = lon - sign * e_lon
        in_eye = front & ((du / e_w) ** 2 + ((lat - e_lat) / e_h) ** 2 < 1)
        c[in_eye] = CLASS_ID[eye]
        alb[in_eye] = (0.93, 0.92, 0.9)
        r2 = (du ** 2 + (lat - e_lat) ** 2) / (0.9 * e_h) ** 2
        alb[in_eye & (r2 < 1)] = s.iris
        alb[in_eye & (r2 < 0.2)] = 0.05
        bu = du / (e_w * 1.15)
        in_brow = front & (bu ** 2 + ((lat - e_lat - s.brow_lift + 0.02 * bu ** 2) / 0.035) ** 2 < 1)
        c[in_brow] = CLASS_ID[brow]
        alb[in_brow] = s.hair * 0.7
    mu = lon / m_w
    mouth_c = m_lat + smile * mu ** 2
    in_lips = front & (mu ** 2 + ((lat - mouth_c) / lip_h) ** 2 < 1)
    upper = in_lips & (lat >= mouth_c)
    lower = in_lips & (lat < mouth_c)
    inner = in_lips & (np.abs(lat - mouth_c) < 0.18 * lip_h) & (np.abs(mu) < 0.85)
    c[upper], c[lower], c[inner] = CLASS_ID['upper_lip'], CLASS_ID['lower_lip'], CLASS_ID['mouth']
    lip = np.clip(s.skin * np.array([0.85, 0.55, 0.55], np.float32), 0, 1)
    alb[upper], alb[lower] = lip * 0.9, lip
    alb[inner] = (0.3, 0.05, 0.08)
    cls[idx] = c
    if with_colour:
        shade(idx, alb, normal_ellipsoid(idx, hc, axes))

    # hair (outer shell, inner shell seen from inside, long hair)
    for k in (_HAIR_OUT, _HAIR_IN, _LONG):
        idx = np.nonzero(prim == k)[0]
        cls[idx] = CLASS_ID['hair']
        if not with_colour or len(idx) == 0:
            continue
        q = (p[idx] - hc) / shell
        lon_h = np.arctan2(q[:, 0], q[:, 2])
        strands = 0.82 + 0.18 * np.sin(70 * lon_h + 5 * np.sin(7 * q[:, 1]))
        alb = s.hair * strands[:, None].astype(np.float32)
        if k == _LONG:
            lc = hc + np.array([0.0, -0.1 - 0.5 * (s.long_len - 0.2), -0.035], np.float32)
            nrm = normal_ellipsoid(idx, lc, (ax * 1.15, s.long_len, az * 0.95))
        else:
            nrm = normal_ellipsoid(idx, hc, shell)
        if k == _HAIR_IN:
            nrm, alb = -nrm, alb * 0.6
        shade(idx, alb, nrm)

    parts = ((_NOSE, 'nose', hc + np.array([0, -0.028, az * 0.9], np.float32), (0.026, 0.05, 0.05), 0.97),
             (_EAR_L, 'left_ear', hc + np.array([ax * 0.96, -0.01, -0.012], np.float32), (0.024, 0.055, 0.034), 0.92),
             (_EAR_R, 'right_ear', hc + np.array([-ax * 0.96, -0.01, -0.012], np.float32), (0.024, 0.055, 0.034), 0.92),
             (_CLOTH, 'cloth', np.array([0, -0.5, -0.03], np.float32), (0.3, 0.2, 0.17), None))
    for k, name, center, ax3, tint in parts:
        idx = np.nonzero(prim == k)[0]
        cls[idx] = CLASS_ID[name]
        if with_colour and len(idx):
            shade(idx, s.cloth if tint is None else s.skin * tint, normal_ellipsoid(idx, center, ax3))
    idx = np.nonzero(prim == _NECK)[0]
    cls[idx] = CLASS_ID['neck']
    if with_colour and len(idx):
        rx, rz = s.neck
        nrm = np.stack([p[idx, 0] / rx ** 2, np.zeros(len(idx), np.float32), (p[idx, 2] + 0.02) / rz ** 2], -1)
        shade(idx, s.skin * 0.88, nrm / np.linalg.norm(nrm, axis=-1, keepdims=True))
    return colour, cls, hit


def render_head(style: HeadStyle, label: np.ndarray, resolution: int, supersample: int = 2):
    """Render one head for a camera label.

    Returns (image uint8 [R, R, 3], mask uint8 [R, R] 0/255, parsing uint8 [R, R] class ids).
    The mask and parsing map come from the pixel-centre rays; the image averages
    ``supersample`` x ``supersample`` sub-pixel rays (anti-aliasing).
    """
    r = resolution
    o, d = label_rays(label, r)
    colour, cls, hit = _trace(o, d, style, with_colour=supersample <= 1)
    if supersample > 1:
        # sub-pixel rays only near the foreground of the pixel-centre pass (others see background)
        fg = hit.reshape(r, r)
        near = fg.copy()
        near[1:] |= fg[:-1]
        near[:-1] |= fg[1:]
        near[:, 1:] |= near[:, :-1].copy()
        near[:, :-1] |= near[:, 1:].copy()
        ss = supersample
        sel = np.nonzero(np.broadcast_to(near[:, None, :, None], (r, ss, r, ss)).reshape(-1))[0]
        o, d = label_rays(label, r * ss)
        sub = np.broadcast_to(style.background.astype(np.float32), (r * ss * r * ss, 3)).copy()
        sub[sel] = _trace(o, d[sel], style)[0]
        colour = sub.reshape(r, ss, r, ss, 3).mean(axis=(1, 3))
    image = (np.clip(colour.reshape(r, r, 3), 0, 1) * 255 + 0.5).astype(np.uint8)
    return image, (hit.reshape(r, r) * 255).astype(np.uint8), cls.reshape(r, r)


@dataclass
class SynthOptions:
    """Options of ``spherehead dataset synth`` (JSON-serialisable)."""
    out: str = 'heads.zip'
    count: int = 1000
    resolution: int = 128
    seed: int = 0
    front_bias: float = 0.0
    supersample: int = 2
    workers: int = 0          # 0: one per CPU core
    overwrite: bool = False


def synth_sample(seed: int, index: int, resolution: int, front_bias: float = 0.0, supersample: int = 2,
                 yaw_pitch: tuple[float, float] | None = None):
    """Sample ``index`` of the dataset of ``seed``: (image, mask, parsing, label [25] float64, yaw, pitch).

    ``yaw_pitch`` overrides the sampled view (the head is still the sample's own).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    yaw, pitch = sample_view(rng, front_bias)
    style = sample_style(rng)
    if yaw_pitch is not None:
        yaw, pitch = yaw_pitch
    label = view_label(yaw, pitch)
    image, mask, parsing = render_head(style, label, resolution, supersample)
    return image, mask, parsing, label, yaw, pitch


def _worker(args):
    from spherehead.data.storage import encode_png
    seed, index, resolution, front_bias, supersample = args
    image, mask, parsing, label, _yaw, _pitch = synth_sample(seed, index, resolution, front_bias, supersample)
    return index, encode_png(image), encode_png(mask), encode_png(parsing), label


def synth_dataset(options: SynthOptions, progress: bool = True) -> dict:
    """Write a synthetic dataset (see spherehead.data.writer for the layout). Returns timing stats."""
    import multiprocessing
    import time

    from tqdm import tqdm

    from spherehead.data.errors import DatasetError
    from spherehead.data.writer import DatasetWriter, image_relpath
    o = options
    if o.count < 1 or o.resolution < 8 or not 0.0 <= o.front_bias <= 1.0 or o.supersample < 1:
        raise DatasetError(f'synth: need --count >= 1, --resolution >= 8, --front-bias in [0, 1], '
                           f'--supersample >= 1 (got {o.count}, {o.resolution}, {o.front_bias}, {o.supersample})')
    workers = o.workers or os.cpu_count() or 1
    jobs = [(o.seed, i, o.resolution, o.front_bias, o.supersample) for i in range(o.count)]
    start = time.perf_counter()
    with DatasetWriter(o.out, overwrite=o.overwrite) as writer:
        bar = tqdm(total=o.count, desc='synth', unit='img', disable=not progress)
        if workers == 1:
            results = map(_worker, jobs)
            pool = None
        else:
            pool = multiprocessing.get_context().Pool(workers)
            results = pool.imap(_worker, jobs, chunksize=max(1, min(16, o.count // (4 * workers))))
        try:
            for index, img, mask, parsing, label in results:
                writer.add(image_relpath(index), img, label, mask_png=mask, parsing_png=parsing)
                bar.update(1)
        finally:
            bar.close()
            if pool is not None:
                pool.close()
                pool.join()
    seconds = time.perf_counter() - start
    return {'count': o.count, 'seconds': seconds, 'images_per_s': o.count / max(seconds, 1e-9), 'workers': workers}


def contact_sheet(seed: int = 0, resolution: int = 128, count: int = 16, columns: int = 4,
                  pitch_deg: float = 0.0, supersample: int = 3) -> np.ndarray:
    """uint8 [H, W, 3] grid of ``count`` synthetic heads at yaws evenly spread over 360 deg, labelled."""
    from PIL import Image, ImageDraw
    rows = math.ceil(count / columns)
    pad, text_h = 4, 14
    cell_w, cell_h = resolution + pad, resolution + text_h + pad
    sheet = Image.new('RGB', (columns * cell_w + pad, rows * cell_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k in range(count):
        yaw = -180.0 + 360.0 * (k + 1) / count      # sorted, ends at 180 (back view)
        image = synth_sample(seed, k, resolution, supersample=supersample, yaw_pitch=(yaw, pitch_deg))[0]
        x, y = pad + (k % columns) * cell_w, pad + (k // columns) * cell_h
        sheet.paste(Image.fromarray(image), (x, y))
        draw.text((x + 2, y + resolution + 1), f'yaw {yaw:+.1f}', fill=(0, 0, 0))
    return np.asarray(sheet)
