#!/usr/bin/env bash
# Issue 22 on one GPU (under 4 minutes on one H200): the training step before this round's
# formulations, with each of them off in turn, and with all on (R1's convolution autograd,
# spherehead.ops.conv_autograd; the demodulation and dense-layer formulas, networks/layers.py);
# cuDNN autotuning off/on x TF32 torch-default/off with all on; a profile of the R1 pass; CUDA
# tests (conv_autograd, fast layers, two training steps); with time left, before/after under both
# gradient exchanges (--grad-sync flat|overlap). Results under $OUT.
#
#   OUT=/tmp/out bash docs/bench/r1_flags_gpu.sh
#   OUT=/tmp/out DEVICE=cpu CFG=tiny NEURAL=16 REPEAT=1 LIMIT=3600 bash docs/bench/r1_flags_gpu.sh   # its CPU check
#
# Order: the kernels build while the CUDA tests of conv_autograd and the fast layers run (those use
# the PyTorch FIR and bias_act, so they need no kernel); then the timings (the figures that matter come first, so a
# cut-off run still returns them), the R1 profile, two training steps on CUDA, and the gradient
# exchanges.
set -uo pipefail
OUT=${OUT:?set OUT}; DEVICE=${DEVICE:-cuda}; CFG=${CFG:-paper}; NEURAL=${NEURAL:-64}; REPEAT=${REPEAT:-10}
LIMIT=${LIMIT:-240}   # seconds the whole session may take
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 NEURAL
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/steps.txt"; }
# Steps 3, 4 and 5 start only while the session is young enough to finish them inside LIMIT.
before() { [ $(( $(date +%s) - t0 )) -lt "$1" ] || { stamp "skipped (past $1 s): $2"; return 1; }; }
{ git log -1 --format='commit %h (%cs) %s' 2>/dev/null || echo 'commit: not a git checkout'
  [ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c 'import torch, sys; print("torch", torch.__version__, "python", sys.version.split()[0])'; } | tee "$OUT/env.txt"

if [ "$DEVICE" = cuda ]; then $PY -m spherehead.ops.build > "$OUT/build.txt" 2>&1 & BUILD=$!; fi
SPHEREHEAD_NO_CUDA_KERNELS=1 $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_conv_autograd.py \
  tests/test_fast_layers.py > "$OUT/pytest_conv_layers.txt" 2>&1; rc=$?
stamp "pytest -m cuda tests/test_conv_autograd.py tests/test_fast_layers.py: exit $rc ($(tail -1 "$OUT/pytest_conv_layers.txt"))"
if [ -n "${BUILD:-}" ]; then wait $BUILD; rc=$?; stamp "kernel build: exit $rc ($(tail -1 "$OUT/build.txt"))"; fi

# The fast path (CUDA kernels); on a CPU only the reference runs (bench refuses --path fast there).
FAST=fast; [ "$DEVICE" = cuda ] || FAST=reference
BENCH=($PY -m spherehead bench train-step --config "$CFG" --batch 4 --neural "$NEURAL" --precision mixed --path $FAST
       --device "$DEVICE" --repeat "$REPEAT")
# 1. Before (none), each formulation off in turn, all on; torch's default flags.
"${BENCH[@]}" --variant none --variant no-conv-autograd --variant no-fast-demod --variant no-fast-fc --variant all \
  2>&1 | tee "$OUT/bench_variants.txt"; rc=${PIPESTATUS[0]}
stamp "bench variants: exit $rc"
# 2. The released flags, all formulations on: cuDNN autotuning off/on x TF32 torch's default/off.
"${BENCH[@]}" --cudnn-benchmark off --cudnn-benchmark on --tf32 torch --tf32 off 2>&1 | tee "$OUT/bench_flags.txt"
rc=${PIPESTATUS[0]}; stamp "bench flags: exit $rc"
# 3. Where R1's time goes now (torch.profiler table, prof_d_r1_mixed.txt).
if before $(( LIMIT - 50 )) 'profile d_r1'; then
  $PY docs/bench/profile_passes.py "$CFG" mixed d_r1 2>&1 | tee "$OUT/profile.txt"; rc=${PIPESTATUS[0]}
  stamp "profile d_r1: exit $rc"
fi
# 4. Two training steps on CUDA with mixed precision (step 0 runs R1 through the kernels and conv_autograd).
if before $(( LIMIT - 60 )) 'two training steps'; then
  timeout $(( LIMIT - 5 - ($(date +%s) - t0) )) $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_training.py \
    -k 'two_cuda_steps and mixed' > "$OUT/pytest_training.txt" 2>&1; rc=$?
  stamp "pytest -m cuda tests/test_training.py -k 'two_cuda_steps and mixed': exit $rc ($(tail -1 "$OUT/pytest_training.txt"))"
fi
# 5. Only with time left (about 45 s): before (none) and all on under both gradient exchanges
# (issue 25; one GPU exchanges nothing, the modes differ in their buffers and bookkeeping), timed
# interleaved; ties the figures of step 1 (default: overlap) to the flat path of earlier sessions.
if before $(( LIMIT - 55 )) 'bench variants x grad-sync'; then
  timeout $(( LIMIT - 5 - ($(date +%s) - t0) )) "${BENCH[@]}" --variant none --variant all --grad-sync flat \
    --grad-sync overlap 2>&1 | tee "$OUT/bench_grad_sync.txt"; rc=${PIPESTATUS[0]}
  stamp "bench variants x grad-sync: exit $rc"
fi
ls -la "$OUT"
