"""Summary of docs/scaling/multi_gpu.sh: per run, sec/kimg (median of the ticks after the first), GPU use,
the ranks' weight check; scaling efficiency against 1 GPU; optionally two runs compared tick by tick."""
import csv, json, re, statistics, sys
from pathlib import Path

root = Path(sys.argv[1])
TICK = re.compile(r'^kimg\s+([\d.]+)\s.*sec/kimg\s+([\d.]+)\s+gpumem\s+([\d.]+) GiB')
rows = {}
for log in sorted((root / 'logs').glob('train_*.txt')):
    tag = log.stem[len('train_'):]
    if tag.endswith(('-node0', '-node1')):
        continue
    text = log.read_text(errors='replace').splitlines()
    ticks = [TICK.match(l) for l in text]
    ticks = [(float(m[1]), float(m[2]), float(m[3])) for m in ticks if m]
    if not ticks:
        print(f'{tag}: no tick lines'); continue
    start = next((l for l in text if 'starting at' in l), '')
    ranks = next((re.search(r'(\d+) rank\(s\) x batch (\d+)', l) for l in text if 'rank(s) x batch' in l), None)
    equal = sum('weights equal' in l for l in text)
    differ = sum('weights DIFFER' in l for l in text)
    steady = [t[1] for t in ticks[1:]] or [ticks[0][1]]
    util, mem = {}, {}
    smi = root / 'logs' / f'smi_{tag}.csv'
    if smi.exists():
        samples = [r for r in csv.reader(smi.open()) if len(r) == 4]
        busy = [i for i, r in enumerate(samples) if int(r[2].split()[0]) > 0]
        for r in samples[busy[0] if busy else 0:]:
            g = int(r[1]); util.setdefault(g, []).append(int(r[2].split()[0])); mem.setdefault(g, []).append(int(r[3].split()[0]))
    gpus = sorted(g for g in util if max(mem[g]) > 1000)
    rows[tag] = dict(sec=statistics.median(steady))
    u = ' '.join(f'GPU{g} {statistics.mean(util[g]):.0f}% {max(mem[g]) / 1024:.1f}GiB' for g in gpus)
    print(f'{tag:18s} {ranks[1] if ranks else "?"} rank(s) x batch {ranks[2] if ranks else "?"}; '
          f'{start.split("; ")[-1].strip() if start else ""}; ticks {len(ticks)} to kimg {ticks[-1][0]:g}; '
          f'sec/kimg median of ticks 2.. {rows[tag]["sec"]:.2f} (ticks: {", ".join(f"{t[1]:.2f}" for t in ticks)}); '
          f'weights equal in {equal} tick(s), differ in {differ}')
    if u:
        print(f'{"":18s} busy-time mean utilisation / peak memory: {u}')
for cfg in ('demo', 'paper'):
    base = rows.get(f'{cfg}-1gpu')
    for k in (2, 4):
        r = rows.get(f'{cfg}-{k}gpu')
        if base and r:
            print(f'{cfg}: {k} GPUs {r["sec"]:.2f} s/kimg vs 1 GPU {base["sec"]:.2f}: speed-up {base["sec"] / r["sec"]:.2f}x, '
                  f'scaling efficiency {base["sec"] / r["sec"] / k * 100:.0f}%')
if '--compare' in sys.argv:
    a, b = sys.argv[sys.argv.index('--compare') + 1:][:2]
    from safetensors.torch import load_file
    da, db = [next((root / 'runs' / t).glob('*/')) for t in (a, b)]
    ra = {r['kimg']: r for r in map(json.loads, (da / 'stats.jsonl').read_text().splitlines())}
    rb = {r['kimg']: r for r in map(json.loads, (db / 'stats.jsonl').read_text().splitlines())}
    print(f'{a} vs {b}: per common tick (kimg, G loss, D loss)')
    for k in sorted(set(ra) & set(rb)):
        print(f'  {k:6g}  G {ra[k]["G/loss"]:.6f} / {rb[k]["G/loss"]:.6f}   D {ra[k]["D/loss"]:.6f} / {rb[k]["D/loss"]:.6f}')
    common = sorted({p.name for p in da.glob('network-snapshot-*.safetensors')} & {p.name for p in db.glob('network-snapshot-*.safetensors')})
    if common:
        ta, tb = load_file(str(da / common[-1])), load_file(str(db / common[-1]))
        diff = max(float((ta[k].float() - tb[k].float()).abs().max()) for k in ta)
        print(f'snapshot {common[-1]} of both: max |difference| over all tensors {diff:g}')
