"""Every bad dataset input gets one clear line and a non-zero exit, never a traceback."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from spherehead.data import DatasetError, HeadDataset
from spherehead.tools.dataset import dataset as dataset_cli
from spherehead.data.synth import view_label

RES = 16


def _make(root, n=3, sizes=None, parsing=True):
    os.makedirs(os.path.join(root, 'parsing'), exist_ok=True)
    entries = []
    for i in range(n):
        s = sizes[i] if sizes else RES
        img = np.full((s, s, 3), 40 * i, np.uint8)
        Image.fromarray(img).save(os.path.join(root, f'img{i}.png'))
        if parsing:
            Image.fromarray(np.ones((s, s), np.uint8)).save(os.path.join(root, 'parsing', f'img{i}.png'))
        entries.append([f'img{i}.png', view_label(0, 0).tolist()])
    with open(os.path.join(root, 'dataset.json'), 'w') as f:
        json.dump({'labels': entries}, f)
    return root


def _edit_labels(root, fn):
    path = os.path.join(root, 'dataset.json')
    obj = json.load(open(path))
    fn(obj['labels'])
    json.dump(obj, open(path, 'w'))


def _assert_one_line_error(result, *needles):
    assert result.exit_code != 0, result.output
    assert 'Traceback' not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    err = [line for line in result.output.splitlines() if line.startswith('Error:')]
    assert len(err) == 1, result.output
    for needle in needles:
        assert needle in err[0], err[0]


def _missing_json(root):
    os.remove(os.path.join(root, 'dataset.json'))


def _wrong_length(root):
    _edit_labels(root, lambda labels: labels[1].__setitem__(1, labels[1][1][:16]))


def _no_image(root):
    _edit_labels(root, lambda labels: labels.append(['ghost.png', view_label(0, 0).tolist()]))


def _garbage_image(root):
    with open(os.path.join(root, 'img1.png'), 'wb') as f:
        f.write(b'this is not an image')


def _truncated_image(root):
    path = os.path.join(root, 'img2.png')
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[: len(data) // 2])


def _parsing_out_of_range(root):
    Image.fromarray(np.full((RES, RES), 42, np.uint8)).save(os.path.join(root, 'parsing', 'img1.png'))


def _mixed_resolutions(root):
    Image.fromarray(np.zeros((RES * 2, RES * 2, 3), np.uint8)).save(os.path.join(root, 'img2.png'))
    Image.fromarray(np.ones((RES * 2, RES * 2), np.uint8)).save(os.path.join(root, 'parsing', 'img2.png'))


def _bad_json(root):
    with open(os.path.join(root, 'dataset.json'), 'w') as f:
        f.write('{"labels": [')


def _non_number(root):
    _edit_labels(root, lambda labels: labels[0][1].__setitem__(3, 'abc'))


# (breaker, where the error names, words of the message, raised when the reader is built (True) or on an item)
CASES = {
    'missing dataset.json': (_missing_json, 'dataset.json', ['missing'], True),
    'label of the wrong length': (_wrong_length, 'img1.png', ['16 numbers', 'expected 25'], True),
    'path with no image': (_no_image, 'ghost.png', ['no image'], True),
    'unreadable image': (_garbage_image, 'img1.png', ['unreadable'], False),
    'truncated image': (_truncated_image, 'img2.png', ['unreadable or truncated'], False),
    'parsing id out of range': (_parsing_out_of_range, 'parsing', ['parsing id 42 out of range'], False),
    'mixed resolutions': (_mixed_resolutions, 'img2.png', ['mixed resolutions'], False),
    'invalid json': (_bad_json, 'dataset.json', ['not valid JSON'], True),
    'label not a number': (_non_number, 'img0.png', ['not a number'], True),
}


@pytest.mark.parametrize('case', list(CASES))
def test_bad_input(case, tmp_path):
    breaker, where, words, at_build = CASES[case]
    root = _make(str(tmp_path / 'ds'))
    breaker(root)
    # the reader: one DatasetError line, at construction or when the bad item is read
    with pytest.raises(DatasetError) as info:
        ds = HeadDataset(root)
        for i in range(len(ds)):
            ds[i]
    msg = str(info.value)
    assert '\n' not in msg and where in msg and all(w in msg for w in words), msg
    if at_build:
        with pytest.raises(DatasetError):
            HeadDataset(root)
    # the CLI: check exits non-zero with the problem named; pack and info too
    runner = CliRunner()
    res = runner.invoke(dataset_cli, ['check', root, '--quiet'])
    assert res.exit_code == 1 and 'Traceback' not in res.output, res.output
    assert where in res.output and all(w in res.output for w in words), res.output
    res = runner.invoke(dataset_cli, ['pack', root, '--out', str(tmp_path / 'out.zip'), '--resolution', '8'])
    if case == 'mixed resolutions':
        assert res.exit_code == 0, res.output          # packing is the cure for mixed resolutions
    else:
        _assert_one_line_error(res, where)
        assert not os.path.exists(tmp_path / 'out.zip')   # no half-written output
    res = runner.invoke(dataset_cli, ['info', root])
    if at_build:
        _assert_one_line_error(res, where, *words)


def test_missing_path_and_not_a_dataset(tmp_path):
    runner = CliRunner()
    res = runner.invoke(dataset_cli, ['check', str(tmp_path / 'nope.zip')])
    _assert_one_line_error(res, 'nope.zip', 'no such folder')
    bad = tmp_path / 'bad.zip'
    bad.write_bytes(b'not a zip')
    res = runner.invoke(dataset_cli, ['info', str(bad)])
    _assert_one_line_error(res, 'bad.zip', 'not a folder')


def test_missing_parsing_map(tmp_path):
    root = _make(str(tmp_path / 'ds'))
    os.remove(os.path.join(root, 'parsing', 'img1.png'))
    with pytest.raises(DatasetError, match='img1.png.*missing'):
        HeadDataset(root)
    assert len(HeadDataset(root, parsing=False)) == 3
    res = CliRunner().invoke(dataset_cli, ['check', root, '--quiet'])
    assert res.exit_code == 1 and 'parsing map missing' in res.output


def test_zip_with_bad_image(tmp_path):
    import zipfile
    root = _make(str(tmp_path / 'ds'), parsing=False)
    _garbage_image(root)
    zpath = str(tmp_path / 'ds.zip')
    with zipfile.ZipFile(zpath, 'w') as z:
        for name in os.listdir(root):
            if os.path.isfile(os.path.join(root, name)):
                z.write(os.path.join(root, name), name)
    ds = HeadDataset(zpath)
    with pytest.raises(DatasetError, match=r'ds\.zip:img1\.png: unreadable'):
        ds[1]


def test_error_from_a_dataloader_worker_stays_one_line(tmp_path):
    import torch
    root = _make(str(tmp_path / 'ds'), parsing=False)
    _garbage_image(root)
    loader = torch.utils.data.DataLoader(HeadDataset(root), batch_size=1, num_workers=1)
    with pytest.raises(DatasetError) as info:
        list(loader)
    msg = str(info.value)
    assert msg.startswith(os.path.join(root, 'img1.png') + ': unreadable') and 'Traceback' not in msg, msg


@pytest.mark.skipif(importlib.util.find_spec('spherehead.tools.generate') is None,
                    reason='the spherehead CLI needs spherehead.tools.generate (another issue)')
def test_module_cli_help_and_error(tmp_path):
    run = subprocess.run([sys.executable, '-m', 'spherehead', 'dataset', '--help'], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 0 and 'synth' in run.stdout and 'check' in run.stdout
    run = subprocess.run([sys.executable, '-m', 'spherehead', 'dataset', 'check', str(tmp_path)],
                         capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 1 and 'Traceback' not in run.stderr and 'dataset.json' in run.stderr
