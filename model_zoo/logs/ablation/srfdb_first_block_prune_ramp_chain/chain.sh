#!/bin/bash
# The first-block branch model (srfdb_first_block_chain/, stage 7) through the ramped pruning
# schedule: merge (srfdb_first_block_merge.yaml), prune with 20 -> 100 fine-tuning steps after the
# 16 pruning steps (srfdb_first_block_prune_ramp.yaml), fine-tune 4000 steps at 1e-3
# (srfdb_first_block_prune_ramp_final_finetune.yaml), fold, and the second, short fine-tune on 80²
# patches (srfdb_first_block_prune_ramp_refine_patch80.yaml). Each phase resumes where an
# interrupted run stopped, so the script is re-run as it is to continue:
#   OMP_NUM_THREADS=2 nohup bash model_zoo/logs/ablation/srfdb_first_block_prune_ramp_chain/chain.sh \
#       >> model_zoo/logs/ablation/srfdb_first_block_prune_ramp_chain/chain.log 2>&1 &
# What a phase hands on is kept beside the logs (prune/pruned.pth, final/model_best.pth); a phase
# stopped part-way may keep its resume point in prune/partial/ or final/partial/, copied back
# where its run under experiments/ is missing.
cd "$(dirname "$0")/../../../.."
export ESR_SHARED="${ESR_SHARED:-../shared}"
kept=model_zoo/logs/ablation/srfdb_first_block_prune_ramp_chain
out=experiments/ablation/srfdb_first_block
final=$out/final_ramp_lr1e-3
set -ex
date -u
echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
python -m utils.engine.precompute --teacher "$ESR_SHARED/pretrained/rfdn_baseline.pth" \
    --out_dir teacher_outputs/rfdn_x4
# the branch model, kept by the first-block chain
mkdir -p experiments/ablation/srfdb_first_block_stage7 $out/prune_ramp $final
cp -n model_zoo/logs/ablation/srfdb_first_block_chain/stage7/model_best.pth \
    experiments/ablation/srfdb_first_block_stage7/
if [ ! -f $out/prune_ramp/pruned.pth ]; then
    if [ -f $kept/prune/pruned.pth ]; then
        find $kept/prune -maxdepth 1 -type f -exec cp {} $out/prune_ramp/ \;
    elif ! ls $out/prune_ramp/step_*.pth > /dev/null 2>&1 && ls $kept/prune/partial/step_*.pth > /dev/null 2>&1; then
        cp $kept/prune/partial/* $out/prune_ramp/
    fi
fi
if [ ! -f $out/prune_ramp/pruned.pth ]; then
    # the merge is exact and deterministic: re-running it gives the same parallel model
    [ -f $out/parallel_catsplit.pth ] || python reparam.py --config options/ablation/srfdb_first_block_merge.yaml
    python prune.py --config options/ablation/srfdb_first_block_prune_ramp.yaml --resume
fi
mkdir -p $kept/prune
cp $out/prune_ramp/{config.yaml,plan.json,prune_log.csv,prune_log.json,pruned.pth} $kept/prune/
cp $out/prune_ramp/*.png $kept/prune/ 2>/dev/null || true
date -u
if [ -f $kept/final/model_best.pth ]; then
    cp -n $kept/final/model_best.pth $final/
else
    if [ ! -f $final/state.pth ] && [ -f $kept/final/partial/state.pth ]; then
        cp $kept/final/partial/* $final/
    fi
    python train.py --config options/ablation/srfdb_first_block_prune_ramp_final_finetune.yaml --resume --no_progress
    mkdir -p $kept/final
    cp $final/log.csv $final/config.yaml $final/curves.png $final/model_best.pth $kept/final/
fi
[ -f $final/folded.pth ] || python reparam.py --config options/ablation/srfdb_first_block_prune_ramp_fold.yaml
date -u
python train.py --config options/ablation/srfdb_first_block_prune_ramp_refine_patch80.yaml --resume --no_progress
mkdir -p $kept/refine_patch80
cp $final/refine_patch80/{log.csv,config.yaml,curves.png,model_best.pth} $kept/refine_patch80/
date -u
