"""The feature decoder: an MLP from sampled plane features to density and colour features."""
from __future__ import annotations

import math

import torch

from spherehead.networks.layers import FullyConnectedLayer


class FeatureDecoder(torch.nn.Module):
    """[N, M, C] features -> {'rgb': [N, M, out_channels], 'sigma': [N, M, 1]}.

    Two equalised-lr layers (C -> 64 -> 1 + out_channels) with softplus between them
    (EG3D's OSGDecoder; parameter names net.0.* and net.2.* as released).
    activation 'sigmoid' squashes features to (-0.001, 1.001); 'lrelu' is for a toRGB raw layer.
    """

    def __init__(self, in_channels: int, out_channels: int = 32, hidden: int = 64, lr_multiplier: float = 1.0,
                 activation: str = 'sigmoid'):
        super().__init__()
        if activation not in ('sigmoid', 'lrelu', 'linear'):
            raise ValueError(f"decoder activation must be 'sigmoid', 'lrelu' or 'linear', got {activation!r}")
        self.activation = activation
        self.net = torch.nn.Sequential(
            FullyConnectedLayer(in_channels, hidden, lr_multiplier=lr_multiplier),
            torch.nn.Softplus(),
            FullyConnectedLayer(hidden, 1 + out_channels, lr_multiplier=lr_multiplier),
        )

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        N, M, C = features.shape
        x = self.net(features.reshape(N * M, C)).reshape(N, M, -1)
        rgb, sigma = x[..., 1:], x[..., 0:1]
        if self.activation == 'sigmoid':
            rgb = torch.sigmoid(rgb) * (1 + 2 * 0.001) - 0.001
        elif self.activation == 'lrelu':
            rgb = torch.nn.functional.leaky_relu(rgb, 0.2) * math.sqrt(2)
        return {'rgb': rgb, 'sigma': sigma}
