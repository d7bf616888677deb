#!/usr/bin/env bash
# Launch a recipe's whole stage graph with torchrun: one process per GPU; every rank runs the same
# stages in the same order (rank 0 writes exports, DONE.json and logs; the others wait at a barrier
# after each export, so the next stage never starts before its init checkpoint exists).
#
#   launch/torchrun.sh recipes/llama2_7b_toolbench.yaml                   # one node, all GPUs
#   launch/torchrun.sh recipes/llama2_13b_toolbench.yaml recipes/strategy/deepspeed_zero3.yaml
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 launch/torchrun.sh recipes/...  # on node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 launch/torchrun.sh recipes/...  # on node 1
#
# The recipe's trainer.devices / trainer.num_nodes are set to match the launcher (appended as
# overrides); a stage that overrides them differently fails at its start with a message naming
# the keys (pipeline/strategy_checks.py).
# Env: NPROC_PER_NODE (default: the number of visible GPUs), NNODES (1), NODE_RANK (0),
#      MASTER_ADDR (127.0.0.1), MASTER_PORT (29500).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 ]]; then
  sed -n '2,17p' "$0"; exit 2
fi
NPROC_PER_NODE=${NPROC_PER_NODE:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
export TOKENIZERS_PARALLELISM=false

exec torchrun \
  --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC_PER_NODE" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  train.py "$@" "trainer.devices=$NPROC_PER_NODE" "trainer.num_nodes=$NNODES"
