"""The plain arguments of one render. Widgets edit these; the render worker reads them.

RenderArgs is frozen (hashable, comparable): the GUI rebuilds it every frame from the
widgets' state and sends it to the worker only when it differs from the last one sent.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from spherehead.camera import DEFAULT_RADIUS, RELEASED_FOV_DEG

SPHERES = ('A', 'B', 'fused')
SPHERE_LABELS = {'A': 'F1 (sphere A)', 'B': 'F2 (sphere B)', 'fused': 'fused'}
RENDER_TYPES = ('image', 'raw', 'depth', 'mask', 'parsing', 'weight')
RENDER_TYPE_LABELS = {'image': 'image', 'raw': 'raw (neural render)', 'depth': 'depth', 'mask': 'mask',
                      'parsing': 'parsing', 'weight': 'sphere weight'}
PLANE_MODES = ('pca', 'channel')
NOISE_MODES = ('const', 'random', 'none')


@dataclass(frozen=True)
class RenderArgs:
    """Everything the worker needs to produce one frame. Angles in degrees, distances in world units."""
    network: str = 'demo'                 # load_generator source
    # latent
    seed: int = 0
    seed2: int = 1                        # second seed of the interpolation
    interp: float = 0.0                   # 0 = seed, 1 = seed2 (linear in w space)
    w_path: str | None = None             # a saved w (.npy) replaces seed / interpolation
    truncation_psi: float = 0.7
    truncation_cutoff: int | None = None
    noise_mode: str = 'const'
    # camera (orbit around the origin; the mapping is conditioned on the frontal camera)
    yaw: float = 0.0
    pitch: float = 0.0
    radius: float = DEFAULT_RADIUS
    fov: float = RELEASED_FOV_DEG
    # spheres and output
    sphere: str = 'fused'                 # 'A' (F1), 'B' (F2) or 'fused'
    side_by_side: bool = False            # A | B | fused next to each other
    render_type: str = 'image'            # one of RENDER_TYPES
    # artifact inspection
    overlay_seams: bool = False           # mark surface near the seam / poles of A and of B
    seam_threshold: float = 0.15          # a sphere's weight below this counts as "near its seam or poles"
    inspect: bool = False                 # also produce the feature planes and unwrapped weight maps
    plane_mode: str = 'pca'               # 'pca' (3 principal components as RGB) or 'channel'
    plane_channel: int = 0
    # quality
    neural_rendering_resolution: int | None = None   # None = the model's own
    depth_resolution: int | None = None
    depth_resolution_importance: int | None = None
    cache_backbone: bool = True           # reuse the planes while only the camera (or sphere, type) changes
    # compare mode: a second network rendered beside the first, in lockstep (same state)
    compare: str = ''                     # load_generator source of the right-hand network ('' = off)
    compare_diff: bool = False            # add a third panel: the difference of the two sides

    def validate(self) -> 'RenderArgs':
        if self.sphere not in SPHERES:
            raise ValueError(f'sphere must be one of {SPHERES}, got {self.sphere!r}')
        if self.render_type not in RENDER_TYPES:
            raise ValueError(f'render type must be one of {RENDER_TYPES}, got {self.render_type!r}')
        if self.plane_mode not in PLANE_MODES:
            raise ValueError(f'plane mode must be one of {PLANE_MODES}, got {self.plane_mode!r}')
        if self.noise_mode not in NOISE_MODES:
            raise ValueError(f'noise mode must be one of {NOISE_MODES}, got {self.noise_mode!r}')
        if not self.radius > 0 or not 0 < self.fov < 180:
            raise ValueError(f'radius must be > 0 and fov in (0, 180), got {self.radius}, {self.fov}')
        return self

    def replace(self, **changes) -> 'RenderArgs':
        return dataclasses.replace(self, **changes)

    def latent_key(self) -> tuple:
        """What determines ws."""
        return (self.network, self.seed, self.seed2, self.interp, self.w_path, self.truncation_psi,
                self.truncation_cutoff)

    def planes_key(self) -> tuple:
        """What determines the backbone planes (the camera does not)."""
        return self.latent_key() + (self.noise_mode,)
