#!/usr/bin/env bash
# Multi-GPU scaling of train.py on one host (the figures in docs/performance.md, "Several GPUs"):
# the demo config (128 px) and the paper config (512 px) on 1, 2 and 4 GPUs,
#   - at a fixed global batch (--batch: demo 32, paper 8): the same training, done faster;
#   - at a fixed per-GPU batch (--batch-gpu: demo 32, paper 4, as the released recipes train):
#     more GPUs, a larger global batch;
# with the default gradient exchange (--grad-sync overlap). report.py prints, per run, sec/kimg
# (median of the ticks after the first), nvidia-smi's utilisation and peak memory per GPU and the
# ranks' weight check, and per set the speed-up and the scaling efficiency against 1 GPU
# (sec/kimg on 1 GPU / (K x sec/kimg on K GPUs), for either set).
#
#   bash docs/scaling/multi_gpu.sh [WORKDIR]        # default WORKDIR /tmp/spherehead-scaling
#   CONFIGS=paper bash docs/scaling/multi_gpu.sh    # one config (default: "demo paper")
#   EXTRAS="flat resume nodes" bash ...             # also: the flat exchange at the paper config on
#                                                   # 2 (and 4) GPUs; resume 1 -> N and N -> 1 GPUs;
#                                                   # two torchrun "nodes" of N/2 GPUs on this host
#   DEVICE=cpu bash docs/scaling/multi_gpu.sh DIR   # the script's plumbing on the CPU: tiny config,
#                                                   # gloo, 1 and 2 processes, a few steps, no nvidia-smi
#
# Needs 2 or 4 GPUs (it uses all it sees, up to 4). The default set is 10 training runs of
# 40-90 s each (about 12 minutes with the data and the kernel build); EXTRAS add 2-6 runs.
# Writes WORKDIR/logs (train logs, nvidia-smi samples every 0.5 s), WORKDIR/runs, WORKDIR/plan.txt
# (set, config, run, GPUs, batch per GPU), then report.py's summary: WORKDIR/report.txt and .json.
set -u
R=${1:-/tmp/spherehead-scaling}
DEVICE=${DEVICE:-cuda}
EXTRAS=${EXTRAS:-}
mkdir -p $R/logs
: > $R/plan.txt
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
HERE=$(cd "$(dirname "$0")" && pwd)
declare -A DONE=()

# run TAG K GPUS ARGS...: torchrun (one node) with K processes on the listed GPUs, nvidia-smi sampled meanwhile.
run() {
  local tag=$1 k=$2 gpus=$3; shift 3
  local smi=
  if [ $DEVICE = cuda ]; then
    nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader -lms 500 > $R/logs/smi_$tag.csv &
    smi=$!
  fi
  CUDA_VISIBLE_DEVICES=$gpus torchrun --standalone --nproc_per_node=$k train.py --outdir $R/runs/$tag \
    $COMMON "$@" > $R/logs/train_$tag.txt 2>&1
  local rc=$?
  [ -n "$smi" ] && { kill $smi; wait $smi 2>/dev/null; }
  echo "$tag: exit $rc; $(grep -o '[0-9]* rank(s) x batch [0-9]*' $R/logs/train_$tag.txt | head -1)"
}

# point SET CFG K B ARGS...: run CFG on K GPUs with B images per GPU (once, however many sets list it).
point() {
  local set=$1 cfg=$2 k=$3 b=$4; shift 4
  local tag=$cfg-${k}x$b
  echo "$set $cfg $tag $k $b" >> $R/plan.txt
  [ -n "${DONE[$tag]:-}" ] && return
  DONE[$tag]=1
  run $tag $k $(seq -s, 0 $((k - 1))) --batch-gpu $b "$@"
}

if [ $DEVICE = cuda ]; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader
  N=$(nvidia-smi -L | wc -l); [ $N -ge 4 ] && N=4
  [ $N -ge 2 ] || { echo "needs 2 or 4 GPUs, found $N"; exit 1; }
  COMMON="--workers 4 --grid-seeds 2 --device cuda"
  CONFIGS=${CONFIGS:-demo paper}
  python -m spherehead.ops.build
else
  N=2
  COMMON="--workers 0 --grid-seeds 1 --device cpu"
  CONFIGS=${CONFIGS:-tiny}
  export OMP_NUM_THREADS=1
fi
COUNTS="1 2"; [ $N = 4 ] && COUNTS="1 2 4"
ALL=$(seq -s, 0 $((N - 1)))

# per config: data, training options, fixed global batch, fixed per-GPU batch
for cfg in $CONFIGS; do
  case $cfg in
    demo)  res=128; data="--count 2000 --resolution 128"; G=32; B=32
           opts="--cfg demo --tick 0.5 --snap 100 --seed 0 --kimg 3" ;;
    paper) res=512; data="--count 320 --resolution 512 --supersample 1"; G=8; B=4
           opts="--cfg paper --tick 0.128 --snap 100 --seed 0 --kimg 0.512" ;;
    tiny)  res=64; data="--count 24 --resolution 64"; G=4; B=2
           opts="--cfg tiny --tick 0.008 --snap 100 --seed 0 --kimg 0.024" ;;
    *) echo "unknown config $cfg"; exit 1 ;;
  esac
  [ -f $R/$cfg.zip ] || python -m spherehead dataset synth --out $R/$cfg.zip $data --front-bias 0.3 --seed 0
  O="--data $R/$cfg.zip $opts"
  for k in $COUNTS; do point global $cfg $k $((G / k)) $O; done
  for k in $COUNTS; do point pergpu $cfg $k $B $O; done
  if [[ " $EXTRAS " == *" flat "* && $cfg != demo ]]; then
    for k in $COUNTS; do
      [ $k = 1 ] && continue
      echo "flat $cfg $cfg-${k}x$((G / k))-flat $k $((G / k))" >> $R/plan.txt
      run $cfg-${k}x$((G / k))-flat $k $(seq -s, 0 $((k - 1))) --batch-gpu $((G / k)) --grad-sync flat $O
    done
  fi
  if [[ " $EXTRAS " == *" resume "* ]]; then
    # A resumed run continues in the folder of the state it starts from, at the state's image count.
    run $cfg-resume-1to$N $N $ALL --batch $G $O --resume $(ls $R/runs/$cfg-1x$G/*/training-state-*.pt | tail -1) \
      --kimg $(python -c "print(round(${opts##*--kimg } * 4 / 3, 3))")
    run $cfg-resume-${N}to1 1 0 --batch $G $O --resume $(ls $R/runs/$cfg-${N}x$((G / N))/*/training-state-*.pt | tail -1) \
      --kimg $(python -c "print(round(${opts##*--kimg } * 4 / 3, 3))")
  fi
  if [[ " $EXTRAS " == *" nodes "* && $DEVICE = cuda ]]; then
    # Two nodes: the same command on each node, --node_rank 0 and 1 (here both on this host).
    tag=$cfg-2nodes
    nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader -lms 500 > $R/logs/smi_$tag.csv &
    smi=$!; pids=
    for node in 0 1; do
      CUDA_VISIBLE_DEVICES=$(seq -s, $((node * N / 2)) $((node * N / 2 + N / 2 - 1))) torchrun --nnodes=2 --node_rank=$node \
        --nproc_per_node=$((N / 2)) --master_addr=127.0.0.1 --master_port=29533 train.py --outdir $R/runs/$tag \
        $COMMON --batch $G $O > $R/logs/train_$tag-node$node.txt 2>&1 &
      pids="$pids $!"
    done
    wait $pids; kill $smi
    cp $R/logs/train_$tag-node0.txt $R/logs/train_$tag.txt
    echo "nodes $cfg $tag $N $((G / N))" >> $R/plan.txt
  fi
done

python $HERE/report.py $R | tee $R/report.txt
