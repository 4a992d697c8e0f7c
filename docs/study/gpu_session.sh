#!/usr/bin/env bash
# One GPU session of the study (docs/study.md): make the data (once), build the kernels, train the
# arms side by side for MINUTES, then put the logs and each arm's newest EMA generator under $OUT.
# Run it again to continue: every arm resumes from its newest training state under $ROOT.
#
#   OUT=/tmp/out bash docs/study/gpu_session.sh 8.5          # 8.5 minutes of training (docs/study.md: the runs so far)
#   OUT=/tmp/out PACK_ARMS=triplane,trigrid bash docs/study/gpu_session.sh 0     # no training: pack two arms' states
#   OUT=/tmp/out PACKS=packs bash docs/study/gpu_session.sh 8.5   # a new machine: unpack the carried parts, train
#
# Moving the study between sessions (docs/study.md, "Moving a study between machines"): PACK_ARMS
# (a comma list, or all) packs those arms' newest training states after training into $OUT/pack
# (`spherehead study pack`: about 23 MB per demo arm, 2 parts of at most PART_MIB + a manifest, and
# study-common.json). A call brings back at most 8 files, 64 MiB in all, so pack 2 demo arms per call
# (6 files + study-common.json + study-logs.tgz = 8); SNAPSHOTS defaults to 0 when PACK_ARMS is set.
# PACKS (a folder of the checkout, carried into the call) is copied into $ROOT/packs (accumulating
# over the calls while the machine stays warm); when $ROOT/study lacks the state of an arm,
# `spherehead study unpack $ROOT/packs --out $ROOT/study` runs first, and training is skipped while
# an arm's parts are incomplete (it would start that arm from zero). MINUTES=0: no training (and no
# data or kernel set-up): a call that only unpacks and/or packs.
#
# Settings (environment): ROOT ($HOME/spherehead-study: outside the checkout, which the device tool
# replaces on every call; a study kept inside it was lost between two calls), KIMG (200), BATCH (64), PARALLEL (5), CFG (demo),
# COUNT (10000 heads), RES (128), MPS (1: share the GPU between the arm processes with CUDA MPS
# when nvidia-cuda-mps-control works here), DEVICE (cuda), SNAPSHOTS (1: bring back each arm's newest EMA
# generator; 0 in the calls before a session's last, to keep the transfer short), PACKS, PACK_ARMS, PART_MIB
# (15.9: a part stays under the 16 MiB a returned file may have).
set -uo pipefail
MINUTES=${1:?minutes of training (0: none)}
PACKS=${PACKS:-}; PACK_ARMS=${PACK_ARMS:-}; PART_MIB=${PART_MIB:-15.9}; URC=0
if [ -n "$PACK_ARMS" ]; then SNAPSHOTS=${SNAPSHOTS:-0}; fi
TRAIN=1; [ "$(awk -v m="$MINUTES" 'BEGIN{print (m > 0)}')" = 1 ] || TRAIN=0
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
if [ -n "$PACKS" ]; then     # carried parts: accumulate them; unpack when an arm has no state here yet
  mkdir -p "$ROOT/packs" && cp -f "$PACKS"/* "$ROOT/packs/" && echo "packs: $(ls "$ROOT/packs" | wc -l) file(s) in $ROOT/packs"
  without_state() { for arm in ${ARMS//,/ }; do ls "$ROOT"/study/$arm/*/training-state-*.pt >/dev/null 2>&1 || echo -n " $arm"; done; }
  if [ -n "$(without_state)" ]; then
    $PY -m spherehead study unpack "$ROOT/packs" --out "$ROOT/study"
  fi
  missing=$(without_state)
  if [ -n "$missing" ]; then   # an arm without its state would start from zero
    echo "no state yet for:$missing; no training in this call (carry their parts in)"; TRAIN=0; URC=1
  fi
fi
if [ $TRAIN = 1 ] && [ ! -f "$ROOT/heads.zip" ]; then
  $PY -m spherehead dataset synth --out "$ROOT/heads.zip" --count "$COUNT" --resolution "$RES" --front-bias 0.3 --seed 0 &
fi
[ $TRAIN = 1 ] && [ "$DEVICE" = cuda ] && $PY -m spherehead.ops.build &
wait
echo "set-up took $(( $(date +%s) - t0 )) s"
rc=$URC
if [ $TRAIN = 1 ]; then
  if [ "$DEVICE" = cuda ]; then nvidia-smi dmon -s um -d 10 > "$ROOT/dmon-$t0.txt" 2>&1 & DMON=$!; fi
  $PY -m spherehead study run --data "$ROOT/heads.zip" --out "$ROOT/study" --cfg "$CFG" --kimg "$KIMG" --batch "$BATCH" \
      --parallel "$PARALLEL" --arms "$ARMS" --device "$DEVICE" --max-minutes "$MINUTES" --status-every 60
  rc=$?
  [ -n "${DMON:-}" ] && kill $DMON
else
  echo "no training in this call (MINUTES=$MINUTES)"
fi
if [ -n "$PACK_ARMS" ]; then   # the resume states, compact and split, to carry into a later session
  $PY -m spherehead study pack "$ROOT/study" --out "$OUT/pack" --arms "$PACK_ARMS" --part-mib "$PART_MIB" || rc=1
fi
# What comes back: logs, stats, grids, sessions (one archive) and each arm's newest EMA generator.
tar czf "$OUT/study-logs.tgz" "$ROOT"/dmon-*.txt "$ROOT"/study/*.json* "$ROOT"/study/*/train.log \
    "$ROOT"/study/*/*/log.txt "$ROOT"/study/*/*/stats.jsonl "$ROOT"/study/*/*/training_options.json \
    "$ROOT"/study/*/*/fakes-*.png 2>/dev/null
for arm in ${ARMS//,/ }; do
  [ "${SNAPSHOTS:-1}" = 1 ] || break
  snap=$(ls "$ROOT"/study/$arm/*/network-snapshot-*.safetensors 2>/dev/null | sort | tail -1)
  [ -n "$snap" ] && cp "$snap" "$OUT/$arm.safetensors"
done
ls -laR "$OUT"
n=$(find "$OUT" -type f | wc -l); mib=$(( $(du -sb "$OUT" | cut -f1) / 1048576 ))
[ "$n" -le 8 ] && [ "$mib" -lt 64 ] || echo "WARNING: $n files, $mib MiB under \$OUT; at most 8 files and 64 MiB come back (fewer PACK_ARMS, SNAPSHOTS=0)"
echo "session took $(( $(date +%s) - t0 )) s, exit $rc (study run / unpack / pack)"
exit $rc
