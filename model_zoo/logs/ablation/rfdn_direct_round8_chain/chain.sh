#!/bin/bash
# No branching, widths a multiple of 8: prune the official RFDN with the shipped pruning recipe and
# round_to 8 (rfdn_prune_ramp_round8.yaml), then fine-tune 2400 steps at 1e-3
# (rfdn_prune_ramp_round8_final_finetune.yaml). Each phase resumes where an interrupted run
# stopped, so the script is re-run as it is to continue:
#   OMP_NUM_THREADS=2 nohup bash model_zoo/logs/ablation/rfdn_direct_round8_chain/chain.sh \
#       >> model_zoo/logs/ablation/rfdn_direct_round8_chain/chain.log 2>&1 &
cd "$(dirname "$0")/../../../.."
export ESR_SHARED="${ESR_SHARED:-../shared}"
kept=model_zoo/logs/ablation/rfdn_direct_round8_chain
set -ex
date -u
echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
python -m utils.engine.precompute --teacher "$ESR_SHARED/pretrained/rfdn_baseline.pth" \
    --out_dir teacher_outputs/rfdn_x4
pruned=experiments/ablation/rfdn_direct/prune_ramp_round8/pruned.pth
if [ ! -f $pruned ]; then
    python prune.py --config options/ablation/rfdn_prune_ramp_round8.yaml --resume
fi
mkdir -p $kept/prune
cp experiments/ablation/rfdn_direct/prune_ramp_round8/{plan.json,prune_log.csv,prune_log.json} $kept/prune/
date -u
run=experiments/ablation/rfdn_direct/final_round8
python train.py --config options/ablation/rfdn_prune_ramp_round8_final_finetune.yaml --resume --no_progress
mkdir -p $kept/final
cp $run/log.csv $run/config.yaml $run/curves.png $kept/final/
date -u
