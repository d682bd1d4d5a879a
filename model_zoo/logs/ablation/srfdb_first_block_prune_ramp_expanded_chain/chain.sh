#!/bin/bash
# The first-block chain's ramped pruning (srfdb_first_block_prune_ramp_chain/, prune/pruned.pth),
# fine-tuned with every conv kernel over-parametrized (train.py --expand_kernels 2:
# srfdb_first_block_prune_ramp_final_finetune_expanded.yaml, 4000 steps at 1e-3), then folded
# (srfdb_first_block_prune_ramp_expanded_fold.yaml). Re-run as it is to continue an interrupted run:
#   OMP_NUM_THREADS=2 nohup bash model_zoo/logs/ablation/srfdb_first_block_prune_ramp_expanded_chain/chain.sh \
#       >> model_zoo/logs/ablation/srfdb_first_block_prune_ramp_expanded_chain/chain.log 2>&1 &
# The fine-tune's resume point may be kept in final/partial/ (state.pth, log.csv, model_best.pth),
# copied back where its run under experiments/ is missing.
cd "$(dirname "$0")/../../../.."
export ESR_SHARED="${ESR_SHARED:-../shared}"
pruned_chain=model_zoo/logs/ablation/srfdb_first_block_prune_ramp_chain
kept=model_zoo/logs/ablation/srfdb_first_block_prune_ramp_expanded_chain
out=experiments/ablation/srfdb_first_block
final=$out/final_ramp_lr1e-3_expanded
set -ex
date -u
echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
python -m utils.engine.precompute --teacher "$ESR_SHARED/pretrained/rfdn_baseline.pth" \
    --out_dir teacher_outputs/rfdn_x4
mkdir -p $out/prune_ramp $final
cp -n $pruned_chain/prune/pruned.pth $out/prune_ramp/
if [ -f $kept/final/model_best.pth ]; then
    cp -n $kept/final/model_best.pth $final/
else
    if [ ! -f $final/state.pth ] && [ -f $kept/final/partial/state.pth ]; then
        cp $kept/final/partial/* $final/
    fi
    python train.py --config options/ablation/srfdb_first_block_prune_ramp_final_finetune_expanded.yaml \
        --resume --no_progress
    mkdir -p $kept/final
    cp $final/log.csv $final/config.yaml $final/curves.png $final/model_best.pth $kept/final/
fi
[ -f $final/folded.pth ] || python reparam.py --config options/ablation/srfdb_first_block_prune_ramp_expanded_fold.yaml
date -u
