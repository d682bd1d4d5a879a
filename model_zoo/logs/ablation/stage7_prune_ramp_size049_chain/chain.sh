#!/bin/bash
# The shipped ramped chain (../stage7_prune_ramp_chain/chain.sh) pruned to a larger model, near the
# 0.5x size limit: prune the stage-7 merge to 14.85 G hook FLOPs (stage7_prune_ramp_size049.yaml),
# fine-tune 4000 steps at 1e-3 (stage7_prune_ramp_size049_final_finetune.yaml), fold, and give the
# folded model the shipped second fine-tune (stage7_prune_ramp_size049_refine_patch80.yaml). Each
# phase resumes where an interrupted run stopped, so the script is re-run as it is to continue:
#   OMP_NUM_THREADS=2 nohup bash model_zoo/logs/ablation/stage7_prune_ramp_size049_chain/chain.sh \
#       >> model_zoo/logs/ablation/stage7_prune_ramp_size049_chain/chain.log 2>&1 &
cd "$(dirname "$0")/../../../.."
export ESR_SHARED="${ESR_SHARED:-../shared}"
kept=model_zoo/logs/ablation/stage7_prune_ramp_size049_chain
set -ex
date -u
echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
python -m utils.engine.precompute --teacher "$ESR_SHARED/pretrained/rfdn_baseline.pth" \
    --out_dir teacher_outputs/rfdn_x4
merged=experiments/ablation/stage7/parallel_catsplit.pth
[ -f $merged ] || python reparam.py --config options/ablation/stage7_merge.yaml
pruned=experiments/ablation/stage7/prune_ramp_size049/pruned.pth
if [ ! -f $pruned ]; then
    python prune.py --config options/ablation/stage7_prune_ramp_size049.yaml --resume
fi
mkdir -p $kept/prune
cp experiments/ablation/stage7/prune_ramp_size049/{plan.json,prune_log.csv,prune_log.json} $kept/prune/
date -u
run=experiments/ablation/stage7/final_ramp_size049
python train.py --config options/ablation/stage7_prune_ramp_size049_final_finetune.yaml --resume --no_progress
mkdir -p $kept/final
cp $run/log.csv $run/config.yaml $run/curves.png $kept/final/
date -u
python reparam.py --config options/ablation/stage7_prune_ramp_size049_fold.yaml | tee $kept/fold.txt
python train.py --config options/ablation/stage7_prune_ramp_size049_refine_patch80.yaml --resume --no_progress
mkdir -p $kept/refine_patch80
cp $run/refine_patch80/{log.csv,config.yaml,curves.png} $kept/refine_patch80/
date -u
