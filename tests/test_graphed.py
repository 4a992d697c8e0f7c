"""CUDA-graph replay of G.synthesis (the visualizer's orbit): equal to the eager render, used only
where it may be (CUDA, no autograd, deterministic noise, not switched off)."""
from __future__ import annotations

import pytest
import torch

from spherehead.camera import lookat
from spherehead.checkpoint import random_generator
from spherehead.config import preset
from spherehead.networks.generator import Generator
from spherehead.render import graphed
from spherehead.render.graphed import GraphedSynthesis


def _setup(device, representation='dual_sphere'):
    torch.manual_seed(0)
    if representation == 'dual_sphere':
        G = random_generator('tiny')
    else:
        G = Generator(preset('tiny', representation=representation))
    G = G.to(device).eval().requires_grad_(False)
    z = torch.randn(1, G.z_dim, device=device)
    with torch.no_grad():
        ws = G.mapping(z, lookat(0.0, 0.0, device=device))
        planes = G.backbone_planes(ws)
    return G, ws, planes


def test_not_used_on_cpu_with_grad_or_random_noise(monkeypatch):
    G, ws, planes = _setup('cpu')
    replay = GraphedSynthesis(G)
    c = lookat(30.0, 0.0)
    with torch.no_grad():
        assert replay(ws, c, planes) is None                       # CPU
    assert not replay.usable(ws.cuda() if torch.cuda.is_available() else ws, 'random')
    monkeypatch.setenv(graphed.ENV_DISABLE, '1')
    assert graphed.graphs_disabled()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
def test_replay_equals_eager_render(sphere):
    G, ws, planes = _setup('cuda')
    replay = GraphedSynthesis(G)
    with torch.no_grad():
        for yaw in (0.0, 75.0, 180.0):                             # one capture, replays with new cameras
            c = lookat(yaw, 10.0, device='cuda')
            got = replay(ws, c, planes, sphere=sphere)
            assert got is not None, 'capture failed'
            ref = G.synthesis(ws, c, sphere=sphere, deterministic=True, planes=planes)
            assert set(got) == set(ref)
            for k in ref:
                torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-5)
        # New planes (another latent) are copied into the same graph.
        ws2 = G.mapping(torch.randn(1, G.z_dim, device='cuda'), c)
        planes2 = G.backbone_planes(ws2)
        got = replay(ws2, c, planes2, sphere=sphere)
        ref = G.synthesis(ws2, c, sphere=sphere, deterministic=True, planes=planes2)
        torch.testing.assert_close(got['image'], ref['image'], rtol=1e-5, atol=1e-5)
    assert len(replay._graphs) == 1 and not replay._failed


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_replay_with_the_backbone_inside_equals_eager_forward():
    G, _, _ = _setup('cuda')
    replay = GraphedSynthesis(G)
    with torch.no_grad():
        for seed in (1, 2):
            z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(seed)).cuda()
            c = lookat(20.0 * seed, 0.0, device='cuda').expand(2, -1)
            ws = G.mapping(z, c)
            got = replay(ws, c, None)
            ref = G.synthesis(ws, c, deterministic=True)
            for k in ref:
                torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-5)
    assert len(replay._graphs) == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('representation', ['triplane', 'trigrid'])
def test_replay_of_the_cartesian_baselines_equals_eager_render(representation):
    """The baselines' feature sampling must be capturable (no host-to-device copy inside: indexing
    with a Python list made one, and the visualizer fell back to eager frames for them)."""
    G, ws, planes = _setup('cuda', representation)
    replay = GraphedSynthesis(G)
    with torch.no_grad():
        for yaw in (0.0, 180.0):
            c = lookat(yaw, 10.0, device='cuda')
            got = replay(ws, c, planes)
            assert got is not None, 'capture failed'
            ref = G.synthesis(ws, c, deterministic=True, planes=planes)
            torch.testing.assert_close(got['image'], ref['image'], rtol=1e-5, atol=1e-5)
    assert len(replay._graphs) == 1 and not replay._failed


def test_cartesian_sampling_picks_the_axes_of_each_plane():
    """tri-plane planes at (x, y), (x, z), (z, x); tri-grid (x, y | z), (x, z | y), (y, z | x): a
    feature that equals one coordinate on each plane is sampled back as that coordinate's value."""
    from spherehead.render.cartesian import sample_triplane, sample_trigrid
    torch.manual_seed(0)
    p = torch.rand(1, 7, 3) * 1.6 - 0.8                            # inside the box (box_warp 2)
    res = 64
    lin = (torch.arange(res) + 0.5) / res * 2 - 1                   # texel centres, align_corners=False
    gy, gx = torch.meshgrid(lin, lin, indexing='ij')
    planes = torch.stack([gx, gx, gx])[None, :, None]               # [1, 3, 1, H, W]: feature = first axis
    got = sample_triplane(planes, p, 2.0)[..., 0]
    want = (p[..., 0] + p[..., 0] + p[..., 2]) / 3                  # first axes: x, x, z
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)
    gz, gy3, gx3 = torch.meshgrid(lin, lin, lin, indexing='ij')
    grids = torch.stack([gz, gz, gz])[None, :, None]                # feature = the depth (last) axis
    got = sample_trigrid(grids, p, 2.0)[..., 0]
    want = (p[..., 2] + p[..., 1] + p[..., 0]) / 3                  # depth axes: z, y, x
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)
