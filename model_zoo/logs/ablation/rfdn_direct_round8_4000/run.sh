#!/bin/bash
# RFDN-CP, shipped as team01_RFDNCP: the official RFDN channel-pruned to multiple-of-8 widths
# (options/ablation/rfdn_prune_ramp_round8.yaml), then fine-tuned over the shipped PRFDN's full
# 4000 steps (rfdn_prune_ramp_round8_final_finetune_4000.yaml). Each phase resumes where an
# interrupted run stopped; re-run as it is to continue:
#   OMP_NUM_THREADS=2 nohup bash model_zoo/logs/ablation/rfdn_direct_round8_4000/run.sh \
#       >> model_zoo/logs/ablation/rfdn_direct_round8_4000/run.log 2>&1 &
cd "$(dirname "$0")/../../../.."
export ESR_SHARED="${ESR_SHARED:-../shared}"
kept=model_zoo/logs/ablation/rfdn_direct_round8_4000
pruning=experiments/ablation/rfdn_direct/prune_ramp_round8
run=experiments/ablation/rfdn_direct/final_round8_4000
set -ex
date -u
echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
python -m utils.engine.precompute --teacher "$ESR_SHARED/pretrained/rfdn_baseline.pth" \
    --out_dir teacher_outputs/rfdn_x4
if [ ! -f $pruning/pruned.pth ]; then
    python prune.py --config options/ablation/rfdn_prune_ramp_round8.yaml --resume
fi
mkdir -p $kept/prune
cp $pruning/{plan.json,prune_log.csv,prune_log.json,config.yaml} $kept/prune/
date -u
python train.py --config options/ablation/rfdn_prune_ramp_round8_final_finetune_4000.yaml --resume --no_progress
cp $run/log.csv $run/config.yaml $run/curves.png $kept/
date -u
