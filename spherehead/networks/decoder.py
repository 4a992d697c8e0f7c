"""The feature decoder: an MLP from sampled plane features to density and colour features.

On CPU, in float32 and with autograd off, ``forward`` takes a leaner path with the same
maths (see ``_forward_fast``); SPHEREHEAD_NO_FAST_CPU=1 turns it off."""
from __future__ import annotations

import math

import torch

from spherehead.networks.layers import FullyConnectedLayer
from spherehead.ops.cpu_sampler import fast_cpu_applies


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
        if (fast_cpu_applies(features, self.net[0].weight, self.net[2].weight)
                and self.net[0].bias is not None and self.net[2].bias is not None):
            return self._forward_fast(features)
        x = self.net(features.reshape(N * M, C)).reshape(N, M, -1)
        rgb, sigma = x[..., 1:], x[..., 0:1]
        if self.activation == 'sigmoid':
            rgb = torch.sigmoid(rgb) * (1 + 2 * 0.001) - 0.001
        elif self.activation == 'lrelu':
            rgb = torch.nn.functional.leaky_relu(rgb, 0.2) * math.sqrt(2)
        return {'rgb': rgb, 'sigma': sigma}

    def _forward_fast(self, features: torch.Tensor, chunk: int = 4096) -> dict[str, torch.Tensor]:
        """``forward`` for CPU float32 inference: addmm calls and in-place activations, ``chunk``
        points at a time so that the [chunk, hidden] activations stay in the core's cache.

        Softplus is computed as relu(x) + log(1 + exp(-|x|)), the exponent clamped at -20
        (below, 1 + exp(.) is 1 in float32 anyway): torch's softplus goes through log1p and,
        for the wide pre-activations of a trained decoder (|x| up to ~150), through exp's
        slow underflow path; this form is several times faster and within 1e-6 of it (tested).
        """
        N, M, C = features.shape
        fc0, fc1 = self.net[0], self.net[2]
        w0, b0 = (fc0.weight * fc0.weight_gain).t(), fc0.bias * fc0.bias_gain
        w1, b1 = fc1.weight * fc1.weight_gain, fc1.bias * fc1.bias_gain
        w_sigma, w_rgb = w1[:1].t(), w1[1:].t()
        f = features.reshape(N * M, C)
        sigma = f.new_empty((N * M, 1))
        rgb = f.new_empty((N * M, w_rgb.shape[1]))
        for s in range(0, N * M, chunk):
            x = torch.addmm(b0, f[s:s + chunk], w0)                              # [chunk, hidden]
            soft = x.abs().neg_().clamp_(min=-20.0).exp_().add_(1.0).log_()
            x = x.clamp_(min=0.0).add_(soft)                                     # softplus
            torch.addmm(b1[:1], x, w_sigma, out=sigma[s:s + chunk])
            y = torch.addmm(b1[1:], x, w_rgb, out=rgb[s:s + chunk])
            if self.activation == 'sigmoid':
                y.sigmoid_().mul_(1 + 2 * 0.001).sub_(0.001)
            elif self.activation == 'lrelu':
                torch.nn.functional.leaky_relu_(y, 0.2).mul_(math.sqrt(2))
        return {'rgb': rgb.reshape(N, M, -1), 'sigma': sigma.reshape(N, M, 1)}
