#!/usr/bin/env bash
# One GPU session of the study (docs/study.md): make the data (once), build the kernels, train the
# arms side by side for MINUTES, then put the logs and each arm's newest EMA generator under $OUT.
# Run it again to continue: every arm resumes from its newest training state under $ROOT.
#
#   OUT=/tmp/out bash docs/study/gpu_session.sh 8.5          # 8.5 minutes of training (docs/study.md: the runs so far)
#
# Settings (environment): ROOT ($HOME/spherehead-study: outside the checkout, which the device tool
# replaces on every call; a study kept inside it was lost between two calls), KIMG (200), BATCH (64), PARALLEL (5), CFG (demo),
# COUNT (10000 heads), RES (128), MPS (1: share the GPU between the arm processes with CUDA MPS
# when nvidia-cuda-mps-control works here), DEVICE (cuda), SNAPSHOTS (1: bring back each arm's newest EMA
# generator; 0 in the calls before a session's last, to keep the transfer short).
set -uo pipefail
MINUTES=${1:?minutes of training}
ROOT=${ROOT:-$HOME/spherehead-study}; KIMG=${KIMG:-200}; BATCH=${BATCH:-64}; PARALLEL=${PARALLEL:-5}; CFG=${CFG:-demo}
COUNT=${COUNT:-10000}; RES=${RES:-128}; MPS=${MPS:-1}; DEVICE=${DEVICE:-cuda}; OUT=${OUT:?set OUT}
ARMS=${ARMS:-triplane,trigrid,single_sphere,dual_sphere,spherehead}
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
mkdir -p "$ROOT" "$OUT"
t0=$(date +%s)
if ls .whl/*.whl >/dev/null 2>&1; then      # carried wheels (pyspng: fast PNG decoding in the data workers)
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
fi
if [ "$DEVICE" = cuda ] && [ "$MPS" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  pgrep -x nvidia-cuda-mps >/dev/null || nvidia-cuda-mps-control -d
  if timeout 60 $PY -c 'import torch; print("MPS client ok", torch.ones(4, device="cuda").sum().item())'; then
    echo "MPS: on"
  else
    echo "MPS: failed, off"; echo quit | nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
else
  echo "MPS: off"
fi
if [ ! -f "$ROOT/heads.zip" ]; then
  $PY -m spherehead dataset synth --out "$ROOT/heads.zip" --count "$COUNT" --resolution "$RES" --front-bias 0.3 --seed 0 &
fi
[ "$DEVICE" = cuda ] && $PY -m spherehead.ops.build &
wait
echo "set-up took $(( $(date +%s) - t0 )) s"
if [ "$DEVICE" = cuda ]; then nvidia-smi dmon -s um -d 10 > "$ROOT/dmon-$t0.txt" 2>&1 & DMON=$!; fi
$PY -m spherehead study run --data "$ROOT/heads.zip" --out "$ROOT/study" --cfg "$CFG" --kimg "$KIMG" --batch "$BATCH" \
    --parallel "$PARALLEL" --arms "$ARMS" --device "$DEVICE" --max-minutes "$MINUTES" --status-every 60
rc=$?
[ -n "${DMON:-}" ] && kill $DMON
# What comes back: logs, stats, grids, sessions (one archive) and each arm's newest EMA generator.
tar czf "$OUT/study-logs.tgz" "$ROOT"/dmon-*.txt "$ROOT"/study/*.json* "$ROOT"/study/*/train.log \
    "$ROOT"/study/*/*/log.txt "$ROOT"/study/*/*/stats.jsonl "$ROOT"/study/*/*/training_options.json \
    "$ROOT"/study/*/*/fakes-*.png 2>/dev/null
for arm in ${ARMS//,/ }; do
  [ "${SNAPSHOTS:-1}" = 1 ] || break
  snap=$(ls "$ROOT"/study/$arm/*/network-snapshot-*.safetensors 2>/dev/null | sort | tail -1)
  [ -n "$snap" ] && cp "$snap" "$OUT/$arm.safetensors"
done
ls -la "$OUT"
echo "session took $(( $(date +%s) - t0 )) s, study run exit $rc"
exit $rc
