"""Released EG3D / PanoHead / SphereHead pickles: built here in the released persistence format
(plain pickle opcodes: `torch_utils.persistence._reconstruct_persistent_obj(meta)` for persistent
modules, by-reference classes for the rest, torch's own tensor pickling), then loaded by the
restricted unpickler, mapped onto our Generator, converted and rendered.

The stand-in modules that make `pickle` write the released globals exist only while a pickle is
written; they are removed before loading, so the loader cannot import them.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spherehead.camera import lookat
from spherehead.checkpoint import load_generator
from spherehead.config import DiscriminatorConfig, GeneratorConfig, preset
from spherehead.errors import UserError
from spherehead.networks.discriminator import DualDiscriminator
from spherehead.networks.generator import Generator
from spherehead.released import load_released, load_released_generator, read_network_pickle, released_state

SR_CLASS = {'hybrid2x': 'SuperresolutionHybrid2X', 'hybrid4x': 'SuperresolutionHybrid4X',
            'hybrid8x': 'SuperresolutionHybrid8X', 'hybrid8xdc': 'SuperresolutionHybrid8XDC'}


# ---------------------------------------------------------------------------- released-format writer

def _fake_reconstruct(meta):  # never called: only its pickled name matters
    raise AssertionError('the loader must not call the pickled reconstruct function')


class _FakeClass:
    pass


@contextlib.contextmanager
def released_globals(by_reference=()):
    """Temporarily provide `torch_utils.persistence._reconstruct_persistent_obj`, `dnnlib.util.EasyDict`
    and by-reference classes ('module.Name') so that pickle can write their names."""
    added = []

    def module(name):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
        return sys.modules[name]

    for pkg in ('torch_utils', 'dnnlib'):
        module(pkg)
    pers = module('torch_utils.persistence')
    _fake_reconstruct.__module__, _fake_reconstruct.__qualname__ = 'torch_utils.persistence', '_reconstruct_persistent_obj'
    pers._reconstruct_persistent_obj = _fake_reconstruct
    util = module('dnnlib.util')
    util.EasyDict = EasyDictStandIn
    classes = {}
    for qual in by_reference:
        mod, name = qual.rsplit('.', 1)
        parts = mod.split('.')
        for i in range(1, len(parts) + 1):
            module('.'.join(parts[:i]))
        cls = type(name, (_FakeClass,), {'__module__': mod})
        setattr(sys.modules[mod], name, cls)
        classes[qual] = cls
    try:
        yield classes
    finally:
        for name in reversed(added):
            sys.modules.pop(name, None)


class EasyDictStandIn(dict):
    pass


EasyDictStandIn.__module__, EasyDictStandIn.__qualname__ = 'dnnlib.util', 'EasyDict'
EasyDictStandIn.__name__ = 'EasyDict'


def module_state(params=(), buffers=(), modules=(), **attrs):
    """A module __dict__ as torch pickles it."""
    return {'training': False, '_parameters': collections.OrderedDict(params),
            '_buffers': collections.OrderedDict(buffers), '_non_persistent_buffers_set': set(),
            '_backward_hooks': collections.OrderedDict(), '_forward_hooks': collections.OrderedDict(),
            '_forward_pre_hooks': collections.OrderedDict(), '_state_dict_hooks': collections.OrderedDict(),
            '_load_state_dict_pre_hooks': collections.OrderedDict(), '_modules': collections.OrderedDict(modules),
            **attrs}


class Persistent:
    """Pickles as `torch_utils.persistence._reconstruct_persistent_obj(meta)`, like a persistent class."""

    def __init__(self, class_name, state, init_args=(), init_kwargs=None, module_src='# source\n'):
        self.class_name, self.module_src = class_name, module_src
        self.state = dict(state, _init_args=tuple(init_args), _init_kwargs=dict(init_kwargs or {}))

    def __reduce__(self):
        meta = dict(type='class', version=6, module_src=self.module_src, class_name=self.class_name,
                    state=self.state)
        return _fake_reconstruct, (meta,), None


def ByReference(cls, state):
    """An instance of a class named by reference whose __dict__ is `state`: pickles as
    NEWOBJ(cls) + BUILD(state), like a plain nn.Module of the released code."""
    obj = object.__new__(cls)
    obj.__dict__.update(state)
    return obj


def tree(module: torch.nn.Module, classes: dict, sr_kind: str | None = None, persistent_names=True):
    """Our module -> released-format stand-ins (persistent records, Sequential/Softplus by reference)."""
    kids = {}
    for name, child in module._modules.items():
        if child is None:
            continue
        kids[name] = tree(child, classes)
    params = [(k, torch.nn.Parameter(v.detach().clone(), requires_grad=False))
              for k, v in module._parameters.items() if v is not None]
    buffers = [(k, v.detach().clone()) for k, v in module._buffers.items() if v is not None]
    state = module_state(params, buffers, kids)
    if isinstance(module, torch.nn.Sequential):
        return ByReference(torch.nn.Sequential, state)
    if isinstance(module, torch.nn.Softplus):
        return torch.nn.Softplus()
    name = SR_CLASS[sr_kind] if sr_kind else type(module).__name__
    return Persistent(name, state)


def released_generator_record(G: Generator, family: str, classes: dict, rendering_kwargs: dict, **extra_kwargs):
    """A released TriPlaneGenerator record holding G's weights."""
    cfg = G.config
    mods = {}
    for name, child in G._modules.items():
        if child is None:
            continue
        if name == 'heads':
            for k, head in child.items():
                mods[f'Conv{k}'] = tree(head, classes)
        elif name == 'superresolution':
            mods[name] = tree(child, classes, sr_kind=cfg.superresolution)
        elif name == 'decoder' and family == 'eg3d':
            # EG3D's OSGDecoder is not a persistent class: stored by reference.
            mods[name] = ByReference(classes['training.triplane.OSGDecoder'],
                                     module_state(modules={'net': tree(child.net, classes)}, hidden_dim=64))
        else:
            mods[name] = tree(child, classes)
    mods['renderer'] = ByReference(classes['training.volumetric_rendering.renderer.ImportanceRenderer'],
                                   module_state(plane_axes=torch.eye(3)))
    mods['ray_sampler'] = ByReference(classes['training.volumetric_rendering.ray_sampler.RaySampler'],
                                      module_state())
    kwargs = dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                  img_channels=3, sr_num_fp16_res=cfg.sr_num_fp16_res,
                  mapping_kwargs=EasyDictStandIn(num_layers=cfg.mapping_layers),
                  rendering_kwargs=EasyDictStandIn(rendering_kwargs),
                  sr_kwargs=EasyDictStandIn(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                            fused_modconv_default='inference_only'),
                  channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                  fused_modconv_default='inference_only', num_fp16_res=cfg.num_fp16_res, conv_clamp=cfg.conv_clamp,
                  **extra_kwargs)
    attrs = dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                 img_channels=3, neural_rendering_resolution=cfg.rendering.neural_rendering_resolution,
                 rendering_kwargs=EasyDictStandIn(rendering_kwargs), _last_planes=None)
    for name in ('torgb', 'bcg_synthesis', 'toparsing'):
        if name not in mods:
            attrs[name] = None       # released code assigns None: a plain attribute, not a module
    return Persistent('TriPlaneGenerator', module_state(modules=mods, **attrs), init_kwargs=kwargs,
                      module_src='import os\nopen("EXECUTED", "w")\n')


BY_REFERENCE = ('training.triplane.OSGDecoder', 'training.volumetric_rendering.renderer.ImportanceRenderer',
                'training.volumetric_rendering.ray_sampler.RaySampler')


def base_rendering_kwargs(cfg: GeneratorConfig) -> dict:
    r = cfg.rendering
    return dict(image_resolution=cfg.img_resolution, disparity_space_sampling=False, clamp_mode='softplus',
                superresolution_module=f'training.superresolution.{SR_CLASS[cfg.superresolution]}',
                c_gen_conditioning_zero=False, gpc_reg_prob=0.5, c_scale=r.c_scale, superresolution_noise_mode='none',
                density_reg=0.25, density_reg_p_dist=0.004, reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True,
                depth_resolution=r.depth_resolution, depth_resolution_importance=r.depth_resolution_importance,
                ray_start=r.ray_start, ray_end=r.ray_end, box_warp=r.box_warp, avg_camera_radius=2.7,
                avg_camera_pivot=[0, 0, 0.2])


def family_config(family: str) -> tuple[GeneratorConfig, dict, dict]:
    """A tiny config as the released family builds it, its rendering_kwargs and extra constructor kwargs."""
    t = preset('tiny')
    t = t.replace(backbone_channels=512, head_hidden_channels=256)   # unused by non-sphere models: defaults
    common = dict(sr_num_fp16_res=4, rendering=dict(depth_resolution=6, depth_resolution_importance=6,
                                                    neural_rendering_resolution=16))
    if family == 'eg3d':
        cfg = t.replace(representation='triplane', use_parsing=False, use_background=False, use_torgb_raw=False,
                        use_camera_offset=False, img_resolution=32, superresolution='hybrid2x', **common)
        cfg = cfg.replace(rendering=dict(box_crop=0.0, decoder_activation='sigmoid'))
        rk = base_rendering_kwargs(cfg)
        return cfg, rk, {}
    if family == 'panohead':
        cfg = t.replace(representation='trigrid', trigrid_depth=2, use_parsing=False, use_background=True,
                        use_torgb_raw=True, use_camera_offset=True, img_resolution=32, superresolution='hybrid2x',
                        **common)
        cfg = cfg.replace(rendering=dict(box_crop=0.1, decoder_activation='linear'))
        rk = dict(base_rendering_kwargs(cfg), triplane_size=cfg.triplane_size, triplane_depth=2,
                  decoder_activation='none', use_torgb_raw=True, use_background=True)
        return cfg, rk, {}
    cfg = preset('tiny').replace(img_resolution=32, superresolution='hybrid2x', **common)
    cfg = cfg.replace(rendering=dict(box_crop=0.1, decoder_activation='lrelu'))
    rk = dict(base_rendering_kwargs(cfg), triplane_size=cfg.triplane_size, triplane_depth=cfg.planes_per_sphere,
              decoder_activation='lrelu', use_torgb_raw=True, use_background=True)
    return cfg, rk, {'parsing_flag': True}


def reference_generator(cfg: GeneratorConfig, seed: int = 1) -> Generator:
    torch.manual_seed(seed)
    G = Generator(cfg).eval().requires_grad_(False)
    with torch.no_grad():   # non-trivial values everywhere (noise strengths and w_avg start at zero)
        for name, t in G.state_dict().items():
            if name.endswith(('noise_strength', 'w_avg')):
                t.copy_(torch.randn_like(t) * 0.1)
    return G


# What a training snapshot holds (training/training_loop.py of EG3D and PanoHead):
# dict(training_set_kwargs=dict(...), G=..., D=..., G_ema=..., augment_pipe=...), G carrying the
# `dataset_label_std` buffer the loop registers before copying G into G_ema.
D_CLASS = {'eg3d': 'DualDiscriminator', 'panohead': 'MaskDualDiscriminatorV2', 'spherehead': 'HoloDiscriminator'}


def family_discriminator(family: str, seed: int = 3) -> tuple[DualDiscriminator, dict]:
    """A tiny D of the family's released class and the constructor kwargs its training loop passes."""
    mask, parsing = {'eg3d': (0, 0), 'panohead': (1, 0), 'spherehead': (1, 20)}[family]
    cfg = DiscriminatorConfig(c_dim=25, img_resolution=32, mask_channels=mask, parsing_channels=parsing,
                              channel_base=256, channel_max=32, mapping_layers=8)   # released mapping_kwargs={}: 8
    torch.manual_seed(seed)
    D = DualDiscriminator.from_config(cfg).eval().requires_grad_(False)
    with torch.no_grad():   # biases start at zero: make them matter
        for name, t in D.state_dict().items():
            if name.endswith('.bias'):
                t.copy_(torch.randn_like(t) * 0.1)
    # train.py: D_kwargs(block_kwargs, mapping_kwargs, epilogue_kwargs, channel_base, channel_max,
    # disc_c_noise, num_fp16_res, conv_clamp [, seg_*]) + common_kwargs(c_dim, img_resolution, img_channels).
    kwargs = dict(block_kwargs=EasyDictStandIn(freeze_layers=0), mapping_kwargs=EasyDictStandIn(),
                  epilogue_kwargs=EasyDictStandIn(mbstd_group_size=4), channel_base=256, channel_max=32,
                  disc_c_noise=0.0, num_fp16_res=4, conv_clamp=256, c_dim=25, img_resolution=32, img_channels=3)
    if mask:
        kwargs.update(seg_resolution=128, seg_channels=1)
    if parsing:
        kwargs.update(parsing_resolution=128, parsing_channels=20)
    return D, kwargs


def discriminator_record(D: DualDiscriminator, class_name: str, init_kwargs: dict) -> Persistent:
    rec = tree(D, {})
    rec.class_name = class_name
    rec.state['_init_kwargs'] = dict(init_kwargs)
    return rec


def augment_pipe_record(p: float = 0.3) -> Persistent:
    """training/augment.py AugmentPipe as an ADA run pickles it: buffers p, Hz_geom, Hz_fbank, float attributes."""
    g = torch.Generator().manual_seed(0)
    state = module_state(buffers=[('p', torch.tensor(p)), ('Hz_geom', torch.rand([12, 12], generator=g)),
                                  ('Hz_fbank', torch.rand([4, 15], generator=g))],
                         xflip=1.0, rotate90=1.0, xint=1.0, xint_max=0.125, imgfilter_bands=[1, 1, 1, 1])
    return Persistent('AugmentPipe', state, init_kwargs=dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1))


def perturbed(G: Generator, seed: int = 7) -> Generator:
    """The training G of a snapshot: G_ema's weights moved a little (G_ema is their running average)."""
    G2 = copy.deepcopy(G)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in G2.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.01)
    return G2


def write_released(path, G: Generator, family: str, rk: dict, extra: dict, extra_top=None, G_train=None, D=None,
                   d_class=None, d_kwargs=None, drop=(), label_std=True, augment_p=0.3, g_buffers=()):
    """A snapshot pickle with G_ema = G, G = G_train (default: G's weights), D (default: the family's)."""
    if D is None:
        D, kw = family_discriminator(family)
        d_kwargs = kw if d_kwargs is None else d_kwargs
    with released_globals(BY_REFERENCE) as classes:
        data = {'training_set_kwargs': dict(class_name='training.dataset.ImageFolderDataset', path='data.zip',
                                            use_labels=True, max_size=1000, xflip=True, resolution=512,
                                            random_seed=0)}
        for name, net in (('G', G_train if G_train is not None else G), ('D', D), ('G_ema', G)):
            if name == 'D':
                rec = discriminator_record(D, d_class or D_CLASS[family], d_kwargs)
            else:
                rec = released_generator_record(net, family, classes, rk, **extra)
                if label_std:
                    rec.state['_buffers']['dataset_label_std'] = torch.linspace(0.1, 0.5, 25)
                rec.state['_buffers'].update(dict(g_buffers))
            data[name] = rec
        data['augment_pipe'] = augment_pipe_record(augment_p) if augment_p is not None else None
        data.update(extra_top or {})
        for k in drop:
            data.pop(k)
        with open(path, 'wb') as f:
            pickle.dump(data, f)   # default protocol, as the released training loop
    assert 'torch_utils' not in sys.modules and 'training' not in sys.modules


def render(G: Generator, seed: int = 0, yaw: float = 30.0):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    c = lookat(yaw_deg=yaw, pitch_deg=10)
    return G(z, c, truncation_psi=0.7, noise_mode='const', deterministic=True)


FAMILIES = ('eg3d', 'panohead', 'spherehead')


@pytest.fixture(scope='module')
def released_files(tmp_path_factory):
    out = {}
    d = tmp_path_factory.mktemp('released')
    for fam in FAMILIES:
        cfg, rk, extra = family_config(fam)
        G = reference_generator(cfg)
        G_train = perturbed(G)
        D, _ = family_discriminator(fam)
        path = d / f'{fam}.pkl'
        write_released(path, G, fam, rk, extra, G_train=G_train)
        out[fam] = (path, G, cfg, G_train, D)
    return out


# ---------------------------------------------------------------------------- loading and mapping

@pytest.mark.parametrize('family', FAMILIES)
def test_values_map_and_config(released_files, family, tmp_path):
    path, G_ref, cfg, *_ = released_files[family]
    cwd = os.getcwd()
    os.chdir(tmp_path)      # the pickled module source would create ./EXECUTED if it ever ran
    try:
        G = load_released_generator(path)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / 'EXECUTED').exists()
    assert 'torch_utils' not in sys.modules and 'training' not in sys.modules and 'dnnlib' not in sys.modules
    assert G.config == cfg
    assert G.released_family == family
    ours, ref = G.state_dict(), G_ref.state_dict()
    assert set(ours) == set(ref)
    for k in ref:
        assert torch.equal(ours[k], ref[k]), k
    if family == 'spherehead':   # ConvA / ConvB land in heads.A / heads.B (values, not only names)
        raw = released_state(path)
        assert torch.equal(ours['heads.A.0.weight'], raw['ConvA.0.weight'])
        assert torch.equal(ours['heads.B.1.weight'], raw['ConvB.1.weight'])


@pytest.mark.parametrize('family', FAMILIES)
def test_images_equal_direct_weights(released_files, family):
    path, G_ref, *_ = released_files[family]
    G = load_generator(str(path))
    a, b = render(G), render(G_ref)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert a['image'].shape[-1] == G.config.img_resolution
    assert torch.isfinite(a['image']).all()


@pytest.mark.parametrize('family', FAMILIES)
def test_convert_then_load_renders_identically(released_files, family, tmp_path):
    from spherehead.cli import main
    path, _, cfg, *_ = released_files[family]
    out = tmp_path / f'{family}.safetensors'
    res = CliRunner().invoke(main, ['convert', str(path), str(out)])
    assert res.exit_code == 0, res.output
    assert len(res.output.strip().splitlines()) == 1 and family in res.output
    G1, G2 = load_generator(str(path)), load_generator(str(out))
    assert G2.config == cfg
    a, b = render(G1, seed=3), render(G2, seed=3)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_family_details(released_files):
    """What differs per released family, checked against what their code does."""
    G_e = load_generator(str(released_files['eg3d'][0]))
    G_p = load_generator(str(released_files['panohead'][0]))
    G_s = load_generator(str(released_files['spherehead'][0]))
    # EG3D renders without a box crop; PanoHead / SphereHead crop at 0.1.
    assert G_e.renderer.box_crop == 0 and G_p.renderer.box_crop == 0.1 and G_s.renderer.box_crop == 0.1
    # sr_num_fp16_res > 0: the super-resolution convolutions are clamped at 256.
    for G in (G_e, G_p, G_s):
        assert G.superresolution.block1.conv1.conv_clamp == 256
        assert G.backbone.synthesis.b4.conv1.conv_clamp is None
    # EG3D: raw image = first three feature channels, scaled to [-1, 1] (no toRGB, no background, no offset).
    assert G_e.torgb is None and G_e.bcg_synthesis is None and G_e.t_mapping is None
    # PanoHead 'none' activation = linear features (no *2-1); SphereHead lrelu; both with toRGB.
    assert G_p.decoder.activation == 'linear' and G_s.decoder.activation == 'lrelu'
    # PanoHead / SphereHead: the offset net moves the camera translation only (entries 3, 7, 11).
    z = torch.from_numpy(np.random.RandomState(0).randn(1, G_s.z_dim)).float()
    c = lookat(yaw_deg=0, pitch_deg=0)
    moved = G_s.camera_offset(z, c) - c
    assert moved[0, [3, 7, 11]].abs().sum() > 0
    assert torch.all(moved[0, [i for i in range(25) if i not in (3, 7, 11)]] == 0)


def test_c_scale_absent_means_zero(tmp_path):
    """Released generators read rendering_kwargs.get('c_scale', 0): absent -> camera not fed to mapping."""
    cfg, rk, extra = family_config('eg3d')
    rk = {k: v for k, v in rk.items() if k != 'c_scale'}
    G_ref = reference_generator(cfg)
    write_released(tmp_path / 'n.pkl', G_ref, 'eg3d', rk, extra)
    G = load_released_generator(tmp_path / 'n.pkl')
    assert G.config.rendering.c_scale == 0
    z = torch.randn(1, G.z_dim)
    assert torch.equal(G.mapping(z, lookat(yaw_deg=0)), G.mapping(z, lookat(yaw_deg=90)))


def test_which_and_discriminator_state(released_files):
    path = released_files['spherehead'][0]
    G = load_released_generator(path, which='G')
    assert G.provenance.endswith('(spherehead G)')
    d = released_state(path, which='D')
    assert torch.equal(d['b4.fc.weight'], released_files['spherehead'][4].state_dict()['b4.fc.weight'])
    with pytest.raises(UserError, match='discriminator'):
        load_released_generator(path, which='D')


# ---------------------------------------------------------------------------- snapshots: G, G_ema, D

def d_inputs(D: DualDiscriminator, n: int = 4):
    """A D input dict (image 32 px, raw / mask / parsing at 16 px) and camera labels, fixed seed."""
    g = torch.Generator().manual_seed(5)
    img = {'image': torch.rand([n, 3, 32, 32], generator=g) * 2 - 1,
           'image_raw': torch.rand([n, 3, 16, 16], generator=g) * 2 - 1,
           'image_mask': torch.rand([n, 1, 16, 16], generator=g),
           'image_parsing': torch.softmax(torch.randn([n, 20, 16, 16], generator=g), dim=1)}
    c = torch.cat([lookat(yaw_deg=40.0 * i, pitch_deg=5) for i in range(n)])
    return img, c


@pytest.mark.parametrize('family', FAMILIES)
def test_load_released_snapshot(released_files, family, tmp_path):
    path, G_ema_ref, cfg, G_ref, D_ref = released_files[family]
    cwd = os.getcwd()
    os.chdir(tmp_path)      # the pickled module source would create ./EXECUTED if it ever ran
    try:
        nets = load_released(path)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / 'EXECUTED').exists()
    assert nets.family == family and nets.g_config == cfg and nets.G.config == cfg
    # G and G_ema keep their own weights (they differ in a snapshot).
    for ours, ref in ((nets.G, G_ref), (nets.G_ema, G_ema_ref)):
        a, b = ours.state_dict(), ref.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)
    assert not torch.equal(nets.G.state_dict()['decoder.net.0.weight'], nets.G_ema.state_dict()['decoder.net.0.weight'])
    # Train-ready G and D, inference-ready G_ema.
    assert nets.G.training and all(p.requires_grad for p in nets.G.parameters())
    assert not nets.G_ema.training and not any(p.requires_grad for p in nets.G_ema.parameters())
    assert nets.D.training and all(p.requires_grad for p in nets.D.parameters())
    # The D: the family's extra inputs, and the same logits as the same weights loaded directly.
    assert (nets.d_config.mask_channels, nets.d_config.parsing_channels) == \
        {'eg3d': (0, 0), 'panohead': (1, 0), 'spherehead': (1, 20)}[family]
    assert nets.d_config == D_ref.config
    img, c = d_inputs(D_ref)
    with torch.no_grad():
        ours, ref = nets.D(img, c), D_ref(img, c)
    assert ours.shape == (4, 1) and torch.equal(ours, ref)
    # Only the training-only tensors were skipped, and they are named.
    assert nets.ignored == ['G_ema.dataset_label_std', 'G.dataset_label_std',
                            'augment_pipe.p', 'augment_pipe.Hz_geom', 'augment_pipe.Hz_fbank']
    assert nets.augment_p == pytest.approx(0.3) and nets.notes == []
    line = nets.summary()
    assert '\n' not in line and 'G_ema.dataset_label_std' in line and family in line


@pytest.fixture(scope='module')
def sphere_G():
    cfg, rk, extra = family_config('spherehead')
    return reference_generator(cfg), cfg, rk, extra


def test_d_logits_follow_the_weights(sphere_G, tmp_path):
    """A values-level check that would catch a swapped or skipped tensor: changing one released D
    weight changes our logits, by the same amount as in the directly loaded D."""
    G, cfg, rk, extra = sphere_G
    D, kw = family_discriminator('spherehead')
    D2 = copy.deepcopy(D)
    with torch.no_grad():
        D2.b4.out.weight.mul_(-1)
        D2.mapping.embed.bias.add_(0.5)
    write_released(tmp_path / 's.pkl', G, 'spherehead', rk, extra, D=D2, d_kwargs=kw)
    ours = load_released(tmp_path / 's.pkl').D
    img, c = d_inputs(D)
    with torch.no_grad():
        assert torch.equal(ours(img, c), D2(img, c))
        assert not torch.allclose(ours(img, c), D(img, c))


def test_progress_entries_and_missing_networks(tmp_path):
    """Progress-like entries (counters as tensors / numbers) load as data; no D -> None; no G -> a
    copy of G_ema (said in notes); no augment pipe -> augment_p None."""
    cfg, rk, extra = family_config('panohead')
    G = reference_generator(cfg)
    progress = {'cur_nimg': torch.LongTensor([25000000]), 'cur_tick': torch.LongTensor([6250]), 'best_fid': 5.6,
                'kimg': np.float64(25000.0)}
    p = tmp_path / 'p.pkl'
    write_released(p, G, 'panohead', rk, extra, extra_top={'progress': progress}, drop=('D', 'G'), augment_p=None)
    assert read_network_pickle(p)['progress']['cur_nimg'].item() == 25000000
    nets = load_released(p)
    assert nets.D is None and nets.d_config is None and nets.augment_p is None
    assert nets.notes == ['G copied from G_ema (the pickle has no G)']
    assert nets.ignored == ['G_ema.dataset_label_std']
    assert nets.G is not nets.G_ema and nets.G.training and not nets.G_ema.training
    a, b = nets.G.state_dict(), G.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_training_only_tensors_in_generator_loading_and_convert(released_files, tmp_path):
    from spherehead.cli import main
    path = released_files['eg3d'][0]
    assert load_released_generator(path).released_ignored == ['dataset_label_std']
    res = CliRunner().invoke(main, ['convert', str(path), str(tmp_path / 'e.safetensors'), '--verbose'])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 2 and 'dataset_label_std' in lines[1]
    res = CliRunner().invoke(main, ['convert', str(path), str(tmp_path / 'f.safetensors')])
    assert len(res.output.strip().splitlines()) == 1


def test_unknown_tensor_still_refused(sphere_G, tmp_path):
    G, cfg, rk, extra = sphere_G
    p = tmp_path / 'odd.pkl'
    write_released(p, G, 'spherehead', rk, extra, g_buffers=[('mystery_stat', torch.zeros(3))])
    msg = _expect_refusal(p, 'unmapped', tmp_path)
    assert 'mystery_stat' in msg and 'dataset_label_std' not in msg
    with pytest.raises(UserError, match='mystery_stat'):
        load_released(p)


@pytest.mark.parametrize('d_class, change, match', [
    ('MaskDualDiscriminator', {}, 'separate sb'),                         # PanoHead V1: mask in its own blocks
    ('SingleDiscriminator', {}, 'cannot map D'),
    ('HoloDiscriminator', {'mapping_kwargs': {'lr_multiplier': 1.0}}, 'lr_multiplier'),
    ('HoloDiscriminator', {'block_kwargs': {'activation': 'relu'}}, 'activation'),
    ('HoloDiscriminator', {'sr_upsample_factor': 2}, 'sr_upsample_factor'),
])
def test_unmappable_discriminator_refused(sphere_G, tmp_path, d_class, change, match):
    G, cfg, rk, extra = sphere_G
    D, kw = family_discriminator('spherehead')
    p = tmp_path / 'd.pkl'
    write_released(p, G, 'spherehead', rk, extra, D=D, d_kwargs={**kw, **change}, d_class=d_class)
    with pytest.raises(UserError, match=match) as e:
        load_released(p)
    assert '\n' not in str(e.value) and str(p) in str(e.value)
    assert load_generator(str(p)).config == cfg      # the generator alone still loads


def test_discriminator_with_other_weights_refused(sphere_G, tmp_path):
    """A D whose tensors do not fit the config its arguments give (here: no parsing input) is refused."""
    G, cfg, rk, extra = sphere_G
    D, kw = family_discriminator('spherehead')
    p = tmp_path / 'd.pkl'
    kw = {k: v for k, v in kw.items() if not k.startswith('parsing_')}
    write_released(p, G, 'spherehead', rk, extra, D=D, d_kwargs=kw, d_class='MaskDualDiscriminatorV2')
    with pytest.raises(UserError, match='another shape') as e:
        load_released(p)
    assert 'b32.fromrgb.weight' in str(e.value) and '\n' not in str(e.value)


# ---------------------------------------------------------------------------- refusals

def _expect_refusal(path, match, tmp_path):
    with pytest.raises(UserError, match=match) as e:
        load_generator(str(path))
    msg = str(e.value)
    assert '\n' not in msg and str(path) in msg
    from spherehead.cli import main
    res = CliRunner().invoke(main, ['convert', str(path), str(tmp_path / 'out.safetensors')])
    assert res.exit_code != 0
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / 'out.safetensors').exists()
    return msg


def test_truncated_file_refused(released_files, tmp_path):
    data = released_files['eg3d'][0].read_bytes()
    bad = tmp_path / 'cut.pkl'
    bad.write_bytes(data[: len(data) // 2])
    _expect_refusal(bad, 'truncated', tmp_path)
    empty = tmp_path / 'empty.pkl'
    empty.write_bytes(b'')
    _expect_refusal(empty, 'truncated', tmp_path)


@pytest.mark.parametrize('obj', [{'a': 1}, [1, 2, 3], {'G_ema': torch.zeros(2)}])
def test_not_a_network_refused(obj, tmp_path):
    p = tmp_path / 'plain.pkl'
    p.write_bytes(pickle.dumps(obj))
    _expect_refusal(p, 'not a network pickle', tmp_path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_malicious_reduce_is_not_executed(tmp_path):
    marker = tmp_path / 'PWNED'
    p = tmp_path / 'evil.pkl'
    p.write_bytes(pickle.dumps({'G_ema': _Evil(marker)}))
    # Sanity: a plain pickle.load would run it (not done here); the payload names os.system / posix.system.
    msg = _expect_refusal(p, 'system', tmp_path)
    assert 'refused' in msg and 'nothing was executed' in msg
    assert not marker.exists()


def test_malicious_inside_state_is_not_executed(released_files, tmp_path):
    marker = tmp_path / 'PWNED2'
    cfg, rk, extra = family_config('eg3d')
    G = reference_generator(cfg)
    p = tmp_path / 'evil2.pkl'
    write_released(p, G, 'eg3d', rk, extra, extra_top={'payload': _Evil(marker)})
    _expect_refusal(p, 'system', tmp_path)
    assert not marker.exists()


def test_unsupported_architecture_named(tmp_path):
    p = tmp_path / 'sg3.pkl'
    with released_globals():
        data = {'G_ema': Persistent('StyleGAN3Generator', module_state())}
        p.write_bytes(pickle.dumps(data))
    msg = _expect_refusal(p, 'unsupported architecture', tmp_path)
    assert 'StyleGAN3Generator' in msg


def test_builtins_eval_refused(tmp_path):
    class Ev:
        def __reduce__(self):
            return eval, ('1+1',)
    p = tmp_path / 'eval.pkl'
    p.write_bytes(pickle.dumps({'G_ema': Ev()}))
    _expect_refusal(p, 'builtins.eval', tmp_path)


def test_read_network_pickle_keeps_source_as_text(released_files):
    data = read_network_pickle(released_files['spherehead'][0])
    rec = data['G_ema']
    assert rec.class_name == 'TriPlaneGenerator' and 'EXECUTED' in rec.module_src
    assert data['training_set_kwargs']['resolution'] == 512


# ---------------------------------------------------------------------------- fine-tuning in train.py

def test_training_resumes_from_released_snapshot(released_files, tmp_path):
    """`train.py --resume released.pkl`: G, G_ema and D start from the snapshot's networks, the
    fine-tune turns EMA ramp-up and D-input blur off, and a training step runs on them."""
    import dataclasses
    from spherehead.data.synth import SynthOptions, synth_dataset
    from spherehead.train.config import default_config
    from spherehead.train.distributed import DistInfo
    from spherehead.train.loop import Trainer
    from spherehead.train.setup import networks_for

    path, G_ref, cfg, G_train, D_ref = released_files['spherehead']
    data = str(tmp_path / 'heads.zip')
    synth_dataset(SynthOptions(out=data, count=8, resolution=cfg.img_resolution, seed=3, front_bias=0.5,
                               supersample=1, workers=1), progress=False)
    tc = default_config('tiny')
    tc = dataclasses.replace(tc, data=dataclasses.replace(tc.data, path=data), batch=2, kimg=0.004, workers=0,
                             grid_seeds=1, resume=str(path), neural_rendering_resolution_initial=16)
    tc2, nets, state = networks_for(tc)
    assert state is None and tc2.generator == cfg and tc2.ema_rampup is None and tc2.loss.blur_init_sigma == 0
    d = tc2.discriminator   # the released D's config (SphereHead: mask and parsing channels)
    assert (d.img_resolution, d.mask_channels, d.parsing_channels) == (cfg.img_resolution, 1, 20)
    assert 'fine-tuned from released' in nets.origin
    for mine, ref in ((nets.G, G_train), (nets.G_ema, G_ref), (nets.D, D_ref)):
        ours = mine.state_dict()
        for k, v in ref.state_dict().items():
            assert torch.equal(ours[k], v), k
    (tmp_path / 'run').mkdir()
    trainer = Trainer(tc2, DistInfo(), tmp_path / 'run', nets)
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    trainer.step()
    assert trainer.progress.nimg == 2
    assert any(not torch.equal(before[k], v) for k, v in trainer.G.state_dict().items())
