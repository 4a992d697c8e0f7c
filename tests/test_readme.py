"""What a new user reads first: the README's install order and timings, and the measured CPU
training figures in docs/training.md (issue 23: a fresh clone on a 2-core CPU, the README only)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()
TRAINING = (ROOT / 'docs' / 'training.md').read_text()
CPU_TORCH = 'pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu'


def test_cpu_torch_comes_before_the_commands_that_need_it():
    first_install = README.index('pip install -r requirements.txt')
    assert CPU_TORCH in README and README.index(CPU_TORCH) < first_install


def test_readme_says_what_to_do_when_the_pytorch_index_cannot_be_reached():
    start = README.index(CPU_TORCH)
    advice = README[start:README.index('## Visualizer')]
    assert 'cannot be reached' in advice
    assert '--timeout' in advice and '--retries' in advice              # fail at once instead of minutes of retries
    assert re.search(r'`pip install torch==2\.13\.0`', advice)           # the fallback: PyPI's build


def test_readme_gives_the_test_suite_time():
    assert re.search(r'whole suite takes about \d+ min[^.]*2-core', README), 'no total time for the test suite'


def test_cpu_training_times_are_measured_figures():
    line = next(ln for ln in README.splitlines() if '--cfg demo --kimg 200 --batch 32' in ln)
    assert 'slowly' not in line and re.search(r'CPU: about [\d.]+ days', line), line
    cpu = TRAINING[TRAINING.index('## On the CPU'):]
    cpu = cpu[:cpu.index('\n## ', 1)]
    assert re.search(r'tiny[^\n]*64 px[^\n]*batch 8', cpu) and re.search(r'\d+ sec/kimg', cpu)
    assert re.search(r'--cfg demo --kimg 200[^\n]*\n?[^\n]*about [\d.]+ days', cpu)
    assert '2026-' in cpu and 'load average' in cpu                    # when and how loaded the machine was
