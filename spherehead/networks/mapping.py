"""StyleGAN2 mapping network: (z, c) -> w, broadcast to num_ws, with w_avg tracking and truncation."""
from __future__ import annotations

import torch
from torch import nn

from spherehead.networks.layers import FullyConnectedLayer, normalize_2nd_moment


class MappingNetwork(nn.Module):
    """MLP from a latent z [N, z_dim] and a label c [N, c_dim] to ws [N, num_ws, w_dim].

    z and the embedded label are each normalised to unit RMS and concatenated.
    Modules: embed (when c_dim > 0), fc0 .. fc{num_layers-1}; buffer w_avg [w_dim]
    (when num_ws is not None and w_avg_beta is not None). num_ws=None returns [N, w_dim].

    Args:
        z_dim: latent size, 0 = no latent.
        c_dim: label size, 0 = no label.
        w_dim: output size.
        num_ws: copies of w to output, None = return w without broadcasting.
        num_layers: number of fc layers.
        embed_features: label embedding size (None = w_dim).
        layer_features: hidden size (None = w_dim).
        activation: activation of the fc layers.
        lr_multiplier: learning-rate multiplier of the fc layers (the embedding uses 1).
        w_avg_beta: decay of the running mean of w, None = do not track.
        last_activation: activation of the last fc layer (None = `activation`); PanoHead's
            camera-offset net uses 'linear'.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None, activation: str = 'lrelu',
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.998,
                 last_activation: str | None = None) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            act = last_activation if (idx == num_layers - 1 and last_activation) else activation
            setattr(self, f'fc{idx}', FullyConnectedLayer(features[idx], features[idx + 1], activation=act,
                                                          lr_multiplier=lr_multiplier))
        self.tracks_w_avg = num_ws is not None and w_avg_beta is not None
        if self.tracks_w_avg:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None).

        truncation_psi: ws = w_avg + psi * (ws - w_avg) for the first `truncation_cutoff`
            ws (all when None). update_emas: move w_avg towards the batch mean of w.
        """
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f'z must be [N, {self.z_dim}], got {None if z is None else tuple(z.shape)}')
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f'c must be [N, {self.c_dim}], got {None if c is None else tuple(c.shape)}')
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        if x is None:
            raise ValueError('a mapping network with z_dim == c_dim == 0 has no input')

        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        if update_emas and self.tracks_w_avg:
            self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))   # fp32 under autocast

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            if not self.tracks_w_avg:
                raise ValueError('truncation needs w_avg, which this network does not track')
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'
