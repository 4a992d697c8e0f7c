"""Typed settings of an inversion (pivotal tuning), serialisable to JSON for the report.

Two phases, as the released projectors of the family run them (PTI, Roich et al. 2021, and its
EG3D / PanoHead ports; values checked against their code, see docs/invert.md):

1. ``ProjectConfig``: search the latent w (W, or W+ as an option) that renders the target at its
   camera, generator frozen. Adam (betas 0.9, 0.999) from the mean w, learning rate with a
   cosine ramp-up over the first 5 % and ramp-down over the last 25 % of the steps, Gaussian
   noise added to w (0.05 w_std, fading to zero at 75 % of the steps, quadratically).
2. ``TuneConfig``: tune the generator's weights around that pivot w (Adam, lr 3e-4) with L2 +
   LPIPS at the target's camera, plus the locality regulariser: renders of the tuned and the
   original generator are kept alike at a latent moved from the pivot towards a random
   (truncated, psi 0.5) w.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

SPACES = ('w', 'w+')


@dataclass
class ProjectConfig:
    """Phase 1: the pivot latent. Loss = l2_weight * MSE + lpips_weight * LPIPS
    + w_avg_weight * mean((w - w_avg)^2) + noise_reg_weight * noise autocorrelation (optimize_noise)."""
    steps: int = 100
    space: str = 'w'                    # 'w': one w for every layer (PTI); 'w+': one w per layer
    lr: float = 0.01                    # peak Adam learning rate (PTI's W projector: 0.01; PanoHead's W+: 0.1)
    lr_rampup: float = 0.05             # fraction of the steps over which the learning rate ramps up
    lr_rampdown: float = 0.25           # fraction of the steps over which it ramps down (cosine)
    noise_factor: float = 0.05          # std of the noise added to w, in units of w_std, at step 0
    noise_ramp: float = 0.75            # the noise reaches zero at this fraction of the steps
    l2_weight: float = 0.1              # PanoHead's projector: 0.1 MSE (images in [-1, 1]) + 1 LPIPS
    lpips_weight: float = 1.0
    w_avg_weight: float = 0.0           # pull towards the mean w (PanoHead's W+ projector uses 1.0)
    optimize_noise: bool = False        # also fit the backbone's constant noise images (PTI: on; PanoHead: off)
    noise_reg_weight: float = 1e5       # weight of their multi-scale autocorrelation penalty
    w_avg_samples: int = 10000          # z samples for the mean w and w_std (seeded with 123, as the projectors)


@dataclass
class TuneConfig:
    """Phase 2: the generator's weights around the pivot. Loss = l2_weight * MSE + lpips_weight * LPIPS
    at the target's camera + the locality regulariser every ``locality_every`` steps (0 = off)."""
    steps: int = 100
    lr: float = 3e-4                    # PTI's pti_learning_rate (PanoHead's project_pti: the same)
    l2_weight: float = 1.0              # PTI: pt_l2_lambda 1, pt_lpips_lambda 1
    lpips_weight: float = 1.0
    locality_every: int = 2             # PTI: locality_regularization_interval 1 (every 2: the CPU budget, docs/invert.md)
    locality_samples: int = 1           # PTI: latent_ball_num_of_samples 1
    locality_psi: float = 0.5           # truncation of the random w (PTI: 0.5)
    locality_radius: float = 1.0        # how far from the pivot, in units of w_std (PTI: 30 in StyleGAN2's W; see docs)
    locality_l2_weight: float = 0.1     # PTI: regulizer_l2_lambda 0.1, regulizer_lpips_lambda 0.1
    locality_lpips_weight: float = 0.1


@dataclass
class InvertConfig:
    """A whole inversion: both phases plus how images are rendered while optimising."""
    project: ProjectConfig = field(default_factory=ProjectConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    seed: int = 0                       # draws of the w noise, the noise images and the regulariser's latents
    deterministic: bool = True          # no jitter of the ray samples while optimising: the renders the tools show
                                        # (False: jittered as in training; worse here, see docs/invert.md)
    camera_offset: bool = False         # apply the generator's camera-offset net (PanoHead) at the mean z, as PanoHead's projector

    def __post_init__(self) -> None:
        if isinstance(self.project, dict):
            self.project = ProjectConfig(**self.project)
        if isinstance(self.tune, dict):
            self.tune = TuneConfig(**self.tune)
        self.validate()

    def validate(self) -> None:
        p, t = self.project, self.tune
        if p.space not in SPACES:
            raise ValueError(f'space must be one of {SPACES}, got {p.space!r}')
        for name, v in (('project.steps', p.steps), ('tune.steps', t.steps), ('tune.locality_every', t.locality_every)):
            if v < 0:
                raise ValueError(f'{name} must be >= 0, got {v}')
        if p.w_avg_samples < 2:
            raise ValueError(f'project.w_avg_samples must be >= 2, got {p.w_avg_samples}')
        if t.locality_samples < 1:
            raise ValueError(f'tune.locality_samples must be >= 1, got {t.locality_samples}')
        for name, v in (('project.lr', p.lr), ('tune.lr', t.lr)):
            if not v > 0:
                raise ValueError(f'{name} must be > 0, got {v}')
        weights = dataclasses.asdict(p) | {f't.{k}': v for k, v in dataclasses.asdict(t).items()}
        for name, v in weights.items():
            if name.endswith('weight') and v < 0:
                raise ValueError(f'{name} must be >= 0, got {v}')

    @property
    def uses_perceptual(self) -> bool:
        """Whether any loss term needs the perceptual (LPIPS) network."""
        t = self.tune
        return (self.project.lpips_weight > 0 and self.project.steps > 0) or (t.steps > 0 and (
            t.lpips_weight > 0 or (t.locality_every > 0 and t.locality_lpips_weight > 0)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'InvertConfig':
        return cls(**d)
