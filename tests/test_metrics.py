"""Metrics: Fréchet distance and KID against independent computations, the feature network
loader, the whole pipeline on random:tiny with a stand-in feature network, the face
classifier on synthetic heads, the mirror score, and the command line's refusals."""
import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import spherehead as sh
from spherehead.errors import UserError
from spherehead.metrics import METRICS, compute_metrics, validate_metrics
from spherehead.metrics.distance import frechet_distance, kernel_inception_distance
from spherehead.metrics.inception import ENV_VAR, load_feature_network


# ---------------------------------------------------------------------------- stand-in feature network

class StandIn(torch.nn.Module):
    """A fixed random conv net with the Inception file's call convention: uint8 [N, 3, H, W] -> [N, 16]."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w1 = torch.nn.Parameter(torch.randn(8, 3, 3, 3, generator=g) / 5)
        self.w2 = torch.nn.Parameter(torch.randn(16, 8, 3, 3, generator=g) / 8)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = torch.nn.functional.interpolate(img.float() / 127.5 - 1, size=(32, 32), mode='bilinear', align_corners=False)
        x = torch.relu(torch.nn.functional.conv2d(x, self.w1, stride=2))
        x = torch.nn.functional.conv2d(x, self.w2, stride=2)
        return x.mean((2, 3)) if return_features else x.amax((2, 3))


@pytest.fixture(scope='module')
def standin(tmp_path_factory):
    path = tmp_path_factory.mktemp('inception') / 'standin.pt'
    torch.jit.save(torch.jit.script(StandIn()), str(path))
    return str(path)


@pytest.fixture(scope='module')
def heads(tmp_path_factory):
    """A small synthetic dataset: 24 heads at 32 px over all yaws."""
    from spherehead.data.synth import SynthOptions, synth_dataset
    out = tmp_path_factory.mktemp('data') / 'heads.zip'
    synth_dataset(SynthOptions(out=str(out), count=24, resolution=32, seed=3, supersample=1, workers=1), progress=False)
    return str(out)


# ---------------------------------------------------------------------------- distance math

def test_frechet_distance_matches_closed_form_and_scipy():
    rng = np.random.RandomState(0)
    mu1, mu2 = rng.randn(5), rng.randn(5)
    d1, d2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    closed = np.square(mu1 - mu2).sum() + np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))   # diagonal Gaussians
    assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(closed, rel=1e-10)
    import scipy.linalg
    a, b = rng.randn(6, 6), rng.randn(6, 6)
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real         # the family's computation
    ref = np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(np.ones(6), s1, np.ones(6), s1) == pytest.approx(0, abs=1e-8)


def test_frechet_distance_of_samples_tends_to_the_mean_shift():
    rng = np.random.RandomState(1)
    x, y = rng.randn(20000, 4), rng.randn(20000, 4) + np.array([1.0, 0, 0, 2.0])
    fd = frechet_distance(x.mean(0), np.cov(x, rowvar=False, bias=True), y.mean(0), np.cov(y, rowvar=False, bias=True))
    assert fd == pytest.approx(5.0, abs=0.1)


def test_kid_equals_the_unbiased_mmd_when_subsets_are_whole_sets():
    rng = np.random.RandomState(2)
    x, y = rng.randn(30, 8), rng.randn(30, 8) * 1.3 + 0.4
    n, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b.T / n + 1) ** 3
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    assert kernel_inception_distance(x, y, num_subsets=3, max_subset_size=1000) == pytest.approx(mmd, rel=1e-10)
    same = kernel_inception_distance(rng.randn(400, 8), rng.randn(400, 8), num_subsets=10, max_subset_size=200)
    assert abs(same) < 0.02 < kernel_inception_distance(rng.randn(400, 8), rng.randn(400, 8) + 1, num_subsets=10)


# ---------------------------------------------------------------------------- feature network files

def test_feature_network_loads_torchscript_and_refuses_missing_files(standin, tmp_path, monkeypatch):
    net = load_feature_network(standin)
    feats = net(torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8))
    assert feats.shape == (3, 16) and feats.dtype == torch.float32
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(UserError, match='no Inception network named') as e:
        load_feature_network(None)
    assert '\n' not in str(e.value)
    with pytest.raises(UserError, match='not found'):
        load_feature_network(str(tmp_path / 'inception-2015-12-05.pt'))
    monkeypatch.setenv(ENV_VAR, standin)
    assert load_feature_network(None).path.name == 'standin.pt'


_EXECUTED = []


def _record_execution(blob):
    _EXECUTED.append(len(blob))
    return blob


class _WrapsArchive:
    """Pickles as a call of _record_execution(archive bytes): loading it with pickle would run that call."""

    def __init__(self, blob):
        self.blob = blob

    def __reduce__(self):
        return _record_execution, (self.blob,)


def test_pickle_embedding_an_archive_loads_without_running_the_pickle(standin, tmp_path):
    blob = open(standin, 'rb').read()
    pkl = tmp_path / 'inception-2015-12-05.pkl'
    pkl.write_bytes(pickle.dumps({'detector': _WrapsArchive(blob)}))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(load_feature_network(str(pkl))(images), load_feature_network(standin)(images))
    assert _EXECUTED == []
    plain = tmp_path / 'plain.pkl'
    plain.write_bytes(pickle.dumps({'weights': [1, 2, 3]}))
    with pytest.raises(UserError, match='neither a TorchScript archive'):
        load_feature_network(str(plain))


# ---------------------------------------------------------------------------- the pipeline

def test_every_metric_runs_on_random_tiny_and_is_reproducible(standin, heads):
    G = sh.load_generator('random:tiny')
    results = compute_metrics(G, heads, list(METRICS), num=4, inception=standin, seed=5, progress=False)
    assert list(results) == list(METRICS)
    assert all(np.isfinite(v) for v in results.values()), results
    assert all(results[m] > 0 for m in ('fid50k_full', 'fid_front', 'fid_side', 'fid_back', 'fid3d'))
    assert 0 <= results['ff_rate'] <= 1 and -1 <= results['mirror_score'] <= 1
    # the same number alone as beside the others, and the frontal conditioning changes fid3d
    from spherehead.data import DatasetOptions
    alone = compute_metrics(G, DatasetOptions(path=heads, xflip=True), ['fid50k_full'], num=4,
                            inception=standin, seed=5, progress=False)
    assert alone['fid50k_full'] == pytest.approx(results['fid50k_full'], rel=1e-9)
    assert results['fid3d'] != pytest.approx(results['fid50k_full'], rel=1e-6)


def test_dataset_against_itself_has_zero_fid(standin, heads, tmp_path):
    from spherehead.metrics.compute import _metrics_dataset
    from spherehead.metrics.stats import dataset_stats
    net = load_feature_network(standin)
    ds = _metrics_dataset(heads)
    groups = np.zeros(len(ds), np.int64)
    first = dataset_stats(ds, net, groups, 1, capture_all=True, progress=False, cache_dir=tmp_path)[0]
    cached = dataset_stats(ds, net, groups, 1, capture_all=True, progress=False, cache_dir=tmp_path)[0]
    assert len(list(tmp_path.glob('dataset-*.npz'))) == 1
    assert np.array_equal(first.all(), cached.all()) and first.num == cached.num == 24
    mu, sigma = first.mean_cov()
    assert np.allclose(mu, first.all().astype(np.float64).mean(0))
    assert np.allclose(sigma, np.cov(first.all().astype(np.float64), rowvar=False, bias=True), atol=1e-9)
    assert frechet_distance(mu, sigma, *cached.mean_cov()) == pytest.approx(0, abs=1e-6)


def test_validate_metrics_refuses_bad_names_missing_inception_and_empty_bins(standin, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert validate_metrics('ff_rate,mirror_score') == ['ff_rate', 'mirror_score']   # no Inception needed
    with pytest.raises(UserError, match="unknown metric 'fid50k'"):
        validate_metrics(['fid50k'])
    with pytest.raises(UserError, match='no Inception network named'):
        validate_metrics('fid50k_full')
    from spherehead.data.synth import SynthOptions, synth_dataset
    front = tmp_path / 'front.zip'
    synth_dataset(SynthOptions(out=str(front), count=3, resolution=16, seed=0, front_bias=1.0, supersample=1, workers=1),
                  progress=False)
    with pytest.raises(UserError, match='fid_back needs dataset images in the back'):
        validate_metrics('fid_front,fid_back', standin, dataset=str(front))


# ---------------------------------------------------------------------------- face classifier, ff_rate, mirror score

def test_face_classifier_sees_faces_on_front_views_and_none_on_back_views():
    from spherehead.data.synth import synth_sample
    from spherehead.metrics.face import face_probability, load_classifier
    model = load_classifier()
    def views(yaw):
        return torch.from_numpy(np.stack([synth_sample(77, i, 64, 0.0, 2, yaw_pitch=(yaw, 0.0))[0].transpose(2, 0, 1)
                                          for i in range(12)]))
    front = face_probability(model, torch.cat([views(-20), views(0), views(20)]))
    back = face_probability(model, torch.cat([views(150), views(180), views(210)]))
    assert (front > 0.5).float().mean() >= 0.9
    assert (back > 0.5).float().mean() <= 0.1


def test_ff_rate_flags_the_seeds_whose_back_views_look_like_faces():
    from spherehead.metrics.ff_rate import ff_rate

    class FrontForBack(torch.nn.Module):
        """A stand-in generator that shows a synthetic face from every camera for seeds whose z[0] > 0,
        and a synthetic back of the head otherwise."""
        z_dim = 4

        def mapping(self, z, c, truncation_psi=1.0):
            return z[:, None, :]

        def camera_offset(self, z, c):
            return c

        def synthesis(self, ws, c, **kwargs):
            from spherehead.data.synth import synth_sample
            face = ws[:, 0, 0] > 0
            imgs = [synth_sample(1, i, 64, 0.0, 2, yaw_pitch=(0.0 if face[i] else 180.0, 0.0))[0] for i in range(len(ws))]
            return {'image': torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1}

    G = FrontForBack()
    num = 6
    z = torch.from_numpy(np.concatenate([np.random.RandomState(s).randn(1, 4) for s in range(num)]))
    expected = [s for s in range(num) if z[s, 0] > 0]
    rate, flagged = ff_rate(G, num, seed=0, batch_size=num, progress=False)
    assert flagged == expected and rate == pytest.approx(len(expected) / num)


def test_mirror_score_is_one_for_a_mirrored_back_and_near_zero_for_true_heads():
    from spherehead.data.synth import synth_sample
    from spherehead.metrics.mirror import score_from_views
    def views(yaw):
        out = [synth_sample(9, i, 64, 0.0, 2, yaw_pitch=(yaw, 0.0)) for i in range(10)]
        img = torch.from_numpy(np.stack([o[0] for o in out])).permute(0, 3, 1, 2).float() / 127.5 - 1
        mask = torch.from_numpy(np.stack([o[1] for o in out]))[:, None].float() / 255
        return img, mask
    front, front_mask = views(0.0)
    back, back_mask = views(180.0)
    assert score_from_views(front, front.flip(-1), front_mask, front_mask.flip(-1)) == pytest.approx(1.0, abs=1e-5)
    assert abs(score_from_views(front, back, front_mask, back_mask)) < 0.05


# ---------------------------------------------------------------------------- command line

def test_cli_refuses_bad_arguments_in_one_line_and_prints_json(tmp_path, monkeypatch):
    from spherehead.cli import main
    monkeypatch.delenv(ENV_VAR, raising=False)
    runner = CliRunner()
    r = runner.invoke(main, ['metrics', '--network', 'random:tiny', '--metrics', 'fid50', '--data', 'x.zip'])
    assert r.exit_code == 2 and "unknown metric 'fid50'" in r.output and 'Traceback' not in r.output
    r = runner.invoke(main, ['metrics', '--network', 'random:tiny', '--metrics', 'fid50k_full', '--data', 'x.zip',
                             '--inception', str(tmp_path / 'nope.pt')])
    assert r.exit_code == 2 and 'Inception network file not found' in r.output and 'Traceback' not in r.output
    r = runner.invoke(main, ['metrics', '--network', 'random:tiny', '--metrics', 'kid50k_full',
                             '--inception', str(tmp_path / 'nope.pt')])
    assert r.exit_code == 2
    out = tmp_path / 'metrics.jsonl'
    r = runner.invoke(main, ['metrics', '--network', 'random:tiny', '--metrics', 'mirror_score', '--num', '2',
                             '--quiet', '--out', str(out)])
    assert r.exit_code == 0, r.output
    record = json.loads(r.output.strip().splitlines()[-1])
    assert set(record['results']) == {'mirror_score'} and json.loads(out.read_text())['results'] == record['results']


@pytest.mark.cuda
def test_cpu_and_cuda_give_the_same_numbers(standin, heads):
    names = ['fid50k_full', 'kid50k_full', 'fid_front', 'fid3d', 'ff_rate', 'mirror_score']
    cpu = compute_metrics(sh.load_generator('random:tiny'), heads, names, num=4, inception=standin, progress=False)
    gpu = compute_metrics(sh.load_generator('random:tiny', device='cuda'), heads, names, num=4, device='cuda',
                          inception=standin, progress=False)
    for name in names:
        assert gpu[name] == pytest.approx(cpu[name], rel=1e-3, abs=1e-4), name
