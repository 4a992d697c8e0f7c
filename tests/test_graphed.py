"""CUDA-graph replay of G.synthesis (the visualizer's orbit): equal to the eager render, used only
where it may be (CUDA, no autograd, deterministic noise, not switched off)."""
from __future__ import annotations

import pytest
import torch

from spherehead.camera import lookat
from spherehead.checkpoint import random_generator
from spherehead.render import graphed
from spherehead.render.graphed import GraphedSynthesis


def _setup(device):
    torch.manual_seed(0)
    G = random_generator('tiny').to(device).eval().requires_grad_(False)
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
