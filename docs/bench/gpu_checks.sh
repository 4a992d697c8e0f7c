#!/usr/bin/env bash
# One short GPU session for what only a GPU can show, in order of worth, each step's files added to
# $OUT/gpu_checks.tar as soon as it ends (a session cut off by its time limit still returns them):
#   1. docs/bench/r1_flags_gpu.sh (issue 22: the training step with each formulation off in turn,
#      cuDNN autotuning x TF32, the R1 profile, CUDA tests of conv_autograd / fast layers / training);
#   2. docs/bench/invert.py on the paper configuration (issue 21: random weights, LPIPS layout with
#      random weights: what the real network costs);
#   3. the visualizer's compare mode on CUDA (demo | demo-triplane), timed;
#   4. the remaining CUDA tests (kernels, graphs, networks, metrics).
#
#   OUT=/tmp/out bash docs/bench/gpu_checks.sh            # LIMIT (seconds, default 420) bounds the whole
set -uo pipefail
OUT=${OUT:?set OUT}; LIMIT=${LIMIT:-420}; PY=${PY:-python3}
export PYTHONUNBUFFERED=1
WORK=${WORK:-$HOME/gpu-checks}; rm -rf "$WORK"; mkdir -p "$WORK" "$OUT"
TAR="$OUT/gpu_checks.tar"
t0=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - t0) )); }
keep() { (cd "$WORK" && tar rf "$TAR" "$@" 2>/dev/null); echo "[$(( $(date +%s) - t0 )) s] kept: $*"; }

mkdir -p "$WORK/r1"
OUT="$WORK/r1" LIMIT=$(( LIMIT - 150 )) PY=$PY bash docs/bench/r1_flags_gpu.sh > "$WORK/r1/session.txt" 2>&1
keep r1

if [ "$(left)" -gt 60 ]; then
  timeout $(( $(left) - 50 )) $PY docs/bench/invert.py --network random:paper --device cuda --vgg16 random \
    --warmup 2 --quiet --out "$WORK/invert_paper.json" > "$WORK/invert_paper.txt" 2>&1
  echo "exit $?" >> "$WORK/invert_paper.txt"; keep invert_paper.txt invert_paper.json
fi

if [ "$(left)" -gt 40 ]; then
  timeout 40 $PY - > "$WORK/viz_compare.txt" 2>&1 <<'EOF'
import time, torch
from viz.compare import PairRenderer
from viz.render_args import RenderArgs
print(torch.cuda.get_device_name(0))
pair = PairRenderer('cuda')
for i, args in enumerate([RenderArgs(network='demo', compare='demo-triplane', yaw=y) for y in (0, 90, 180, 0, 90, 180)]):
    torch.cuda.synchronize(); t = time.perf_counter()
    r = pair.render(args)
    torch.cuda.synchronize()
    print(f'yaw {args.yaw:5.0f}: error {r.error} image {None if r.image is None else r.image.shape} '
          f'{(time.perf_counter() - t) * 1000:.1f} ms (first frames load both networks)')
EOF
  echo "exit $?" >> "$WORK/viz_compare.txt"; keep viz_compare.txt
fi

if [ "$(left)" -gt 30 ]; then
  timeout $(( $(left) - 10 )) $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_bias_act.py \
    tests/test_upfirdn2d.py tests/test_dual_sphere_kernel.py tests/test_graphed.py tests/test_networks.py \
    tests/test_metrics.py > "$WORK/pytest_cuda.txt" 2>&1
  echo "exit $?" >> "$WORK/pytest_cuda.txt"; keep pytest_cuda.txt
fi
echo "session took $(( $(date +%s) - t0 )) s"
