"""The EMA generator: G_ema <- lerp(G, G_ema, beta) after each step, with the family's ramp-up."""
from __future__ import annotations

import torch


def ema_beta(batch: int, nimg: int, ema_kimg: float, rampup: float | None) -> float:
    """Decay per step for a half-life of ema_kimg thousand images; with ``rampup`` the half-life
    is capped at rampup * nimg early in training (so G_ema follows G closely at the start)."""
    ema_nimg = ema_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, nimg * rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """Parameters blend towards G by (1 - beta); buffers (w_avg, noise constants, filters) are copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b.detach())
