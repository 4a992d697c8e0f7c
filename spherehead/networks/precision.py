"""Mixed precision as the StyleGAN2 family trains: float16 in the parts a config marks.

Parts that may run in float16 carry `use_fp16` (fixed by the config: D's blocks of the top
`num_fp16_res` resolutions, G's super-resolution blocks when `sr_num_fp16_res` > 0); the
networks holding them carry `mixed_precision`, a run-time switch (off by default, so inference
and CPU runs stay float32). Weights stay float32 and are cast per call; the float16 convolutions
are clamped (conv_clamp 256), as in the released models.
"""
from __future__ import annotations

from torch import nn


def set_mixed_precision(net: nn.Module, enabled: bool) -> list[str]:
    """Turn float16 on or off in `net`; returns the names of the parts that run in float16 when on
    (on CUDA only: on CPU everything stays float32)."""
    for module in net.modules():
        if hasattr(module, 'mixed_precision'):
            module.mixed_precision = bool(enabled)
    return [name for name, module in net.named_modules() if getattr(module, 'use_fp16', False)]
