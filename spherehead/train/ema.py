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
    """Parameters blend towards G by (1 - beta); buffers (w_avg, noise constants, filters) are copied.
    Multi-tensor ops: a few kernel launches per step, not two per tensor (hundreds at the paper config)."""
    ema_params, params = list(G_ema.parameters()), [p.detach() for p in G.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    torch._foreach_copy_(list(G_ema.buffers()), [b.detach() for b in G.buffers()])
