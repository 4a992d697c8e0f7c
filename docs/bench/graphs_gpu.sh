#!/usr/bin/env bash
# Issue 22, third round, on one GPU (about 5 minutes on one H200; LIMIT bounds it): what CUDA graphs
# of whole training passes would give, and the formulations settled by interleaved timing.
#   1. docs/bench/graph_passes.py: each pass eager vs replayed from a CUDA graph, timed alternately;
#   2. `spherehead bench train-step` with every formulation on, each off in turn and all off, the
#      variants timed interleaved (earlier sessions timed them one after another, and two variants
#      running the same code differed by up to 18 %);
#   3. a profile of G's and D's main passes (summed self CUDA time against the pass's time: how far
#      the host bounds it);
#   4. the CUDA tests not yet run on a GPU: the captured step (tests/test_graph_passes.py), the graph
#      replays (tests/test_graphed.py) and the training steps (tests/test_training.py -k two_cuda_steps).
# Results in $OUT/graphs_gpu.tar (more than the 8 files a device call returns), refreshed after every
# step, so a cut-off run still returns the steps it finished; $OUT/steps.txt beside it.
#
#   OUT=/tmp/out bash docs/bench/graphs_gpu.sh
#   OUT=/tmp/out DEVICE=cpu CFG=tiny NEURAL=16 REPEAT=1 LIMIT=3600 bash docs/bench/graphs_gpu.sh   # its CPU check
set -uo pipefail
OUT=${OUT:?set OUT}; DEVICE=${DEVICE:-cuda}; CFG=${CFG:-paper}; NEURAL=${NEURAL:-64}; REPEAT=${REPEAT:-10}
LIMIT=${LIMIT:-300}   # seconds the whole session may take
PY=${PY:-python3}
RESULTS=$OUT; OUT=${WORK:-$HOME/graphs-gpu}    # the steps write here; the tar goes to RESULTS
rm -rf "$OUT"; mkdir -p "$OUT" "$RESULTS"
export PYTHONUNBUFFERED=1 NEURAL DEVICE OUT
t0=$(date +%s)
stamp() {
  echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/steps.txt"
  tar cf "$RESULTS/graphs_gpu.tar" -C "$OUT" . && cp "$OUT/steps.txt" "$RESULTS/steps.txt"
}
# A step starts only while the session is young enough to finish it inside LIMIT.
before() { [ $(( $(date +%s) - t0 )) -lt "$1" ] || { stamp "skipped (past $1 s): $2"; return 1; }; }
left() { echo $(( LIMIT - 5 - ($(date +%s) - t0) )); }
{ git log -1 --format='commit %h (%cs) %s' 2>/dev/null || echo 'commit: not a git checkout'
  [ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c 'import torch, sys; print("torch", torch.__version__, "python", sys.version.split()[0])'; } | tee "$OUT/env.txt"

if [ "$DEVICE" = cuda ]; then
  $PY -m spherehead.ops.build > "$OUT/build.txt" 2>&1; rc=$?
  stamp "kernel build: exit $rc ($(tail -1 "$OUT/build.txt"))"
fi
FAST=fast; [ "$DEVICE" = cuda ] || FAST=reference   # on a CPU only the reference runs

# 1. Eager against graphed, pass by pass.
if before $(( LIMIT - 90 )) 'graph passes'; then
  timeout "$(left)" $PY docs/bench/graph_passes.py "$CFG" mixed "$REPEAT" 2>&1 | tee "$OUT/graph_passes.txt"
  stamp "graph passes: exit ${PIPESTATUS[0]}"
fi
# 2. The formulations, interleaved.
if before $(( LIMIT - 100 )) 'bench variants'; then
  timeout "$(left)" $PY -m spherehead bench train-step --config "$CFG" --batch 4 --neural "$NEURAL" --precision mixed \
    --path $FAST --device "$DEVICE" --repeat "$REPEAT" --variant all --variant no-fast-demod --variant no-fast-fc \
    --variant none 2>&1 | tee "$OUT/bench_variants.txt"
  stamp "bench variants: exit ${PIPESTATUS[0]}"
fi
# 3. Where G's and D's main passes spend their time (prof_<pass>_mixed.txt).
if before $(( LIMIT - 50 )) 'profile g_main, d_main'; then
  timeout "$(left)" $PY docs/bench/profile_passes.py "$CFG" mixed g_main,d_main 2>&1 | tee "$OUT/profile.txt"
  stamp "profile g_main, d_main: exit ${PIPESTATUS[0]}"
fi
# 4. CUDA tests never run on a GPU yet (skipped on a CPU: they are marked cuda).
if before $(( LIMIT - 40 )) 'CUDA tests'; then
  timeout "$(left)" $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_graph_passes.py tests/test_graphed.py tests/test_training.py \
    -k 'graph or replay or two_cuda_steps' > "$OUT/pytest_cuda.txt" 2>&1; rc=$?
  stamp "pytest -m cuda (graphs, training steps): exit $rc ($(tail -1 "$OUT/pytest_cuda.txt"))"
fi
stamp "session done"
