"""RenderArgs -> RenderResult: the only module of the visualizer that touches the network.

It keeps one network loaded, caches ws per latent and the backbone planes while only the
camera (or the sphere mode, render type, quality) changes, runs ``G.synthesis`` once per
requested sphere, and turns the outputs into display images (uint8 RGB, row 0 = top).
Errors never escape: they come back in ``RenderResult.error``. A network that fails to load
leaves the previous one loaded: the frame is rendered with it and the failure comes back in
``RenderResult.load_error``.
"""
from __future__ import annotations

import collections
import ctypes
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from spherehead import camera
from spherehead.errors import UserError
from spherehead.parsing_classes import PARSING_CLASSES, PARSING_COLORS, colorize
from spherehead.render.graphed import GraphedSynthesis
from viz import colormaps
from viz.render_args import RenderArgs

# The mapping is conditioned on this camera whatever the view, so the identity stays put while orbiting.
CONDITIONING_YAW_PITCH = (0.0, 0.0)


@dataclass
class RenderResult:
    """What the worker hands back for one RenderArgs. Images are [H, W, 3] uint8, row 0 = top.

    After a failed load ``load_error`` says why and ``failed_network`` names the source; the
    frame was then rendered with the previous network, and ``args.network`` names that one
    (without a previous network, ``error`` is set and there is no image).
    """
    args: RenderArgs
    image: np.ndarray | None = None
    error: str | None = None                  # one line for the window
    load_error: str | None = None             # one line: why ``failed_network`` did not load, what to do
    failed_network: str | None = None
    traceback: str | None = None
    panels: list[str] = field(default_factory=list)   # labels of side-by-side panels, left to right
    timings: dict[str, float] = field(default_factory=dict)  # seconds: load, mapping, backbone, render, superres, post, total
    backbone_cached: bool = False
    depth_range: tuple[float, float] | None = None   # world units (near, far) of the depth colour map
    parsing_legend: list[tuple[str, tuple[int, int, int], float]] = field(default_factory=list)  # name, colour, share
    planes_image: np.ndarray | None = None    # grid: one row per plane stack (A, B / xyz), one column per plane
    planes_rows: list[str] = field(default_factory=list)
    weight_maps_image: np.ndarray | None = None   # unwrapped weight maps of A (top) and B (bottom) + visible surface
    weight_maps_rows: list[str] = field(default_factory=list)
    seam_fraction: dict[str, float] = field(default_factory=dict)  # share of the visible surface near each seam
    notes: list[str] = field(default_factory=list)
    w: np.ndarray | None = None               # [num_ws, w_dim] float32 of this frame's latent
    network_info: dict[str, Any] = field(default_factory=dict)   # provenance, config, source
    serial: int = 0
    # Compare mode (args.compare_diff): the quantity behind the image, [S, S, C] float32 at the image's
    # size: RGB in [-1, 1] (image, raw), depth in world units or mask in [0, 1] (C = 1), parsing class
    # ids, sphere weight; NaN where there is no surface (depth, weight).
    values: np.ndarray | None = None
    comparison: Any = None                    # viz.compare.Comparison in compare mode, else None


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> [H, W, 3] uint8."""
    return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _one_line(e: BaseException) -> str:
    """An exception as one line: a UserError's own message, else 'Type: first line'."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ''
    if isinstance(e, UserError):
        return text or type(e).__name__
    return f'{type(e).__name__}: {text}' if text else type(e).__name__


class NetworkLoadError(Exception):
    """Loading ``source`` failed; the message is one line for the window."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(message)
        self.source = source


def _file_signature(source: str) -> tuple | None:
    """(mtime, size) of a network file, None for names that are no file: a failed load is retried once this changes."""
    try:
        st = os.stat(source)
    except (OSError, ValueError):
        return None
    return (st.st_mtime_ns, st.st_size)


def keep_freed_cpu_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (below 32 MiB a block) instead of
    handing it back to the system; True when applied.

    A CPU frame allocates and frees ~100 tensors of up to ~13 MB; by default glibc maps the
    big ones fresh and unmaps them on free, so every frame pays ~24,000 page faults (measured
    on a 2-core VM, demo orbit frame: 150 -> 90 ms with the fast sampler and decoder, 250 -> 190 ms
    without). Process-wide and one-way; the price is that freed memory stays with the process. Not applied with SPHEREHEAD_NO_FAST_CPU=1, nor
    where mallopt is missing (not Linux glibc).
    """
    from spherehead.ops.cpu_sampler import fast_cpu_disabled
    if fast_cpu_disabled() or not sys.platform.startswith('linux'):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


class BackgroundMemo(torch.nn.Module):
    """Stands in for the background net of the renderer's G and remembers its last image.

    The background depends on ws and the noise only, not on the camera, so orbit frames
    (same ws) reuse it instead of re-running the net (11-13 ms of a demo frame on a 2-core CPU).
    Exact: a frame gets the very tensor the net gave for an equal ws (compared by value).
    Only for deterministic noise ('const', 'none') with autograd off; otherwise, and for any
    other call form, it runs the net. The generator only reads the image (no in-place ops).
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.num_ws = net.num_ws
        self._last: tuple[torch.Tensor, str, torch.Tensor] | None = None    # (ws copy, noise mode, image)

    def forward(self, ws: torch.Tensor, noise_mode: str = 'random', update_emas: bool = False,
                **kwargs: Any) -> torch.Tensor:
        if noise_mode not in ('const', 'none') or update_emas or kwargs or torch.is_grad_enabled():
            return self.net(ws, noise_mode=noise_mode, update_emas=update_emas, **kwargs)
        last = self._last
        if (last is not None and last[1] == noise_mode and last[0].shape == ws.shape
                and last[0].device == ws.device and last[0].dtype == ws.dtype and torch.equal(last[0], ws)):
            return last[2]
        image = self.net(ws, noise_mode=noise_mode)
        self._last = (ws.clone(), noise_mode, image)
        return image


def _resize_nearest(x: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, h, w] -> [N, C, size, size] (nearest) unless already that size."""
    return x if x.shape[-1] == size and x.shape[-2] == size else F.interpolate(x, size=(size, size), mode='nearest')


class Renderer:
    """Stateful renderer (network + caches). Not thread-safe: one worker thread owns it."""

    def __init__(self, device: str | torch.device = 'cpu',
                 load_generator: Callable[..., Any] | None = None) -> None:
        self.device = torch.device(device)
        if self.device.type == 'cpu':
            keep_freed_cpu_memory()
        if load_generator is None:
            from spherehead import load_generator
        self._load_generator = load_generator
        self.G: Any = None
        self._graphed: GraphedSynthesis | None = None   # CUDA: frames replayed from CUDA graphs
        self.source: str | None = None
        self.network_info: dict[str, Any] = {}
        self._ws_cache: collections.OrderedDict = collections.OrderedDict()
        self._planes_key: tuple | None = None
        self._planes: Any = None
        self._planes_grid_cache: tuple | None = None     # (planes key, mode, channel) -> plane images
        self._failed_load: tuple[str, tuple | None, str] | None = None   # (source, file signature, message)
        self.status = 'idle'

    # ------------------------------------------------------------------ network and latents
    def _network(self, source: str, timings: dict) -> Any:
        """The network of ``source``, loading it if needed. Raises NetworkLoadError and keeps the
        previous network when the load fails; the same failure is not retried until the file changes."""
        if self.G is not None and source == self.source:
            return self.G
        signature = _file_signature(source)
        if self._failed_load is not None and self._failed_load[:2] == (source, signature):
            raise NetworkLoadError(source, self._failed_load[2])
        self.status = f'loading {source}'
        t0 = time.perf_counter()
        try:
            G = self._load_generator(source, device=self.device)
            G.eval()
            G.requires_grad_(False)
            # CPU only: comparing ws by value syncs a GPU (and cannot run inside a CUDA graph).
            if self.device.type == 'cpu' and isinstance(getattr(G, 'bcg_synthesis', None), torch.nn.Module):
                G.bcg_synthesis = BackgroundMemo(G.bcg_synthesis)
        except Exception as e:  # noqa: BLE001 - any failure to load is reported, the old network stays
            message = _one_line(e)
            if not isinstance(e, UserError):
                message += ('; give a SphereHead .safetensors, a released EG3D / PanoHead / SphereHead .pkl, '
                            "a training run folder, 'demo' or 'random:tiny'")
            self._failed_load = (source, signature, message)
            raise NetworkLoadError(source, message) from e
        self._failed_load = None
        self._ws_cache.clear()
        self._planes_key, self._planes, self._planes_grid_cache = None, None, None
        self.G, self.source = G, source
        self._graphed = GraphedSynthesis(G) if self.device.type == 'cuda' else None
        cfg = G.config
        self.network_info = {
            'source': source,
            'provenance': str(getattr(G, 'provenance', source)),
            'config': cfg.to_dict(),
            'representation': cfg.representation,
            'is_sphere': cfg.representation in ('dual_sphere', 'single_sphere'),
            'num_spheres': {'dual_sphere': 2, 'single_sphere': 1}.get(cfg.representation, 0),
            'has_parsing': bool(cfg.use_parsing),
            'num_parameters': sum(p.numel() for p in G.parameters()),
        }
        timings['load'] = time.perf_counter() - t0
        return G

    def _ws_of_seed(self, G: Any, seed: int, psi: float, cutoff: int | None) -> torch.Tensor:
        key = (self.source, seed, psi, cutoff)
        if key in self._ws_cache:
            self._ws_cache.move_to_end(key)
            return self._ws_cache[key]
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.config.z_dim)).float().to(self.device)
        c0 = camera.lookat(*CONDITIONING_YAW_PITCH, device=self.device)
        ws = G.mapping(z, c0, truncation_psi=psi, truncation_cutoff=cutoff)
        self._ws_cache[key] = ws
        while len(self._ws_cache) > 16:
            self._ws_cache.popitem(last=False)
        return ws

    def _ws(self, G: Any, args: RenderArgs) -> torch.Tensor:
        """[1, num_ws, w_dim] for the args' latent."""
        if args.w_path:
            w = torch.from_numpy(np.load(args.w_path)).float().to(self.device)
            ref = self._ws_of_seed(G, 0, 1.0, None)      # only for the expected shape
            if w.ndim == 1:
                w = w[None, None].expand(1, ref.shape[1], -1)
            elif w.ndim == 2:
                w = w[None]
            w = w[:1]
            if w.shape[1:] != ref.shape[1:]:
                raise ValueError(f'{args.w_path}: w of shape {tuple(w.shape[1:])} does not fit this network '
                                 f'(expects [{ref.shape[1]}, {ref.shape[2]}])')
            return w
        ws = self._ws_of_seed(G, args.seed, args.truncation_psi, args.truncation_cutoff)
        if args.interp > 0:
            ws2 = self._ws_of_seed(G, args.seed2, args.truncation_psi, args.truncation_cutoff)
            ws = torch.lerp(ws, ws2, float(args.interp))
        return ws

    def _backbone(self, G: Any, args: RenderArgs, ws: torch.Tensor, timings: dict) -> tuple[Any, bool]:
        key = (self.source,) + args.planes_key()
        if args.cache_backbone and key == self._planes_key:
            return self._planes, True
        t0 = time.perf_counter()
        planes = G.backbone_planes(ws, noise_mode=args.noise_mode)
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        timings['backbone'] = time.perf_counter() - t0
        self._planes_key, self._planes = key, planes
        return planes, False

    # ------------------------------------------------------------------ render
    def render(self, args: RenderArgs) -> RenderResult:
        """Render ``args``; never raises."""
        result = RenderResult(args=args)
        timings = result.timings
        t_start = time.perf_counter()
        try:
            args.validate()
            try:
                G = self._network(args.network, timings)
            except NetworkLoadError as e:
                result.load_error, result.failed_network = str(e), e.source
                if self.G is None:
                    raise
                G, args = self.G, args.replace(network=self.source)    # keep showing the previous network
                result.args = args
            result.network_info = self.network_info
            self.status = 'rendering'
            with torch.inference_mode():
                t0 = time.perf_counter()
                ws = self._ws(G, args)
                timings['mapping'] = time.perf_counter() - t0
                planes, result.backbone_cached = self._backbone(G, args, ws, timings)
                self._render_views(G, args, ws, planes, result)
                if args.inspect:
                    t0 = time.perf_counter()
                    key = (self._planes_key, args.plane_mode, args.plane_channel)
                    if self._planes_grid_cache is None or self._planes_grid_cache[0] != key:
                        self._planes_grid_cache = (key, planes_grid(planes, args.plane_mode, args.plane_channel))
                    result.planes_image, result.planes_rows = self._planes_grid_cache[1]
                    timings['post'] = timings.get('post', 0.0) + time.perf_counter() - t0
                result.w = ws[0].float().cpu().numpy()
        except NetworkLoadError as e:
            result.error = f'cannot load {e.source}: {e}'
            result.traceback = traceback.format_exc()
            result.image = None
        except Exception as e:  # noqa: BLE001 - shown in the window, the program goes on
            result.error = _one_line(e)
            result.traceback = traceback.format_exc()
            result.image = None
        finally:
            self.status = 'idle'
        timings['total'] = time.perf_counter() - t_start
        return result

    # ------------------------------------------------------------------ export
    def export_head(self, args: RenderArgs, path: str, kind: str, mesh_resolution: int = 256,
                    splat_count: int = 300_000, splat_resolution: int = 256) -> str:
        """Write the head of ``args`` (its latent and sphere mode) to ``path``: kind 'mesh' (.glb, .ply or
        .obj by extension; marching cubes at ``mesh_resolution``) or 'splats' (3DGS .ply of
        ``splat_count`` splats sampled on a ``splat_resolution``^3 grid). Runs on the worker thread
        (``RenderWorker.submit_task``); returns one line saying what was written, or why nothing was.
        Never raises."""
        from pathlib import Path
        from spherehead.tools.heads import check_sphere
        self.status = f'exporting {kind}'
        try:
            G = self._network(args.network, {})
            sphere = args.sphere if self.network_info['num_spheres'] else 'fused'
            check_sphere(G, sphere)
            comment = (f'SphereHead {kind} from the visualizer: seed {args.seed}, trunc {args.truncation_psi:g}, '
                       f'sphere {sphere}\nnetwork: {self.network_info["provenance"]}\n'
                       'axes: +x = left of the head, +y = up, +z = front; world units')
            with torch.inference_mode():
                ws = self._ws(G, args)
                if kind == 'mesh':
                    from spherehead.export.mesh import WRITERS, MeshConfig, extract_mesh, require_writer
                    require_writer(path)
                    mesh = extract_mesh(G, ws, MeshConfig(resolution=mesh_resolution, sphere=sphere), progress=False)
                    WRITERS[Path(path).suffix.lower()](path, mesh, comment)
                    return f'wrote {path}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces'
                if kind == 'splats':
                    from spherehead.export.splat_ply import write_splats
                    from spherehead.export.splats import SplatConfig, make_splats
                    splats = make_splats(G, ws, SplatConfig(count=splat_count, resolution=splat_resolution,
                                                                   sphere=sphere), progress=False)
                    size = write_splats(path, splats, comment)
                    return f'wrote {path}: {len(splats)} splats, {size / 2 ** 20:.1f} MiB'
                raise ValueError(f"kind must be 'mesh' or 'splats', got {kind!r}")
        except NetworkLoadError as e:
            return f'nothing exported: cannot load {e.source}: {e}'
        except Exception as e:  # noqa: BLE001 - one line for the window
            import click
            if isinstance(e, click.ClickException):
                return f'nothing exported: {e.format_message()}'
            return f'nothing exported: {_one_line(e)}'
        finally:
            self.status = 'idle'

    def _spheres(self, G: Any, args: RenderArgs) -> list[str]:
        n = self.network_info['num_spheres']
        if n == 0:
            return ['fused']                      # tri-plane / tri-grid: the sphere mode does not apply
        if args.side_by_side:
            return ['A', 'B', 'fused'] if n == 2 else ['A']
        return [args.sphere]

    def _render_views(self, G: Any, args: RenderArgs, ws: torch.Tensor, planes: Any, result: RenderResult) -> None:
        timings = result.timings
        c = camera.lookat(args.yaw, args.pitch, args.radius, args.fov, device=self.device)
        panels = []
        for sphere in self._spheres(G, args):
            stage: dict[str, float] = {}
            resolutions = dict(neural_rendering_resolution=args.neural_rendering_resolution,
                               depth_resolution=args.depth_resolution,
                               depth_resolution_importance=args.depth_resolution_importance)
            out = None
            if self._graphed is not None and isinstance(planes, dict):
                t0 = time.perf_counter()
                out = self._graphed(ws, c, planes, sphere=sphere, noise_mode=args.noise_mode, **resolutions)
                if out is not None:   # one replay: render and super-resolution are not told apart
                    torch.cuda.synchronize(self.device)
                    stage['render'] = time.perf_counter() - t0
            if out is None:
                out = G.synthesis(ws, c, sphere=sphere, noise_mode=args.noise_mode, deterministic=True,
                                  planes=planes, timings=stage, **resolutions)
            for k in ('render', 'superres'):
                timings[k] = timings.get(k, 0.0) + stage.get(k, 0.0)
            t0 = time.perf_counter()
            panels.append(self._display(G, args, out, result))
            timings['post'] = timings.get('post', 0.0) + time.perf_counter() - t0
            result.panels.append('F1 (A)' if sphere == 'A' else 'F2 (B)' if sphere == 'B' else
                                 ('fused' if self.network_info['is_sphere'] else G.config.representation))
        if len(panels) == 1:
            result.image = panels[0]
        else:
            gap = np.full((panels[0].shape[0], 4, 3), 40, np.uint8)
            result.image = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)

    def _display(self, G: Any, args: RenderArgs, out: dict, result: RenderResult) -> np.ndarray:
        """One synthesis output -> [S, S, 3] uint8 for the chosen render type (S = output image side)."""
        size = int(out['image'].shape[-1])
        mask_lr = out['image_mask'][:1].float()
        kind = args.render_type
        if kind == 'image':
            rgb = _to_uint8(out['image'][0].float())
        elif kind == 'raw':
            rgb = _to_uint8(_resize_nearest(out['image_raw'][:1, :3].float(), size)[0])
        elif kind == 'depth':
            depth = _resize_nearest(out['image_depth'][:1].float(), size)[0, 0].cpu().numpy()
            mask = _resize_nearest(mask_lr, size)[0, 0].cpu().numpy()
            rgb, result.depth_range = colormaps.depth_to_rgb(depth, mask)
        elif kind == 'mask':
            rgb = colormaps.gray_to_rgb(_resize_nearest(mask_lr, size)[0, 0].cpu().numpy())
        elif kind == 'parsing':
            if 'image_parsing' not in out:
                raise ValueError('this network has no parsing branch')
            ids = _resize_nearest(out['image_parsing'][:1].float(), size)[0].argmax(0).cpu().numpy()
            rgb = colorize(ids)
            counts = np.bincount(ids.reshape(-1), minlength=len(PARSING_CLASSES))
            order = np.argsort(-counts)
            result.parsing_legend = [(PARSING_CLASSES[i], tuple(int(v) for v in PARSING_COLORS[i]),
                                      float(counts[i]) / ids.size) for i in order if counts[i] > 0]
        elif kind == 'weight':
            if 'sphere_weight' not in out:
                raise ValueError(f'a {G.config.representation} network has no sphere weight')
            w = _resize_nearest(out['sphere_weight'][:1].float(), size)[0, 0].cpu().numpy()
            mask = _resize_nearest(mask_lr, size)[0, 0].cpu().numpy()
            rgb = colormaps.weight_to_rgb(w, mask)
        else:  # validate() makes this unreachable
            raise ValueError(kind)
        if args.compare_diff:
            result.values = _display_values(kind, out, size)
        if args.overlay_seams or args.inspect:
            near = self._near_seams(G, args, out, result)
            if near is not None and args.overlay_seams:
                near_a = _resize_nearest(near[0][None, None].float(), size)[0, 0].bool().cpu().numpy()
                near_b = _resize_nearest(near[1][None, None].float(), size)[0, 0].bool().cpu().numpy()
                rgb = colormaps.seam_overlay(rgb, near_a, near_b)
        return rgb

    def _near_seams(self, G: Any, args: RenderArgs, out: dict, result: RenderResult):
        """([h, w] bool near A's seam/poles, [h, w] bool near B's) on the visible surface, or None."""
        if not self.network_info['is_sphere']:
            if 'no seams' not in ' '.join(result.notes):
                result.notes.append(f'no seams or poles: {G.config.representation} network')
            return None
        if 'image_xyz' not in out:
            result.notes.append('this network gives no image_xyz; seam overlay unavailable')
            return None
        from spherehead.render.spherical import sphere_weight_map, spherical_coordinates
        xyz = out['image_xyz'][0].float().permute(1, 2, 0)              # [h, w, 3] world units
        surface = out['image_mask'][0, 0].float() > 0.5
        box_warp = G.config.rendering.box_warp
        near, coords = [], []
        for s in ('A', 'B')[:self.network_info['num_spheres']]:
            theta, phi, _ = spherical_coordinates(xyz, box_warp, sphere=s)
            w = sphere_weight_map(theta, phi)
            near.append((w < args.seam_threshold) & surface)
            coords.append((theta[surface].cpu().numpy(), phi[surface].cpu().numpy()))
            n = int(surface.sum())
            result.seam_fraction[s] = float(near[-1].sum()) / n if n else 0.0
        if len(near) == 1:
            near.append(torch.zeros_like(near[0]))
        if args.inspect and result.weight_maps_image is None:
            result.weight_maps_image, result.weight_maps_rows = unwrapped_weight_maps(coords, args.seam_threshold)
        return near


def _display_values(kind: str, out: dict, size: int) -> np.ndarray:
    """The quantity a render type shows, [size, size, C] float32 (see RenderResult.values)."""
    if kind == 'image':
        v = out['image'][:1].float()
    elif kind == 'raw':
        v = _resize_nearest(out['image_raw'][:1, :3].float(), size)
    elif kind == 'parsing':
        v = _resize_nearest(out['image_parsing'][:1].float(), size).argmax(1, keepdim=True).float()
    else:
        key = {'depth': 'image_depth', 'mask': 'image_mask', 'weight': 'sphere_weight'}[kind]
        v = _resize_nearest(out[key][:1].float(), size)
        if kind != 'mask':       # no surface: no depth or ownership to compare
            surface = _resize_nearest(out['image_mask'][:1].float(), size) > 0.5
            v = torch.where(surface, v, torch.full_like(v, float('nan')))
    return v[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


# ---------------------------------------------------------------------- inspection images
def _pca_rgb(x: np.ndarray, basis: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """[C, H, W] -> [H, W, 3] uint8 via a [C, 3] basis and per-component range."""
    c, h, w = x.shape
    y = (basis.T @ x.reshape(c, -1)).T.reshape(h, w, 3)
    return np.round(np.clip((y - lo) / np.maximum(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)


def planes_grid(planes: dict, mode: str = 'pca', channel: int = 0, gap: int = 2
                ) -> tuple[np.ndarray, list[str]]:
    """Feature planes -> one [rows*S, cols*S, 3] uint8 grid (rows = plane stacks, cols = planes).

    ``planes``: {'A': [N, P, C, H, W], 'B': ...} (or 'xyz'; tri-grids [N, P, C, D, H, W] are averaged over D).
    'pca': the 3 principal components over channels, shared by all planes, as RGB;
    'channel': one channel in grey, shared range.
    """
    stacks = []
    for name, p in planes.items():
        p = p[0].float()
        if p.ndim == 5:
            p = p.mean(dim=2)
        stacks.append((name, p.cpu().numpy()))                   # [P, C, H, W]
    allp = np.concatenate([p for _, p in stacks], axis=0)           # [sum P, C, H, W]
    ch = allp.shape[1]
    if mode == 'pca':
        x = allp.transpose(1, 0, 2, 3).reshape(ch, -1)
        mean = x.mean(axis=1, keepdims=True)
        cov = np.cov(x - mean) if ch > 1 else np.ones((1, 1))
        _, vecs = np.linalg.eigh(np.atleast_2d(cov))
        basis = vecs[:, ::-1][:, :3]
        if basis.shape[1] < 3:
            basis = np.concatenate([basis] * 3, axis=1)[:, :3]
        proj = basis.T @ (x - mean)
        lo, hi = np.percentile(proj, 1, axis=1), np.percentile(proj, 99, axis=1)
        render = lambda q: _pca_rgb(q - mean.reshape(ch, 1, 1), basis, lo, hi)  # noqa: E731
    else:
        k = int(np.clip(channel, 0, ch - 1))
        lo, hi = np.percentile(allp[:, k], 1), np.percentile(allp[:, k], 99)
        render = lambda q: colormaps.gray_to_rgb(q[k], lo, hi)  # noqa: E731
    h, w = allp.shape[-2:]
    cols = max(p.shape[0] for _, p in stacks)
    grid = np.full((len(stacks) * (h + gap) - gap, cols * (w + gap) - gap, 3), 30, np.uint8)
    for r, (_, p) in enumerate(stacks):
        for i in range(p.shape[0]):
            grid[r * (h + gap): r * (h + gap) + h, i * (w + gap): i * (w + gap) + w] = render(p[i])
    return grid, [name for name, _ in stacks]


def unwrapped_weight_maps(coords: list[tuple[np.ndarray, np.ndarray]], threshold: float,
                          height: int = 96, width: int = 192, gap: int = 4) -> tuple[np.ndarray, list[str]]:
    """The weight map of each sphere unwrapped over (phi_n across, theta_n down), with the visible surface.

    ``coords``: per sphere, (theta_n, phi_n) arrays of the visible surface points, in [-1, 1].
    Grey = weight (white = 1 at the centre, black = 0 at seam and poles); the band below
    ``threshold`` is tinted red; visible surface points are green.
    """
    from spherehead.render.spherical import sphere_weight_map
    theta = torch.linspace(-1, 1, height)[:, None].expand(height, width)
    phi = torch.linspace(-1, 1, width)[None, :].expand(height, width)
    w = sphere_weight_map(theta, phi).numpy()
    base = colormaps.gray_to_rgb(0.25 + 0.75 * w)
    base[w < threshold] = (base[w < threshold] * 0.4 + np.array([255, 40, 40]) * 0.6).astype(np.uint8)
    rows = []
    for th, ph in coords:
        img = base.copy()
        if th.size:
            yi = np.clip(np.round((th + 1) / 2 * (height - 1)).astype(int), 0, height - 1)
            xi = np.clip(np.round((ph + 1) / 2 * (width - 1)).astype(int), 0, width - 1)
            img[yi, xi] = (60, 230, 60)
        rows.append(img)
    names = ['A', 'B'][:len(rows)]
    out = np.full((len(rows) * (height + gap) - gap, width, 3), 30, np.uint8)
    for i, img in enumerate(rows):
        out[i * (height + gap): i * (height + gap) + height] = img
    return out, names
