"""Datasets: synthetic heads through the reader, label geometry, flips, re-balancing, pack, check."""
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from spherehead.camera import label_to_yaw_pitch, mirror_label
from spherehead.data import DatasetOptions, HeadDataset, duplication_counts, rebalance
from spherehead.tools.dataset import dataset as dataset_cli
from spherehead.data.dataset import FLIP_PARSING_LUT
from spherehead.data.synth import (SynthOptions, label_rays, render_head, sample_style, synth_dataset, synth_sample,
                                   view_label)
from spherehead.parsing_classes import CLASS_ID, FACE_ONLY_IDS

RES = 32


@pytest.fixture(scope='session')
def synth_zip(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('synth') / 'heads.zip')
    synth_dataset(SynthOptions(out=out, count=40, resolution=RES, seed=7, front_bias=0.5, supersample=1, workers=2),
                  progress=False)
    return out


def test_synth_through_reader(synth_zip):
    ds = HeadDataset(synth_zip)
    assert len(ds) == 40 and ds.resolution == RES and ds.has_masks and ds.has_parsing
    item = ds[3]
    assert item['image'].shape == (3, RES, RES) and item['image'].dtype == torch.uint8
    assert item['label'].shape == (25,) and item['label'].dtype == torch.float32
    assert item['mask'].shape == (1, RES, RES) and item['mask'].dtype == torch.uint8
    assert item['parsing'].shape == (1, RES, RES) and int(item['parsing'].max()) < 20
    assert set(np.unique(item['mask'].numpy())) <= {0, 255}
    # the mask is exactly the non-background parsing
    assert torch.equal(item['mask'] > 0, item['parsing'] > 0)


def test_reader_with_workers_matches_main_process(synth_zip):
    ds = HeadDataset(synth_zip)
    batches0 = list(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0))
    batches2 = list(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2))
    for a, b in zip(batches0, batches2):
        for k in ('image', 'label', 'mask', 'parsing'):
            assert torch.equal(a[k], b[k])


def test_synth_is_deterministic_and_independent_of_workers(tmp_path):
    outs = []
    for workers in (1, 2):
        out = str(tmp_path / f'w{workers}')
        synth_dataset(SynthOptions(out=out, count=6, resolution=RES, seed=3, supersample=1, workers=workers),
                      progress=False)
        outs.append(out)
    for rel in ('dataset.json', '00000/img00000005.png', 'parsing/00000/img00000002.png', 'masks/00000/img00000004.png'):
        with open(os.path.join(outs[0], rel), 'rb') as f0, open(os.path.join(outs[1], rel), 'rb') as f1:
            assert f0.read() == f1.read(), rel
    a, b = synth_sample(3, 5, RES, supersample=1), synth_sample(3, 5, RES, supersample=1)
    assert all(np.array_equal(x, y) for x, y in zip(a[:4], b[:4]))
    assert not np.array_equal(synth_sample(4, 5, RES, supersample=1)[0], a[0])


def test_labels_decode_to_rendered_view(synth_zip):
    ds = HeadDataset(synth_zip)
    for i in range(len(ds)):
        _img, _m, _p, label, yaw, pitch = synth_sample(7, i, RES, front_bias=0.5, supersample=1)
        y, p, r = label_to_yaw_pitch(ds.labels[i])
        assert abs((y - yaw + 180) % 360 - 180) < 1e-3 and abs(p - pitch) < 1e-3 and abs(r - 2.7) < 1e-4
        np.testing.assert_allclose(ds.labels[i], label, atol=1e-6)
        c2w = ds.labels[i][:16].reshape(4, 4)[:3, :3].astype(np.float64)
        np.testing.assert_allclose(c2w.T @ c2w, np.eye(3), atol=1e-5)
        np.testing.assert_allclose(ds.labels[i][16:], [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], atol=1e-6)


def _project(label, point, res):
    """World point -> (row, col) pixel, by the pinhole model (independent of label_rays)."""
    c2w = np.asarray(label[:16], np.float64).reshape(4, 4)
    k = np.asarray(label[16:], np.float64).reshape(3, 3)
    cam = np.linalg.inv(c2w) @ np.append(point, 1.0)
    uvw = k @ cam[:3]
    u, v = uvw[0] / uvw[2], uvw[1] / uvw[2]
    return int(v * res), int(u * res)


def test_rays_match_the_label_projection():
    """What is rendered at a pixel is what the label projects there (EG3D ray convention)."""
    rng = np.random.default_rng(0)
    style = sample_style(rng)
    res = 64
    hc_y, (ax, _ay, az) = style.center_y, style.axes
    nose_tip = np.array([0.0, hc_y - 0.028, az * 0.9 + 0.05])
    for yaw, pitch in ((0, 0), (20, 10), (-25, -10)):
        label = view_label(yaw, pitch)
        parsing = render_head(style, label, res, supersample=1)[2]
        r, c = _project(label, nose_tip - np.array([0, 0, 0.004]), res)
        assert parsing[r, c] == CLASS_ID['nose'], (yaw, pitch)
    ear = np.array([ax * 0.96 + 0.02, hc_y - 0.01, -0.012])
    if style.hairline[1] > 0.0 and not style.long_hair:
        label = view_label(90, 0)
        parsing = render_head(style, label, res, supersample=1)[2]
        assert parsing[_project(label, ear, res)] == CLASS_ID['left_ear']
    # centre ray of a frontal camera points from the camera through the origin
    o, d = label_rays(view_label(0, 0), 2)
    np.testing.assert_allclose(o, [0, 0, 2.7], atol=1e-6)
    np.testing.assert_allclose(d.mean(0) / np.linalg.norm(d.mean(0)), [0, 0, -1], atol=1e-6)


def test_face_only_on_front_views():
    face = np.array(FACE_ONLY_IDS)
    rng = np.random.default_rng(1)
    for i in range(12):
        pitch = float(rng.uniform(-35, 35))
        back_yaw = float(rng.uniform(150.5, 180)) * (1 if i % 2 else -1)
        front_yaw = float(rng.uniform(-30, 30))
        back = synth_sample(11, i, 64, supersample=1, yaw_pitch=(back_yaw, pitch))[2]
        front = synth_sample(11, i, 64, supersample=1, yaw_pitch=(front_yaw, float(np.clip(pitch, -20, 20))))[2]
        assert not np.isin(back, face).any(), (i, back_yaw, pitch)
        ids = set(np.unique(front))
        for needed in ('nose', 'upper_lip', 'lower_lip'):
            assert CLASS_ID[needed] in ids, (i, front_yaw, needed)
        assert ids & {CLASS_ID['left_eye'], CLASS_ID['right_eye']}
        assert ids & {CLASS_ID['left_brow'], CLASS_ID['right_brow']}
        assert CLASS_ID['hair'] in set(np.unique(back))


def test_flip_and_label_mirroring_agree():
    """Mirroring the rendered parsing map equals rendering from the mirrored label (with left/right swapped)."""
    style = sample_style(np.random.default_rng(5))
    for yaw, pitch in ((35, 10), (120, -15), (-170, 5)):
        label = view_label(yaw, pitch)
        _i, mask, parsing = render_head(style, label, 48, supersample=1)
        _i, mask_m, parsing_m = render_head(style, mirror_label(label), 48, supersample=1)
        assert np.mean(mask[:, ::-1] != mask_m) < 0.005
        assert np.mean(FLIP_PARSING_LUT[parsing[:, ::-1]] != parsing_m) < 0.01
        y, p, _ = label_to_yaw_pitch(mirror_label(label))
        assert abs(y + yaw) < 1e-6 and abs(p - pitch) < 1e-6


def test_reader_xflip(synth_zip):
    ds = HeadDataset(synth_zip, xflip=True)
    n = len(ds.names)
    assert len(ds) == 2 * n
    a, b = ds[4], ds[4 + n]
    assert not a['flipped'] and b['flipped']
    assert torch.equal(b['image'], a['image'].flip(-1))
    assert torch.equal(b['mask'], a['mask'].flip(-1))
    assert torch.equal(b['label'], mirror_label(a['label']))
    assert torch.equal(b['parsing'], torch.from_numpy(FLIP_PARSING_LUT[a['parsing'].flip(-1).numpy()]))
    assert torch.equal(ds.get_label(4 + n), b['label'])
    np.testing.assert_allclose(ds.item_yaw()[4 + n], -ds.item_yaw()[4], atol=1e-5)


def test_yaw_filters(synth_zip):
    full = HeadDataset(synth_zip)
    front = HeadDataset(synth_zip, front_only_deg=45)
    assert 0 < len(front) < len(full)
    assert np.all(np.abs(front.item_yaw()) < 45)
    assert len(front) == int(np.sum(np.abs(full.yaw) < 45))
    back = HeadDataset(synth_zip, yaw_range=(90, 180))
    assert np.all(back.item_yaw() >= 90)


def test_rebalance_counts_on_known_histogram():
    counts = {18: 4000, 19: 1000, 20: 300, 0: 7, 35: 1, 10: 2001}     # bin -> samples (10-degree bins)
    yaw = np.concatenate([np.full(n, -180 + 10 * b + 5.0) for b, n in counts.items()])
    order, report = rebalance(yaw, bins=36, constant=2000)
    expected = {18: 1, 19: 2, 20: 6, 0: 285, 35: 2000, 10: 1}
    for b, n in counts.items():
        assert report.counts[b] == n and report.dup[b] == expected[b]
    assert report.dup.sum() == sum(expected.values())     # empty bins get 0
    assert len(order) == report.total_after == sum(n * expected[b] for b, n in counts.items())
    assert report.total_before == len(yaw)
    assert np.all(np.diff(order) >= 0)
    # the count never shrinks as a bin gets rarer
    dup = duplication_counts(np.arange(1, 5000))
    assert np.all(np.diff(dup) <= 0) and dup[0] == 2000 and dup[-1] == 1
    assert duplication_counts(np.array([1, 0]), constant=2000, max_dup=10).tolist() == [10, 0]
    wrap = rebalance(np.array([179.9, -180.0, 180.0]), bins=36, constant=5)[1].counts   # 180 == -180: bin 0
    assert wrap[0] == 2 and wrap[35] == 1


def test_reader_rebalance_reports_counts(synth_zip):
    ds = HeadDataset(DatasetOptions(path=synth_zip, rebalance=True, rebalance_constant=10, rebalance_bins=4))
    rep = ds.rebalance_report
    assert len(ds) == rep.total_after == int((rep.counts * rep.dup).sum())
    assert rep.total_before == 40
    np.testing.assert_array_equal(rep.dup, np.where(rep.counts > 0, np.maximum(1, 10 // np.maximum(rep.counts, 1)), 0))
    lines = ds.summary()
    assert any('re-balancing' in line for line in lines) and any('total 40 ->' in line for line in lines)


def _folder_dataset(root, sizes, with_parsing=True, ext='.png'):
    """A user-style folder: images of the given sizes, dataset.json, parsing maps under parsing/."""
    os.makedirs(root, exist_ok=True)
    labels = []
    rng = np.random.default_rng(0)
    for i, s in enumerate(sizes):
        name = f'sub/im{i}{ext}'
        os.makedirs(os.path.join(root, 'sub'), exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (s, s, 3), dtype=np.uint8)).save(os.path.join(root, name))
        if with_parsing:
            os.makedirs(os.path.join(root, 'parsing', 'sub'), exist_ok=True)
            ids = np.zeros((s, s), np.uint8)
            ids[s // 4: 3 * s // 4, s // 4: 3 * s // 4] = CLASS_ID['skin']
            ids[s // 3, s // 3] = CLASS_ID['nose']
            Image.fromarray(ids).save(os.path.join(root, 'parsing', f'sub/im{i}.png'))
        labels.append([name, [str(v) for v in view_label(30.0 * i, 0.0)]])   # labels as strings
    with open(os.path.join(root, 'dataset.json'), 'w') as f:
        json.dump({'labels': labels}, f)
    return root


def test_pack_resizes_and_reader_loads(tmp_path):
    src = _folder_dataset(str(tmp_path / 'src'), [48, 40, 64], ext='.jpg')
    out = str(tmp_path / 'packed.zip')
    res = CliRunner().invoke(dataset_cli, ['pack', src, '--out', out, '--resolution', '32'])
    assert res.exit_code == 0, res.output
    ds = HeadDataset(out)
    assert len(ds) == 3 and ds.resolution == 32 and ds.has_parsing and not ds.has_masks
    for i in range(3):
        item = ds[i]
        assert item['image'].shape == (3, 32, 32)
        assert set(np.unique(item['parsing'].numpy())) <= {0, CLASS_ID['skin'], CLASS_ID['nose']}  # nearest only
    assert ds.names[0] == 'sub/im0.png'
    y, _, _ = label_to_yaw_pitch(ds.labels)
    np.testing.assert_allclose(y, [0, 30, 60], atol=1e-4)
    # the reader resizes too when a resolution is asked for
    direct = HeadDataset(src, resolution=24)
    assert direct[1]['image'].shape == (3, 24, 24) and direct[1]['parsing'].shape == (1, 24, 24)


def test_check_accepts_synthetic_and_info_reports(synth_zip):
    runner = CliRunner()
    res = runner.invoke(dataset_cli, ['check', synth_zip, '--quiet'])
    assert res.exit_code == 0, res.output
    assert 'OK:' in res.output and 'yaw histogram' in res.output and 'parsing: 40 of 40 present' in res.output
    res = runner.invoke(dataset_cli, ['info', synth_zip, '--rebalance', '--rebalance-constant', '20'])
    assert res.exit_code == 0 and 'total 40 ->' in res.output


def test_synth_cli_folder_output(tmp_path):
    out = str(tmp_path / 'heads')
    res = CliRunner().invoke(dataset_cli, ['synth', '--out', out, '--count', '3', '--resolution', '16',
                                           '--seed', '1', '--front-bias', '1', '--workers', '1'])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(out)) == ['00000', 'dataset.json', 'masks', 'parsing']
    labels = json.load(open(os.path.join(out, 'dataset.json')))['labels']
    assert [e[0] for e in labels] == [f'00000/img{i:08d}.png' for i in range(3)] and len(labels[0][1]) == 25
    res = CliRunner().invoke(dataset_cli, ['synth', '--out', out, '--count', '3', '--resolution', '16'])
    assert res.exit_code != 0 and 'already exists' in res.output


def test_contact_sheet_command(tmp_path):
    out = str(tmp_path / 'sheet.png')
    res = CliRunner().invoke(dataset_cli, ['sheet', '--out', out, '--resolution', '16', '--count', '4'])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size[0] > 4 * 16
