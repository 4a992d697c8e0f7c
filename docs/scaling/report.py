"""Summary of docs/scaling/multi_gpu.sh (python docs/scaling/report.py WORKDIR).

Per run: sec/kimg (median of the log's ticks after the first), nvidia-smi's mean utilisation and
peak memory per GPU (from the first busy sample to the end), the ranks' weight check. Per config
and set (fixed global batch, fixed per-GPU batch): speed-up and scaling efficiency against the set's
1-GPU run, efficiency = sec/kimg(1 GPU) / (K x sec/kimg(K GPUs)). The flat exchange against the
default at the same point; two torchrun nodes against one. Also writes WORKDIR/report.json.
"""
from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from pathlib import Path

TICK = re.compile(r'^kimg\s+([\d.]+)\s.*sec/kimg\s+([\d.]+)\s+gpumem\s+([\d.]+) GiB')
SET_NAMES = {'global': 'fixed global batch', 'pergpu': 'fixed batch per GPU'}


def read_run(root: Path, tag: str) -> dict | None:
    """Figures of one run from its log and nvidia-smi samples; None if it has no tick."""
    log = root / 'logs' / f'train_{tag}.txt'
    if not log.exists():
        return None
    text = log.read_text(errors='replace').splitlines()
    ticks = [m for m in map(TICK.match, text) if m]
    if not ticks:
        return None
    ticks = [(float(m[1]), float(m[2]), float(m[3])) for m in ticks]
    ranks = next((re.search(r'(\d+) rank\(s\) x batch (\d+)', l) for l in text if 'rank(s) x batch' in l), None)
    start = next((l.split('; ')[-1].strip() for l in text if 'starting at' in l), '')
    steady = [t[1] for t in ticks[1:]] or [ticks[0][1]]
    run = {'tag': tag, 'ranks': int(ranks[1]) if ranks else None, 'batch_gpu': int(ranks[2]) if ranks else None,
           'start': start, 'ticks': [t[1] for t in ticks], 'kimg': ticks[-1][0],
           'sec_per_kimg': statistics.median(steady),
           'weights_equal': sum('weights equal' in l for l in text),
           'weights_differ': sum('weights DIFFER' in l for l in text),
           'torch_peak_gib_rank0': max(t[2] for t in ticks), 'util': {}, 'mem_gib': {}}
    smi = root / 'logs' / f'smi_{tag}.csv'
    if smi.exists():
        samples = [r for r in csv.reader(smi.open()) if len(r) == 4]
        busy = [i for i, r in enumerate(samples) if int(r[2].split()[0]) > 0]
        util: dict[int, list[int]] = {}
        mem: dict[int, list[int]] = {}
        for r in samples[busy[0] if busy else 0:]:
            g = int(r[1])
            util.setdefault(g, []).append(int(r[2].split()[0]))
            mem.setdefault(g, []).append(int(r[3].split()[0]))
        for g in sorted(util):
            if max(mem[g]) > 1000:        # MiB: a GPU this run used
                run['util'][g] = statistics.mean(util[g])
                run['mem_gib'][g] = max(mem[g]) / 1024
    return run


def per_gpu(run: dict) -> tuple[str, str]:
    if not run['util']:
        return '-', f'rank 0 {run["torch_peak_gib_rank0"]:.1f} GiB (torch)'
    return (', '.join(f'GPU{g} {u:.0f}%' for g, u in run['util'].items()),
            ', '.join(f'GPU{g} {m:.1f} GiB' for g, m in run['mem_gib'].items()))


def main(root: Path) -> dict:
    plan = [line.split() for line in (root / 'plan.txt').read_text().splitlines() if line.strip()]
    runs = {tag: read_run(root, tag) for _, _, tag, _, _ in plan}
    for tag, run in runs.items():
        if run is None:
            print(f'{tag}: no tick lines (see logs/train_{tag}.txt)')
            continue
        util, mem = per_gpu(run)
        print(f'{tag:18s} {run["ranks"]} rank(s) x batch {run["batch_gpu"]}; {run["start"]}; ticks {len(run["ticks"])} '
              f'to kimg {run["kimg"]:g}; sec/kimg {run["sec_per_kimg"]:.2f} (ticks: '
              f'{", ".join(f"{t:.2f}" for t in run["ticks"])}); weights equal in {run["weights_equal"]} tick(s), '
              f'differ in {run["weights_differ"]}; utilisation {util}; peak memory {mem}')
    tables = []
    for (set_name, cfg) in dict.fromkeys((s, c) for s, c, *_ in plan if s in SET_NAMES):
        rows = [(int(k), int(b), runs[tag]) for s, c, tag, k, b in plan if (s, c) == (set_name, cfg) and runs[tag]]
        base = next((r for k, _, r in rows if k == 1), None)
        what = ((f'global batch {rows[0][0] * rows[0][1]}' if set_name == 'global' else f'{rows[0][1]} per GPU')
                if rows else '')
        print(f'\n{cfg}, {SET_NAMES[set_name]} ({what}):')
        print(f'  {"GPUs x batch per GPU":22s} {"sec/kimg":>9s} {"speed-up":>9s} {"efficiency":>11s}  '
              'utilisation per GPU      peak memory per GPU')
        for k, b, r in rows:
            speed = base['sec_per_kimg'] / r['sec_per_kimg'] if base else float('nan')
            eff = speed / k
            util, mem = per_gpu(r)
            eff_text = '-' if k == 1 else f'{eff * 100:.0f}%'
            print(f'  {f"{k} x {b}":22s} {r["sec_per_kimg"]:9.2f} {speed:9.2f} {eff_text:>11s}  {util:24s} {mem}')
            tables.append({'config': cfg, 'set': set_name, 'gpus': k, 'batch_gpu': b, 'global_batch': k * b,
                           'sec_per_kimg': r['sec_per_kimg'], 'speed_up': speed, 'efficiency': eff,
                           'util': r['util'], 'mem_gib': r['mem_gib'], 'tag': r['tag']})
    for s, cfg, tag, k, b in plan:
        ref = runs.get(f'{cfg}-{k}x{b}')
        if s == 'flat' and runs[tag] and ref:
            print(f'\n{cfg} on {k} GPUs x {b}: --grad-sync flat {runs[tag]["sec_per_kimg"]:.2f} s/kimg, overlap '
                  f'{ref["sec_per_kimg"]:.2f} s/kimg ({runs[tag]["sec_per_kimg"] / ref["sec_per_kimg"]:.2f}x)')
        if s == 'nodes' and runs[tag] and ref:
            print(f'\n{cfg}: 2 nodes x {int(k) // 2} GPUs {runs[tag]["sec_per_kimg"]:.2f} s/kimg, one node of {k} '
                  f'{ref["sec_per_kimg"]:.2f} s/kimg')
    out = {'runs': runs, 'tables': tables}
    (root / 'report.json').write_text(json.dumps(out, indent=1))
    return out


if __name__ == '__main__':
    main(Path(sys.argv[1]))
