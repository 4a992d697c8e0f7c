"""SphereHead's phase schedule and the per-iteration schedules that fade with the image count.

Phase I: near-front data only, spheres A/B/fused drawn 33/33/34 %, no ViCo, D inputs blurred
(blur fading out). Phase II: all data. Phase III: ViCo on, spheres 10/10/80 %.
Everything here is a pure function of the image counter ``nimg`` (and a seeded RNG for the
sphere draws), so a resumed run follows exactly the schedule of an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spherehead.train.config import TrainingConfig

SPHERES = ('A', 'B', 'fused')


@dataclass(frozen=True)
class PhaseState:
    """What the schedule says at one image count."""
    phase: int                                  # 1, 2 or 3
    front_only: bool                            # phase I: the near-front subset of the data
    sphere_probs: tuple[float, float, float]    # (A, B, fused)
    vico: bool                                  # ViCo term on


class PhaseSchedule:
    """Maps the image counter to the phase, the sphere probabilities and the fading terms."""

    def __init__(self, cfg: TrainingConfig):
        self.cfg = cfg
        self.end1 = cfg.phase1_end_kimg * 1000
        self.end2 = cfg.phase2_end_kimg * 1000
        self.vico_start = cfg.vico_start_kimg * 1000
        # Only sphere models can render A or B alone; the others always render 'fused'.
        self.has_spheres = cfg.generator.representation == 'dual_sphere'

    def at(self, nimg: int) -> PhaseState:
        p = self.cfg.phases
        phase = 1 if nimg < self.end1 else 2 if nimg < self.end2 else 3
        probs = {1: p.probs_phase1, 2: p.probs_phase2, 3: p.probs_phase3}[phase]
        if not self.has_spheres:
            probs = (0.0, 0.0, 1.0)
        vico = p.vico_weight > 0 and nimg >= self.vico_start
        return PhaseState(phase=phase, front_only=phase == 1, sphere_probs=probs, vico=vico)

    def draw_sphere(self, rng: np.random.RandomState, state: PhaseState) -> str:
        """One of 'A', 'B', 'fused' with the phase's probabilities (rng is shared by all ranks)."""
        return SPHERES[int(rng.choice(3, p=np.asarray(state.sphere_probs) / sum(state.sphere_probs)))]

    # ------------------------------------------------------------------ fading terms
    def blur_sigma(self, nimg: int) -> float:
        """D-input blur sigma (pixels): blur_init_sigma fading linearly to 0 over blur_fade_kimg."""
        loss = self.cfg.loss
        if loss.blur_fade_kimg <= 0:
            return 0.0
        sigma = loss.blur_init_sigma
        if sigma is None:   # the family's 10 px belongs to 512 px images
            sigma = 10.0 * self.cfg.generator.img_resolution / 512
        return max(1 - nimg / (loss.blur_fade_kimg * 1e3), 0.0) * sigma

    def density_noise(self, nimg: int) -> float:
        """Std of the noise added to densities: 1 fading to 0 over density_noise_fade_kimg."""
        fade = self.cfg.loss.density_noise_fade_kimg
        return max(1 - nimg / (fade * 1e3), 0.0) if fade > 0 else 0.0

    def gpc_swap_prob(self, nimg: int) -> float:
        """Probability that the mapping sees another sample's camera: 1 fading to gpc_swap_prob."""
        loss = self.cfg.loss
        alpha = min(nimg / (loss.gpc_fade_kimg * 1e3), 1.0) if loss.gpc_fade_kimg > 0 else 1.0
        return (1 - alpha) + alpha * loss.gpc_swap_prob

    def neural_rendering_resolution(self, nimg: int) -> int:
        """Side of the raw render: initial, or a linear blend towards final over the fade length."""
        cfg = self.cfg
        if cfg.neural_rendering_resolution_final is None:
            return cfg.neural_rendering_resolution_initial
        alpha = min(nimg / (cfg.neural_rendering_resolution_fade_kimg * 1e3), 1.0) \
            if cfg.neural_rendering_resolution_fade_kimg > 0 else 1.0
        return int(np.rint(cfg.neural_rendering_resolution_initial * (1 - alpha)
                           + cfg.neural_rendering_resolution_final * alpha))
