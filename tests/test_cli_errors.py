"""Every command with bad values: one ``Error:`` line on stderr naming the value, exit status 2 for a
bad argument and 1 for a failure, never a traceback. Plus what generate writes, the version, checkpoint
messages and permissions, and `dataset check` listing every bad label.

The table runs in-process through the top-level `spherehead` group (CliRunner); one case also runs as a
real process. Cases run no network beyond random:tiny and fail before rendering.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import spherehead as sh
from spherehead.cli import main
from spherehead.config import preset
from spherehead.networks.generator import Generator

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> dict[str, str]:
    """Good and bad inputs, made once: networks of several kinds, broken files, a folder, a plain file."""
    d = tmp_path_factory.mktemp('cli')
    f = {}
    f['net'] = str(d / 'tiny.safetensors')
    sh.save_generator(sh.load_generator('random:tiny'), f['net'])
    torch.manual_seed(0)
    tri = Generator(preset('tiny', representation='triplane', use_parsing=False, use_background=False))
    f['triplane'] = str(d / 'triplane.safetensors')
    sh.save_generator(tri, f['triplane'])
    f['text_st'] = str(d / 'text.safetensors')
    Path(f['text_st']).write_text('this is not a network\n')
    f['torch_pkl'] = str(d / 'state.pkl')
    torch.save({'w': torch.zeros(2)}, f['torch_pkl'])
    f['dir_st'] = str(d / 'folder.safetensors')
    os.mkdir(f['dir_st'])
    f['folder'] = str(d / 'a_folder')
    os.mkdir(f['folder'])
    f['file'] = str(d / 'a_file')
    Path(f['file']).write_text('x')
    f['missing'] = str(d / 'missing.safetensors')
    f['out'] = str(d / 'out')
    return f


TINY = ['--network', 'random:tiny']

# (command line with {placeholders} from `files`, exit status, words the error line must contain)
CASES = [
    # generate: seeds
    (['generate', *TINY, '--seeds', 'a'], 2, ["'a'", 'seed']),
    (['generate', *TINY, '--seeds', '1,b'], 2, ["'b'"]),
    (['generate', *TINY, '--seeds', '3-0'], 2, ['3-0', 'reversed']),
    (['generate', *TINY, '--seeds', ''], 2, ['--seeds', 'empty']),
    (['generate', *TINY, '--seeds', '0,,1'], 2, ['empty']),
    (['generate', *TINY, '--seeds', '-1'], 2, ['-1', 'out of range']),
    (['generate', *TINY, '--seeds', '4294967296'], 2, ['4294967296']),
    (['generate', *TINY, '--seeds', '1.5'], 2, ["'1.5'"]),
    (['generate', *TINY, '--seeds', '2,2'], 2, ['twice']),
    (['generate', *TINY, '--seeds', '0-100000000'], 2, ['100000001 seeds']),
    (['generate', *TINY, '--seeds', '0-300', '--yaws', '0,1,2,3'], 2, ['1204 images', '--yes']),
    # generate: views
    (['generate', *TINY, '--yaws', ''], 2, ['--yaws', 'empty']),
    (['generate', *TINY, '--yaws', '0-90'], 2, ["'0-90'", 'not a number']),
    (['generate', *TINY, '--yaws', 'nan'], 2, ['nan', 'finite']),
    (['generate', *TINY, '--yaws', 'inf'], 2, ['inf']),
    (['generate', *TINY, '--yaws', '0,360,720'], 2, ['720', '-360..360']),
    (['generate', *TINY, '--yaws', '10.2,10.2'], 2, ['10.2', 'twice']),
    (['generate', *TINY, '--yaws', '10.0001,10.0002'], 2, ['same file name']),
    (['generate', *TINY, '--pitch', '91'], 2, ['91', '-90..90']),
    (['generate', *TINY, '--pitch', 'nan'], 2, ['--pitch']),
    (['generate', *TINY, '--pitch', 'up'], 2, ["'up'"]),
    (['generate', *TINY, '--trunc', 'inf'], 2, ['--trunc']),
    (['generate', *TINY, '--trunc', '-3'], 2, ['--trunc', 'truncation psi -3 is out of range', '0..2']),
    (['generate', *TINY, '--trunc', '2.5'], 2, ['2.5', '0..2']),
    (['generate', *TINY, '--sphere', 'C'], 2, ["'C'"]),
    (['generate', *TINY, '--output', 'normals'], 2, ["'normals'"]),
    (['generate', *TINY, '--bogus'], 2, ['--bogus']),
    # generate: device, network, output folder
    (['generate', *TINY, '--device', 'gpu'], 2, ["'gpu'", 'cpu, cuda']),
    (['generate', *TINY, '--device', 'cuda:99'], 2, ["'cuda:99'"]),
    (['generate', *TINY, '--device', ''], 2, ['--device']),
    (['generate', '--network', '{missing}'], 2, ['missing.safetensors', 'no such file']),
    (['generate', '--network', '{dir_st}'], 2, ['folder.safetensors', 'folder']),
    (['generate', '--network', '{file}'], 2, ['a_file', 'unknown network file type']),
    (['generate', '--network', 'random:huge'], 2, ["'huge'", 'random:tiny']),
    (['generate', '--network', 'random:tiny@x'], 2, ['random:tiny@x']),
    (['generate', '--network', '{text_st}'], 1, ['text.safetensors', 'not a .safetensors file']),
    (['generate', '--network', '{torch_pkl}'], 1, ['state.pkl', 'torch.save']),
    (['generate', '--network', '{triplane}', '--output', 'weight'], 2, ['--output weight', 'triplane']),
    (['generate', '--network', '{triplane}', '--output', 'parsing'], 2, ['parsing branch']),
    (['generate', '--network', '{triplane}', '--sphere', 'A'], 2, ['--sphere A', 'triplane']),
    (['generate', *TINY, '--outdir', '{file}'], 2, ['a_file', 'is a file']),
    (['generate', *TINY, '--outdir', '{file}/sub'], 2, ['a_file', 'is a file']),
    # dataset
    (['dataset', 'nope'], 2, ["'nope'"]),
    (['dataset', 'synth', '--out', '{out}/d.zip', '--resolution', '100000'], 2, ['100000', '--resolution']),
    (['dataset', 'synth', '--out', '{out}/d.zip', '--resolution', '1024', '--supersample', '8'], 2, ['8192']),
    (['dataset', 'synth', '--out', '{out}/d.zip', '--count', '0'], 2, ['--count']),
    (['dataset', 'synth', '--out', '{out}/d.zip', '--seed', '-1'], 2, ['--seed']),
    (['dataset', 'synth', '--out', '{out}/d.zip', '--front-bias', '2'], 2, ['--front-bias']),
    (['dataset', 'synth'], 2, ['--out']),
    (['dataset', 'synth', '--out', '{file}/d.zip'], 2, ['a_file', 'is a file']),
    (['dataset', 'synth', '--out', '{file}', '--count', '1'], 1, ['a_file', 'already exists', '--overwrite']),
    (['dataset', 'synth', '--out', '{out}/s.tar', '--count', '1'], 2, ['s.tar', '.tar archives', 's.zip']),
    (['dataset', 'synth', '--out', '{out}/s.tar.gz', '--count', '1'], 2, ['.tar.gz archives', '/s.zip', '/s ']),
    (['dataset', 'pack', '{folder}', '--out', '{out}/p.7z', '--resolution', '8'], 2, ['p.7z', '.7z archives']),
    (['dataset', 'pack', '{folder}', '--out', '{file}/p', '--resolution', '8'], 2, ['a_file', 'is a file']),
    (['dataset', 'sheet', '--out', '{out}/sheet'], 2, ['sheet', '.png']),
    (['dataset', 'sheet', '--out', '{folder}'], 2, ['a_folder', 'is a folder']),
    (['dataset', 'sheet', '--out', '{file}/x.png'], 2, ['a_file', 'is a file']),
    (['dataset', 'sheet', '--out', '{out}/s.png', '--resolution', '100000'], 2, ['--resolution']),
    (['dataset', 'check', '{missing}'], 1, ['missing.safetensors']),
    (['dataset', 'check', '{folder}'], 1, ['dataset.json']),
    (['dataset', 'info', '{folder}', '--front-only', 'nan'], 2, ['--front-only']),
    (['dataset', 'info', '{folder}'], 1, ['dataset.json']),
    (['dataset', 'pack', '{missing}', '--out', '{out}/p.zip', '--resolution', '8'], 1, ['missing.safetensors']),
    (['dataset', 'pack', '{folder}', '--out', '{out}/p.zip', '--resolution', '99999'], 2, ['99999']),
    # convert
    (['convert', '{torch_pkl}', '{out}/c.safetensors'], 1, ['state.pkl', 'torch.save']),
    (['convert', '{text_st}', '{out}/c.safetensors'], 1, ['text.safetensors']),
    (['convert', '{dir_st}', '{out}/c.safetensors'], 2, ['folder.safetensors', 'folder']),
    (['convert', '{missing}', '{out}/c.safetensors'], 2, ['no such file']),
    (['convert', 'demo', '{out}/c.safetensors'], 2, ["'demo'", 'not a file']),
    (['convert', '{net}', '{out}/c.bin'], 2, ['c.bin', '.safetensors']),
    (['convert', '{net}', '{folder}'], 2, ['a_folder', 'is a folder']),
    (['convert', '{net}'], 2, ['DEST']),
    # bench
    (['bench', 'sampler', '--device', 'gpu'], 2, ["'gpu'"]),
    (['bench', 'sampler', '--points', '0'], 2, ['--points']),
    (['bench', 'sampler', '--repeat', '0'], 2, ['--repeat']),
    (['bench', 'render', '--network', 'random:huge'], 2, ["'huge'"]),
    (['bench', 'render', '--network', '{triplane}', '--sphere', 'B'], 2, ['triplane']),
    # the tools of issue 13 and the metrics of issue 12 share the same checks
    (['video', *TINY, '--seeds', '3-0', '--out', '{out}/v.mp4'], 2, ['3-0']),
    (['video', *TINY, '--out', '{out}/v.avi'], 2, ['v.avi']),
    (['video', *TINY, '--frames', '0', '--out', '{out}/v.mp4'], 2, ['--frames']),
    (['video', *TINY, '--trunc', '-3', '--out', '{out}/v.mp4'], 2, ['--trunc', '-3']),
    (['video', *TINY, '--device', 'gpu', '--out', '{out}/v.mp4'], 2, ["'gpu'"]),
    (['interpolate', *TINY, '--seeds', '2', '--out', '{out}/i.mp4'], 2, ['--seeds']),
    (['interpolate', *TINY, '--seeds', '2,x', '--out', '{out}/i.mp4'], 2, ["'x'"]),
    (['mesh', *TINY, '--res', '1', '--out', '{out}/m.ply'], 2, ['--res']),
    (['mesh', *TINY, '--out', '{out}/m.stl'], 2, ['m.stl']),
    (['mesh', *TINY, '--out', '{folder}'], 2, ['a_folder']),
    (['metrics', *TINY, '--metrics', 'bogus'], 2, ["'bogus'"]),
    (['metrics', *TINY, '--metrics', 'mirror_score', '--device', 'gpu'], 2, ["'gpu'"]),
    (['metrics', *TINY, '--metrics', 'mirror_score', '--seed', '-1'], 2, ['--seed']),
    (['metrics', '--network', '{missing}', '--metrics', 'mirror_score'], 2, ['no such file']),
    (['view', '--snapshot', '{out}/snap'], 2, ['snap', '.png']),
    (['view', '--pitch', '100'], 2, ['100']),
    (['view', '{missing}'], 2, ['no such file']),
    # the top level
    (['nope'], 2, ["'nope'"]),
    (['--bogus'], 2, ['--bogus']),
]


def _fill(args: list[str], files: dict[str, str]) -> list[str]:
    return [a.format(**files) for a in args]


def _check_one_line(res, code: int, words, args) -> str:
    """The result failed with ``code``, no traceback, and stderr is one Error line holding ``words``."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == code, (args, res.exit_code, res.output)
    assert 'Traceback' not in res.output, res.output
    assert isinstance(res.exception, SystemExit), (args, res.exception)   # not an exception escaping the CLI
    assert len(lines) == 1 and lines[0].startswith('Error: '), (args, res.stderr)
    for w in words:
        assert w in lines[0], (args, w, lines[0])
    return lines[0]


@pytest.mark.parametrize('args,code,words', CASES, ids=[' '.join(c[0])[:60] for c in CASES])
def test_bad_values_give_one_line(files, args, code, words):
    args = _fill(args, files)
    res = CliRunner().invoke(main, args)
    _check_one_line(res, code, words, args)
    assert not os.path.exists(os.path.join(files['out'], 'c.safetensors'))   # no half-written network


def test_a_real_process_prints_one_line_and_exits_2():
    run = subprocess.run([sys.executable, '-m', 'spherehead', 'generate', '--network', 'random:tiny', '--seeds', 'a'],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and run.stdout == '', run
    assert run.stderr.count('\n') == 1 and run.stderr.startswith('Error: ') and "'a'" in run.stderr, run.stderr


def test_traceback_on_request(monkeypatch):
    """SPHEREHEAD_TRACEBACK=1 lets a failure through with its traceback (for debugging)."""
    monkeypatch.setenv('SPHEREHEAD_TRACEBACK', '1')
    res = CliRunner().invoke(main, ['dataset', 'check', '/nonexistent/dataset.zip'])
    assert res.exit_code == 1 and type(res.exception).__name__ == 'DatasetError'


def test_every_command_has_help_and_version():
    runner = CliRunner()
    res = runner.invoke(main, ['--help'])
    assert res.exit_code == 0
    listed = re.findall(r'^  (\w[\w-]*)\s', res.output.split('Commands:')[1], flags=re.M)
    assert set(listed) == set(main.commands), listed            # only commands that exist are listed

    def walk(group, path):
        for name, cmd in group.commands.items():
            r = runner.invoke(main, [*path, name, '--help'])
            assert r.exit_code == 0 and 'Usage:' in r.output, (path, name, r.output)
            if hasattr(cmd, 'commands'):
                walk(cmd, [*path, name])
    walk(main, [])
    res = runner.invoke(main, ['--version'])
    assert res.exit_code == 0 and res.output.strip() == f'spherehead {sh.__version__}'
    from importlib.metadata import PackageNotFoundError, version
    try:
        installed = version('spherehead')
    except PackageNotFoundError:   # not installed (run from a checkout): nothing to compare
        installed = sh.__version__
    assert installed == sh.__version__          # pyproject reads the same attribute


# ----------------------------------------------------------------------------- generate writes what it says

def _wrote(output: str) -> int:
    m = re.search(r'wrote (\d+) ', output)
    assert m, output
    return int(m.group(1))


def test_generate_file_count_equals_message_and_names_are_unique(tmp_path):
    out = tmp_path / 'gen'
    runner = CliRunner()
    args = ['generate', *TINY, '--seeds', '0-1', '--yaws', '0,10.2,10.4,360', '--outdir', str(out), '--device', 'cpu']
    res = runner.invoke(main, [*args, '--output', 'image', '--output', 'depth'])
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in out.iterdir())
    assert _wrote(res.stdout) == len(files) == 2 * 4 * 2, (res.stdout, files)
    assert 'seed0001_yaw010.4_pitch000_fused_depth.png' in files and 'seed0000_yaw360_pitch000_fused_image.png' in files
    # another output and another sphere into the same folder: new names, nothing overwritten
    res = runner.invoke(main, [*args, '--output', 'weight', '--sphere', 'A'])
    assert res.exit_code == 0 and _wrote(res.stdout) == 8 and 'replaced' not in res.stdout, res.output
    assert len(list(out.iterdir())) == 16 + 8
    # the same request again says it replaced its own files
    res = runner.invoke(main, [*args, '--output', 'weight', '--sphere', 'A'])
    assert 'replaced 8 existing' in res.stdout and len(list(out.iterdir())) == 24


def test_generate_grid_and_yes(tmp_path):
    from PIL import Image
    out = tmp_path / 'grid'
    res = CliRunner().invoke(main, ['generate', *TINY, '--seeds', '0,1,5', '--yaws', '0,90', '--grid',
                                    '--outdir', str(out), '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    (path,) = list(out.iterdir())
    assert path.name == 'grid_seeds0-1+5_yaws000+090_pitch000_fused_image.png'
    size = sh.preset('tiny').img_resolution
    img = np.asarray(Image.open(path))
    assert img.shape == (3 * size, 2 * size, 3)
    # the grid's tiles are the single views (deterministic rendering)
    res = CliRunner().invoke(main, ['generate', *TINY, '--seeds', '5', '--yaws', '90', '--outdir', str(out),
                                    '--device', 'cpu'])
    single = np.asarray(Image.open(out / 'seed0005_yaw090_pitch000_fused_image.png'))
    assert np.array_equal(img[2 * size:, size:], single)


def test_count_limit_goes_on_with_yes(monkeypatch, tmp_path):
    import spherehead.tools.generate as gen
    monkeypatch.setattr(gen, 'MAX_IMAGES', 2)
    args = ['generate', *TINY, '--seeds', '0-2', '--yaws', '0', '--outdir', str(tmp_path), '--device', 'cpu']
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and '3 images' in res.stderr and not list(tmp_path.iterdir())
    res = CliRunner().invoke(main, [*args, '--yes'])
    assert res.exit_code == 0 and _wrote(res.stdout) == 3 == len(list(tmp_path.iterdir()))


# ----------------------------------------------------------------------------- checkpoint files and messages

def test_saved_network_has_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        sh.save_generator(sh.load_generator('random:tiny'), tmp_path / 'g.safetensors')
    finally:
        os.umask(old)
    assert (tmp_path / 'g.safetensors').stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob('*.tmp'))


def test_load_messages_say_what_the_file_is(files):
    with pytest.raises(sh.UserError, match='is a folder'):
        sh.load_generator(files['dir_st'])
    with pytest.raises(sh.UserError, match='torch.save') as e:
        sh.load_generator(files['torch_pkl'])
    assert 'protocol' not in str(e.value)
    with pytest.raises(sh.UserError) as e:
        sh.load_generator(files['text_st'])
    assert 'convert' not in str(e.value) and 'text.safetensors' in str(e.value)


def test_demo_warns_once_when_its_file_is_missing(monkeypatch, tmp_path):
    import spherehead.checkpoint as ck
    monkeypatch.setattr(ck, 'DEMO_PATH', tmp_path / 'demo.safetensors')   # an install without the asset
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('default')
        ck.__warningregistry__ = {}           # forget warnings shown by earlier tests
        G1 = sh.load_generator('demo')
        sh.load_generator('demo')
    msgs = [str(w.message) for w in caught if 'demo' in str(w.message)]
    assert len(msgs) == 1 and 'missing' in msgs[0] and 'random' in G1.provenance


# ----------------------------------------------------------------------------- dataset check lists every problem

def test_dataset_check_lists_every_bad_label(tmp_path):
    from PIL import Image
    root = tmp_path / 'ds'
    root.mkdir()
    labels = []
    for i in range(5):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / f'img{i}.png')
        labels.append([f'img{i}.png', sh.camera.lookat(yaw_deg=30 * i)[0].tolist()])
    labels[1][1] = labels[1][1][:5]                  # too short
    labels[2][1][3] = 'x'                             # not a number
    labels[3][1][0] = float('nan')                    # json writes NaN; our reader refuses it
    (root / 'dataset.json').write_text(json.dumps({'labels': labels}))
    res = CliRunner().invoke(main, ['dataset', 'check', str(root), '--quiet'])
    assert res.exit_code == 1 and 'Traceback' not in res.output
    problems = [ln for ln in res.stderr.splitlines() if ln.startswith('problem:')]
    assert len(problems) == 3, res.stderr
    assert any('img1.png' in p and '5 numbers' in p for p in problems)
    assert any('img2.png' in p and 'not a number' in p for p in problems)
    assert any('img3.png' in p and 'NaN' in p for p in problems)
    assert '2 labelled images' in res.stdout                # the good ones are still checked


def test_bench_on_cpu_says_what_it_skips():
    res = CliRunner().invoke(main, ['bench', 'sampler', '--device', 'cpu', '--points', '64', '--size', '8',
                                    '--channels', '4', '--repeat', '1'])
    assert res.exit_code == 0, res.output
    assert 'only the PyTorch reference runs' in res.stdout and 'nan' not in res.stdout
    row = next(ln for ln in res.stdout.splitlines() if ln.startswith('reference'))
    assert row.split()[2] == '-' and row.split()[4] == '-'


def test_bench_fir_on_cpu_times_the_reference(monkeypatch):
    from spherehead.tools import bench_paths
    monkeypatch.setitem(bench_paths.FIR_CASES, 'up2', ((1, 2, 9, 7), 2, 1, (2, 1, 2, 1)))
    res = CliRunner().invoke(main, ['bench', 'fir', '--case', 'up2', '--device', 'cpu', '--repeat', '1'])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert '-- up2: x [1, 2, 9, 7], up 2, down 1' in lines
    row = next(ln for ln in lines if ln.startswith('reference'))
    assert float(row.split()[1]) > 0 and float(row.split()[4]) > 0
    assert any(ln.startswith('forward GB/s (bytes read + written): reference ') for ln in lines)
    # `bench --what` lists fir and runs it: every case
    for name, (shape, up, down, pad) in list(bench_paths.FIR_CASES.items()):
        monkeypatch.setitem(bench_paths.FIR_CASES, name, ((1, 2, 8, 8), up, down, pad))
    res = CliRunner().invoke(main, ['bench', '--help'])
    assert re.search(r'--what \[[^]]*\|fir[]|]', res.stdout), res.stdout
    res = CliRunner().invoke(main, ['bench', '--what', 'fir', '--device', 'cpu', '--repeat', '1'])
    assert res.exit_code == 0, res.output
    assert [ln.split(':')[0] for ln in res.stdout.splitlines() if ln.startswith('-- ')] == \
        ['-- filter', '-- down2', '-- up2']


def test_bench_orbit_precision_is_printed_and_checked():
    res = CliRunner().invoke(main, ['bench', '--what', 'orbit', '--config', 'tiny', '--device', 'cpu',
                                    '--precision', 'mixed', '--repeat', '1'])
    assert res.exit_code == 0, res.output
    assert 'batch 1, mixed;' in res.stdout and any(ln.startswith('reference') for ln in res.stdout.splitlines())
    res = CliRunner().invoke(main, ['bench', '--what', 'marcher', '--device', 'cpu', '--precision', 'mixed'])
    assert res.exit_code == 2 and 'generator and orbit take one value' in res.stderr and 'Traceback' not in res.output
