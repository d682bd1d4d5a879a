#!/bin/bash
# The multiple-of-8 channel-pruned RFDN (../rfdn_direct_round8_chain/chain.sh writes the pruned
# model) fine-tuned over the shipped PRFDN's full 4000 steps. Resumes an interrupted run; re-run as
# it is to continue:
#   OMP_NUM_THREADS=2 nohup bash model_zoo/logs/ablation/rfdn_direct_round8_4000/run.sh \
#       >> model_zoo/logs/ablation/rfdn_direct_round8_4000/run.log 2>&1 &
cd "$(dirname "$0")/../../../.."
export ESR_SHARED="${ESR_SHARED:-../shared}"
kept=model_zoo/logs/ablation/rfdn_direct_round8_4000
run=experiments/ablation/rfdn_direct/final_round8_4000
set -ex
date -u
echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
[ -f experiments/ablation/rfdn_direct/prune_ramp_round8/pruned.pth ] || \
    bash model_zoo/logs/ablation/rfdn_direct_round8_chain/chain.sh
python train.py --config options/ablation/rfdn_prune_ramp_round8_final_finetune_4000.yaml --resume --no_progress
mkdir -p $kept
cp $run/log.csv $run/config.yaml $run/curves.png $kept/
date -u
