#!/bin/bash
# The ramped pruning schedule carried through the final fine-tune: merge the committed stage-7
# branch model (options/ablation/stage7_merge.yaml), prune it with 20 -> 100 fine-tuning steps
# after the 16 pruning steps (stage7_prune_ramp.yaml), fine-tune the result 4000 steps at 1e-3
# (stage7_prune_ramp_final_finetune_lr1e-3.yaml). Each phase resumes where an interrupted run
# stopped, so the script is re-run as it is to continue:
#   OMP_NUM_THREADS=2 nohup bash model_zoo/logs/ablation/stage7_prune_ramp_chain/chain.sh \
#       >> model_zoo/logs/ablation/stage7_prune_ramp_chain/chain.log 2>&1 &
cd "$(dirname "$0")/../../../.."
export ESR_SHARED="${ESR_SHARED:-../shared}"
kept=model_zoo/logs/ablation/stage7_prune_ramp_chain
set -ex
date -u
echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
python -m utils.engine.precompute --teacher "$ESR_SHARED/pretrained/rfdn_baseline.pth" \
    --out_dir teacher_outputs/rfdn_x4
merged=experiments/ablation/stage7/parallel_catsplit.pth
[ -f $merged ] || python reparam.py --config options/ablation/stage7_merge.yaml
pruned=experiments/ablation/stage7/prune_ramp/pruned.pth
if [ ! -f $pruned ]; then
    python prune.py --config options/ablation/stage7_prune_ramp.yaml --resume
fi
mkdir -p $kept/prune
cp experiments/ablation/stage7/prune_ramp/{plan.json,prune_log.csv,prune_log.json,pruned.pth} $kept/prune/
date -u
python train.py --config options/ablation/stage7_prune_ramp_final_finetune_lr1e-3.yaml --resume --no_progress
mkdir -p $kept/final
run=experiments/ablation/stage7/final_ramp_lr1e-3
cp $run/log.csv $run/config.yaml $run/curves.png $run/model_best.pth $kept/final/
date -u
