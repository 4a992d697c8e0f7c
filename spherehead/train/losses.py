"""The GAN losses of SphereHead training, one method per pass.

- ``g_main``: non-saturating logistic loss of G's fakes, plus the camera-offset regulariser
  (PanoHead's self-adaptive camera: |mean offset|^2).
- ``g_density_reg``: EG3D's density regulariser (L1 between the density at random points and
  at slightly perturbed ones), lazy.
- ``d_main``: D's logistic loss on fakes and reals, plus **ViCo**: the real batch with its
  camera labels shuffled is scored as fake, with weight ``vico_weight``.
- ``d_r1``: lazy R1 on the real inputs (image + raw with ``r1_gamma``; mask + parsing with
  ``r1_gamma_seg``).

Every method runs forward and backward and returns its statistics as detached 0-d tensors (read once per log tick, so no step waits for the GPU). What D sees is a
dict: ``image`` [N,3,R,R] in [-1,1], ``image_raw`` [N,3,r,r], ``image_mask`` [N,1,r,r] in [0,1]
and ``image_parsing`` [N,20,r,r] (probabilities), r = the current neural rendering resolution.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from spherehead.config import NUM_PARSING_CLASSES
from spherehead.networks.discriminator import DualDiscriminator, filtered_resizing
from spherehead.networks.generator import Generator
from spherehead.ops.conv_autograd import second_order_gradients
from spherehead.ops.upfirdn2d import filter2d
from spherehead.train.config import LossConfig


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur [N, C, H, W] with a Gaussian of std ``sigma`` pixels (taps up to 3 sigma; size kept)."""
    size = int(math.floor(sigma * 3))
    if size <= 0:
        return x
    taps = torch.arange(-size, size + 1, device=x.device, dtype=torch.float32)
    f = torch.exp(-0.5 * (taps / sigma) ** 2)
    return filter2d(x, f / f.sum())


def roll_where(x: torch.Tensor, prob: float) -> torch.Tensor:
    """Each row of x replaced by the previous row's (batch rolled by one) with probability ``prob``."""
    if prob <= 0:
        return x
    pick = torch.rand([x.shape[0]] + [1] * (x.ndim - 1), device=x.device) < prob
    return torch.where(pick, torch.roll(x, 1, 0), x)


def shuffled_labels(c: torch.Tensor) -> torch.Tensor:
    """ViCo's mismatched cameras: each image gets another image's label (the batch rolled by one)."""
    return torch.roll(c, 1, 0)


class GANLoss:
    """Forward + backward of each training pass. ``autocast``: bf16 autocast of G and D on CUDA."""

    def __init__(self, G: Generator, D: DualDiscriminator, cfg: LossConfig, autocast: bool = False):
        self.G, self.D, self.cfg = G, D, cfg
        self.autocast = autocast

    def _amp(self):
        if self.autocast:
            return torch.autocast(device_type='cuda', dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ inputs
    def real_inputs(self, batch: dict, resolution: int) -> dict[str, torch.Tensor]:
        """A loader batch (uint8 images, masks, parsing ids on the device) -> D's input dict."""
        image = batch['image'].to(torch.float32) / 127.5 - 1
        f = self.D.resample_filter   # resize the reals with the filter D resizes the fakes with (on its device)
        raw = filtered_resizing(image, resolution, f)
        out = {'image': image, 'image_raw': raw}
        if self.D.mask_channels:
            out['image_mask'] = filtered_resizing(batch['mask'].to(torch.float32) / 255, resolution, f)
        if self.D.parsing_channels:
            onehot = F.one_hot(batch['parsing'][:, 0].long(), NUM_PARSING_CLASSES).permute(0, 3, 1, 2)
            out['image_parsing'] = filtered_resizing(onehot.to(torch.float32), resolution, f)
        return out

    # ------------------------------------------------------------------ networks
    def run_G(self, z: torch.Tensor, c: torch.Tensor, sphere: str, resolution: int, gpc_swap_prob: float,
              update_emas: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Fakes at cameras c [N, 25]; the mapping sees c swapped with probability gpc_swap_prob.
        Returns (synthesis dict, camera offset [N, 3] or None)."""
        G, cfg = self.G, self.cfg
        with self._amp():
            ws = G.mapping(z, roll_where(c, gpc_swap_prob), update_emas=update_emas)
            if cfg.style_mixing_prob > 0 and float(torch.rand([])) < cfg.style_mixing_prob:
                cutoff = int(torch.randint(1, ws.shape[1], []))
                ws = torch.cat([ws[:, :cutoff], G.mapping(torch.randn_like(z), c)[:, cutoff:]], 1)
            ws_bcg = roll_where(ws, cfg.bcg_swap_prob) if G.bcg_synthesis is not None else None
            c_render = G.camera_offset(z, c, update_emas=update_emas)
            delta = (c_render - c)[:, [3, 7, 11]] if G.t_mapping is not None else None
            out = G.synthesis(ws, c_render, sphere=sphere, neural_rendering_resolution=resolution,
                              update_emas=update_emas, ws_bcg=ws_bcg, noise_mode='random')
        return out, delta

    @staticmethod
    def blurred(img: dict[str, torch.Tensor], blur_sigma: float) -> dict[str, torch.Tensor]:
        """D's inputs blurred: the image by blur_sigma pixels, the raw image by the same amount
        relative to its size (the same for reals and fakes, so blur never tells them apart)."""
        if blur_sigma <= 0:
            return img
        img = dict(img)
        img['image'] = gaussian_blur(img['image'], blur_sigma)
        img['image_raw'] = gaussian_blur(img['image_raw'], blur_sigma * img['image_raw'].shape[-1] / img['image'].shape[-1])
        return img

    def run_D(self, img: dict[str, torch.Tensor], c: torch.Tensor, blur_sigma: float) -> torch.Tensor:
        """D's logits [N, 1] for an input dict, after the fading blur."""
        img = self.blurred(img, blur_sigma)
        with self._amp():
            return self.D(img, c).float()

    # ------------------------------------------------------------------ passes
    def g_main(self, z, c, sphere, resolution, blur_sigma, gpc_swap_prob) -> dict[str, torch.Tensor]:
        out, delta = self.run_G(z, c, sphere, resolution, gpc_swap_prob)
        logits = self.run_D(out, c, blur_sigma)
        loss = F.softplus(-logits).mean()
        stats = {'G/loss': loss.detach(), 'scores/fake': logits.mean().detach()}
        if delta is not None and self.cfg.camera_offset_reg > 0:
            reg = delta.float().mean(0).square().sum() * self.cfg.camera_offset_reg
            loss = loss + reg
            stats['G/camera_offset_reg'] = reg.detach()
        loss.backward()
        return stats

    def g_density_reg(self, z, c, sphere, gpc_swap_prob, gain: float) -> dict[str, torch.Tensor]:
        """EG3D's density regulariser on 1000 random points per sample in [-1, 1]^3 (world units)."""
        G, cfg = self.G, self.cfg
        with self._amp():
            ws = G.mapping(z, roll_where(c, gpc_swap_prob))
            planes = G.backbone_planes(ws, noise_mode='random')
            p0 = torch.rand(z.shape[0], 1000, 3, device=z.device) * 2 - 1
            p1 = p0 + torch.randn_like(p0) * cfg.density_reg_p_dist
            sigma = G.query(planes, torch.cat([p0, p1], 1), sphere=sphere)['sigma'].float()
        tv = F.l1_loss(sigma[:, :1000], sigma[:, 1000:]) * cfg.density_reg
        (tv * gain).backward()
        return {'G/density_reg': tv.detach()}

    def d_main(self, real: dict, c_real, z, c_gen, sphere, resolution, blur_sigma, gpc_swap_prob,
               vico_weight: float) -> dict[str, torch.Tensor]:
        """Fakes -> 0, reals -> 1, and with vico_weight > 0 reals under shuffled cameras -> 0."""
        with torch.no_grad():
            fake, _ = self.run_G(z, c_gen, sphere, resolution, gpc_swap_prob, update_emas=True)
        fake = {k: v.detach().float() for k, v in fake.items()}
        gen_logits = self.run_D(fake, c_gen, blur_sigma)
        # D's trunk does not see the camera: the reals go through it once and are scored under
        # their own cameras and (ViCo) under shuffled ones. Same maths as two D calls, a third less work.
        with self._amp():
            real_h = self.D.embed(self.blurred(real, blur_sigma))
            real_logits = self.D.score(real_h, c_real).float()
        loss_gen, loss_real = F.softplus(gen_logits).mean(), F.softplus(-real_logits).mean()
        loss = loss_gen + loss_real
        stats = {'D/loss': loss.detach(), 'scores/real': real_logits.mean().detach(),
                 'scores/fake_d': gen_logits.mean().detach()}
        if vico_weight > 0:
            with self._amp():
                vico_logits = self.D.score(real_h, shuffled_labels(c_real)).float()
            loss_vico = F.softplus(vico_logits).mean() * vico_weight
            loss = loss + loss_vico
            stats['D/vico'] = loss_vico.detach()
            stats['scores/real_shuffled'] = vico_logits.mean().detach()
        loss.backward()
        return stats

    def d_r1(self, real: dict, c_real, blur_sigma: float, gain: float) -> dict[str, torch.Tensor]:
        """Lazy R1: gamma/2 |dD/dx|^2 on image + raw, gamma_seg/2 on mask + parsing; scaled by gain.
        Never under bf16 autocast (second-order gradients); with mixed precision D's float16 blocks
        run as in the other passes, as the family's R1 does. D's convolutions are recorded with
        `conv_autograd` (its inner pass computes no weight gradients; the outer pass runs plain
        convolutions instead of torch's image-sized-kernel double backward)."""
        cfg = self.cfg
        inputs = {k: v.detach().requires_grad_(True) for k, v in real.items()}
        with second_order_gradients():
            logits = self.D(self.blurred(inputs, blur_sigma), c_real)
        names = list(inputs)
        grads = torch.autograd.grad(logits.sum(), [inputs[k] for k in names], create_graph=True)
        g = dict(zip(names, grads))
        pen = g['image'].square().sum([1, 2, 3]) + g['image_raw'].square().sum([1, 2, 3])
        pen_seg = sum(g[k].square().sum([1, 2, 3]) for k in ('image_mask', 'image_parsing') if k in g)
        loss = pen * (cfg.r1_gamma / 2)
        if isinstance(pen_seg, torch.Tensor):
            loss = loss + pen_seg * (cfg.r1_gamma_seg / 2)
        (loss.mean() * gain).backward()
        out = {'D/r1_penalty': pen.mean().detach()}
        if isinstance(pen_seg, torch.Tensor):
            out['D/r1_penalty_seg'] = pen_seg.mean().detach()
        return out
