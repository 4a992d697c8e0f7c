"""Training configuration: typed dataclasses that serialise to JSON (``training_options.json``).

A run is fully described by one :class:`TrainingConfig`: the generator and discriminator
shapes, the dataset options, the losses, the optimisers and the three-phase schedule.
``train.py`` maps its options onto it and writes it to the run folder; ``--config FILE``
starts a run from such a file. Lengths are in kimg (thousands of real images shown to D).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from spherehead.config import DiscriminatorConfig, GeneratorConfig, check_keys, discriminator_config_for, preset
from spherehead.data.dataset import DatasetOptions
from spherehead.train.backend import TF32_MODES

PRECISIONS = ('fp32', 'mixed', 'bf16')
GRAD_SYNCS = ('overlap', 'flat')                # spherehead.train.grad_sync.GRAD_SYNC_MODES
MAX_DEFAULT_WORKERS = 3


def default_workers() -> int:
    """Data-loader workers per process by default: the cores this process may use, at most 3
    (more than the cores makes PyTorch warn that the loader might freeze)."""
    import os
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):       # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cores))


@dataclass
class PhaseConfig:
    """SphereHead's three phases (paper: I 0-2M images, II 2-10M, III 10-25M of 25M).

    Boundaries are absolute kimg; None means "the paper's fraction of the run length"
    (I ends at 8 %, II at 40 % of ``TrainingConfig.kimg``). Probabilities are for spheres
    (A, B, fused); each training iteration renders one of them for all its fakes.
    """
    phase1_end_kimg: float | None = None        # paper: 2000 of 25000 (8 %)
    phase2_end_kimg: float | None = None        # paper: 10000 of 25000 (40 %)
    front_yaw_deg: float = 45.0                 # phase I keeps |yaw| < this ("near-front views only")
    probs_phase1: tuple[float, float, float] = (0.33, 0.33, 0.34)
    probs_phase2: tuple[float, float, float] = (0.33, 0.33, 0.34)
    probs_phase3: tuple[float, float, float] = (0.10, 0.10, 0.80)
    vico_weight: float = 1.0                    # weight of the ViCo term in D's loss
    vico_start_kimg: float | None = None        # None: the start of phase III; a number: from then on

    def __post_init__(self) -> None:
        for name in ('probs_phase1', 'probs_phase2', 'probs_phase3'):
            p = tuple(float(v) for v in getattr(self, name))
            if len(p) != 3 or min(p) < 0 or abs(sum(p) - 1) > 1e-3:
                raise ValueError(f'{name} must be 3 probabilities (A, B, fused) summing to 1, got {p}')
            setattr(self, name, p)
        if self.vico_weight < 0:
            raise ValueError(f'vico_weight must be >= 0, got {self.vico_weight}')


@dataclass
class LossConfig:
    """Loss terms and their weights (defaults: PanoHead's recipe, EG3D where PanoHead has none)."""
    r1_gamma: float = 1.0                       # R1 on image + raw image
    r1_gamma_seg: float = 1.0                   # R1 on mask + parsing (PanoHead's gamma_seg)
    r1_interval: int = 16                       # lazy R1: every N discriminator steps
    density_reg: float = 0.25                   # EG3D's density TV regulariser (0 = off)
    density_reg_interval: int = 4               # every N generator steps
    density_reg_p_dist: float = 0.004           # perturbation of the point pairs (world units)
    density_noise_fade_kimg: float = 200.0      # density noise 1 -> 0 over this (0 = no noise)
    blur_init_sigma: float | None = None        # D-input blur sigma in pixels; None: 10 at 512 px, scaled to the image size
    blur_fade_kimg: float = 200.0               # blur -> 0 over this (0 = no blur)
    gpc_swap_prob: float = 0.7                  # generator pose conditioning: swap c with another sample's
    gpc_fade_kimg: float = 1000.0               # swap probability 1 -> gpc_swap_prob over this
    bcg_swap_prob: float = 0.2                  # background net driven by another sample's ws
    camera_offset_reg: float = 10.0             # weight of |mean offset|^2 (self-adaptive camera)
    style_mixing_prob: float = 0.0


@dataclass
class TrainingConfig:
    """Everything a run needs. ``generator``/``discriminator`` are full network configs."""
    data: DatasetOptions = field(default_factory=DatasetOptions)
    outdir: str = 'runs'
    cfg: str = 'demo'                           # preset the generator came from (for the run name)
    generator: GeneratorConfig = field(default_factory=lambda: preset('demo'))
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    phases: PhaseConfig = field(default_factory=PhaseConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    kimg: float = 25000.0                       # total length
    batch: int = 32                             # global batch (all ranks); with batch_gpu set, batch_gpu x ranks
    batch_gpu: int | None = None                # fixed batch per process (rank), as the released recipes train:
                                                # more GPUs, a larger global batch; None: batch / ranks
    snap_kimg: float = 200.0                    # kimg between snapshots
    tick_kimg: float = 4.0                      # kimg between log lines
    seed: int = 0
    lr_g: float = 0.0025
    lr_d: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    ema_kimg: float | None = None               # None: batch * 10 / 32
    ema_rampup: float | None = 0.05             # None: off (the family turns it off on resume)
    neural_rendering_resolution_initial: int = 64
    neural_rendering_resolution_final: int | None = None
    neural_rendering_resolution_fade_kimg: float = 1000.0
    precision: str = 'mixed'                    # 'mixed': float16 on CUDA in D's top num_fp16_res resolutions and
                                                # G's super-resolution (sr_num_fp16_res > 0), as the family trains;
                                                # 'fp32'; 'bf16' (autocast of G and D on CUDA)
    workers: int = field(default_factory=default_workers)   # DataLoader worker processes per rank
    grid_seeds: int = 4                         # rows of the sample grid
    resume: str | None = None                   # run folder, training-state file, our .safetensors or a released .pkl
    metrics: tuple[str, ...] = ()               # evaluated at each snapshot (spherehead.metrics)
    metrics_num: int | None = None
    inception: str | None = None
    keep_states: int = 2                        # training-state files kept (older ones deleted)
    device: str = 'auto'                        # 'auto' (cuda if available), 'cpu' or 'cuda'
    grad_sync: str = 'overlap'                  # several ranks: 'overlap' all-reduces buckets of gradients during the
                                                # backward (as DDP does); 'flat' one all-reduce after it (the reference)
    grad_bucket_mib: float = 25.0               # bucket size of 'overlap' (MiB)
    cudnn_benchmark: bool = True                # CUDA: cuDNN autotuning (1.18x faster step on one H200, docs/performance.md)
    tf32: str = 'torch'                         # CUDA: 'torch' (its defaults), 'off' (the released loop's), 'on'

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = DatasetOptions(**self.data)
        if isinstance(self.generator, dict):
            self.generator = GeneratorConfig.from_dict(self.generator)
        if isinstance(self.discriminator, dict):
            self.discriminator = DiscriminatorConfig.from_dict(self.discriminator)
        if isinstance(self.phases, dict):
            self.phases = PhaseConfig(**self.phases)
        if isinstance(self.loss, dict):
            self.loss = LossConfig(**self.loss)
        if self.data.yaw_range is not None:
            self.data.yaw_range = tuple(self.data.yaw_range)
        self.betas = tuple(float(b) for b in self.betas)
        self.metrics = tuple(self.metrics)
        if self.batch_gpu is not None and self.batch_gpu < 1:
            raise ValueError(f'batch_gpu must be >= 1 or null, got {self.batch_gpu}')
        if self.grad_sync not in GRAD_SYNCS:
            raise ValueError(f"grad_sync must be one of {', '.join(GRAD_SYNCS)}, got {self.grad_sync!r}")
        if not self.grad_bucket_mib > 0:
            raise ValueError(f'grad_bucket_mib must be > 0, got {self.grad_bucket_mib}')
        if self.tf32 not in TF32_MODES:
            raise ValueError(f"tf32 must be one of {', '.join(TF32_MODES)}, got {self.tf32!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        d = self.discriminator
        if self.precision == 'mixed' and d.num_fp16_res > 0 and d.conv_clamp is None:
            raise ValueError('precision mixed runs D in float16 and needs its convolutions clamped: set '
                             'discriminator.conv_clamp (the family uses 256) or discriminator.num_fp16_res = 0')

    # ------------------------------------------------------------------ derived
    def for_world(self, world_size: int) -> 'TrainingConfig':
        """This config as it trains on ``world_size`` processes: with batch_gpu set, ``batch`` becomes the
        global batch batch_gpu x world_size (so a resumed run on another GPU count keeps the per-GPU batch)."""
        if self.batch_gpu is None or self.batch == self.batch_gpu * world_size:
            return self
        return dataclasses.replace(self, batch=self.batch_gpu * world_size)

    @property
    def ema_kimg_resolved(self) -> float:
        return self.batch * 10 / 32 if self.ema_kimg is None else self.ema_kimg

    @property
    def phase1_end_kimg(self) -> float:
        p = self.phases.phase1_end_kimg
        return 0.08 * self.kimg if p is None else float(p)

    @property
    def phase2_end_kimg(self) -> float:
        p = self.phases.phase2_end_kimg
        return 0.40 * self.kimg if p is None else float(p)

    @property
    def vico_start_kimg(self) -> float:
        v = self.phases.vico_start_kimg
        return self.phase2_end_kimg if v is None else float(v)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'TrainingConfig':
        check_keys(cls, d, 'training')
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> 'TrainingConfig':
        return cls.from_dict(json.loads(s))


def default_config(cfg: str = 'demo', representation: str | None = None, parsing: bool | None = None,
                   **overrides: Any) -> TrainingConfig:
    """A TrainingConfig for a preset ('tiny', 'demo', 'paper'), optionally another representation
    and the parsing branch on/off; the discriminator follows the generator."""
    g_changes: dict[str, Any] = {}
    if representation is not None:
        g_changes['representation'] = representation
    if parsing is not None:
        g_changes['use_parsing'] = parsing
    g = preset(cfg, **g_changes)
    d = discriminator_config_for(g)
    # The family trains at a 64 px neural rendering (an optional fine-tune at 128 comes later).
    tc = TrainingConfig(cfg=cfg, generator=g, discriminator=d,
                        neural_rendering_resolution_initial=min(64, g.rendering.neural_rendering_resolution))
    return dataclasses.replace(tc, **overrides)
