#!/usr/bin/env bash
# Multi-GPU scaling of train.py on one host with N = 2 or 4 GPUs (the figures in docs/performance.md):
# the demo config (128 px, global batch 32) and the paper config (512 px, global batch 8) on
# 1, 2 (and 4) GPUs at the same global batch; resume 1 -> N and N -> 1 GPUs from a state;
# two torchrun "nodes" of N/2 GPUs on this host (rendezvous on 127.0.0.1) against one node of N.
#
#   bash docs/scaling/multi_gpu.sh [WORKDIR]       # default WORKDIR /tmp/spherehead-scaling
#   CONFIGS=paper bash docs/scaling/multi_gpu.sh   # only the paper-config runs (default: "demo paper")
#
# Needs 2 or 4 GPUs (it uses all it sees, up to 4) and ~8-12 minutes. Writes WORKDIR/logs (train
# logs, nvidia-smi samples every 0.5 s) and WORKDIR/runs, then prints docs/scaling/report.py's
# summary (also in WORKDIR/report.txt).
set -u
R=${1:-/tmp/spherehead-scaling}
mkdir -p $R/logs
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
HERE=$(cd "$(dirname "$0")" && pwd)

# run TAG NPROC GPUS ARGS...: torchrun (one node) on the listed GPUs, nvidia-smi sampled meanwhile.
run() {
  local tag=$1 k=$2 gpus=$3; shift 3
  nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader -lms 500 > $R/logs/smi_$tag.csv &
  local smi=$!
  CUDA_VISIBLE_DEVICES=$gpus torchrun --standalone --nproc_per_node=$k train.py --outdir $R/runs/$tag --workers 4 \
    --grid-seeds 2 "$@" > $R/logs/train_$tag.txt 2>&1
  local rc=$?
  kill $smi; wait $smi 2>/dev/null
  echo "$tag: exit $rc; $(grep -o 'starting at [0-9.]* kimg' $R/logs/train_$tag.txt | head -1)"
}

nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader
N=$(nvidia-smi -L | wc -l); [ $N -ge 4 ] && N=4
[ $N -ge 2 ] || { echo "needs 2 or 4 GPUs, found $N"; exit 1; }
ALL=$(seq -s, 0 $((N - 1)))                        # 0,1 or 0,1,2,3
HALF0=$(seq -s, 0 $((N / 2 - 1))); HALF1=$(seq -s, $((N / 2)) $((N - 1)))
[ -f $R/demo.zip ] || python -m spherehead dataset synth --out $R/demo.zip --count 2000 --resolution 128 --front-bias 0.3 --seed 0
[ -f $R/paper.zip ] || python -m spherehead dataset synth --out $R/paper.zip --count 320 --resolution 512 --supersample 1 --front-bias 0.3 --seed 0
python -m spherehead.ops.build

CONFIGS=${CONFIGS:-demo paper}
D="--data $R/demo.zip --cfg demo --batch 32 --tick 0.5 --snap 100 --seed 0"
if [[ " $CONFIGS " == *" demo "* ]]; then
run demo-1gpu 1 0 $D --kimg 3
run demo-2gpu 2 0,1 $D --kimg 3
[ $N = 4 ] && run demo-4gpu 4 0,1,2,3 $D --kimg 3
# A resumed run continues in the folder of the state it starts from, at the state's image count.
run demo-resume-1to$N $N $ALL $D --kimg 4 --resume $(ls $R/runs/demo-1gpu/*/training-state-*.pt | tail -1)
run demo-resume-${N}to1 1 0 $D --kimg 4 --resume $(ls $R/runs/demo-${N}gpu/*/training-state-*.pt | tail -1)
fi

P="--data $R/paper.zip --cfg paper --batch 8 --tick 0.128 --snap 100 --seed 0 --kimg 0.384"
if [[ " $CONFIGS " == *" paper "* ]]; then
run paper-1gpu 1 0 $P
run paper-2gpu 2 0,1 $P
[ $N = 4 ] && run paper-4gpu 4 0,1,2,3 $P
fi

# Two nodes: the same command on each node, --node_rank 0 and 1 (here both on this host).
if [[ " $CONFIGS " == *" demo "* ]]; then
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader -lms 500 > $R/logs/smi_demo-2nodes.csv &
smi=$!; pids=
for node in 0 1; do
  CUDA_VISIBLE_DEVICES=$([ $node = 0 ] && echo $HALF0 || echo $HALF1) torchrun --nnodes=2 --node_rank=$node \
    --nproc_per_node=$((N / 2)) --master_addr=127.0.0.1 --master_port=29533 train.py --outdir $R/runs/demo-2nodes \
    --workers 4 --grid-seeds 2 $D --kimg 3 > $R/logs/train_demo-2nodes-node$node.txt 2>&1 &
  pids="$pids $!"
done
wait $pids; kill $smi
cp $R/logs/train_demo-2nodes-node0.txt $R/logs/train_demo-2nodes.txt
python $HERE/report.py $R --compare demo-${N}gpu demo-2nodes | tee $R/report.txt
else
python $HERE/report.py $R | tee $R/report.txt
fi
