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
import copyreg
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
from spherehead.config import GeneratorConfig, RenderingConfig, preset
from spherehead.errors import UserError
from spherehead.networks.generator import Generator
from spherehead.released import load_released_generator, read_network_pickle, released_state

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


def write_released(path, G: Generator, family: str, rk: dict, extra: dict, which='G_ema', extra_top=None):
    with released_globals(BY_REFERENCE + ('training.augment.AugmentPipe',)) as classes:
        rec = released_generator_record(G, family, classes, rk, **extra)
        D = Persistent('DualDiscriminator', module_state(
            params=[('b4.fc.weight', torch.nn.Parameter(torch.arange(6.).reshape(2, 3)))]))
        data = {'G': rec, 'D': D, 'G_ema': rec,
                'augment_pipe': ByReference(classes['training.augment.AugmentPipe'], module_state()),
                'training_set_kwargs': EasyDictStandIn(path='data.zip', resolution=512, use_labels=True)}
        data.update(extra_top or {})
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
        path = d / f'{fam}.pkl'
        write_released(path, G, fam, rk, extra)
        out[fam] = (path, G, cfg)
    return out


# ---------------------------------------------------------------------------- loading and mapping

@pytest.mark.parametrize('family', FAMILIES)
def test_values_map_and_config(released_files, family, tmp_path):
    path, G_ref, cfg = released_files[family]
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
    path, G_ref, _ = released_files[family]
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
    path, _, cfg = released_files[family]
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
    assert torch.equal(d['b4.fc.weight'], torch.arange(6.).reshape(2, 3))
    with pytest.raises(UserError, match='discriminator'):
        load_released_generator(path, which='D')


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
