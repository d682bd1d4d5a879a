#!/bin/bash
# The first-block PRFDN chain end to end, one recipe after the other: branch stages 1-7
# (SRFDBs cut from RFDN's first block), merge, pruning (60 fine-tuning steps between pruning
# steps), final fine-tune at 1e-3, fold. Every step resumes where an interrupted run stopped,
# so the script is re-run as it is to continue:
#   OMP_NUM_THREADS=2 nohup bash model_zoo/logs/ablation/srfdb_first_block_chain/chain.sh \
#       >> model_zoo/logs/ablation/srfdb_first_block_chain/chain.log 2>&1 &
# A finished stage's hand-off weights (the file the next stage starts from: model_last.pth of
# stage 1, model_best.pth of stages 2-7) are kept beside its logs in stageN/; a stage that has
# them there is done, and on a machine without its run under experiments/ they are copied back,
# so the chain continues from the last finished stage rather than from stage 1. A stage stopped
# part-way may keep its resume point (state.pth, log.csv, model_best.pth) in stageN/partial/,
# copied back the same way where its run is missing, so --resume continues it from there.
# The pruning and the final fine-tune are kept the same way: prune/ holds the pruned model and its
# logs once pruning is done, prune/partial/ the last completed pruning step (step_XX.pth,
# plan.json, prune_log.*) before; final/ the fine-tune's best model once it is done, final/partial/
# its resume point before.
cd "$(dirname "$0")/../../../.."
export ESR_SHARED="${ESR_SHARED:-../shared}"
kept=model_zoo/logs/ablation/srfdb_first_block_chain
set -ex
date -u
# stages 3-7 and the final fine-tune read the teacher's outputs from this store; writing it skips
# the outputs already there
python -m utils.engine.precompute --teacher "$ESR_SHARED/pretrained/rfdn_baseline.pth" \
    --out_dir teacher_outputs/rfdn_x4
for stage in 1 2 3 4 5 6 7; do
    run=experiments/ablation/srfdb_first_block_stage$stage
    if ls $kept/stage$stage/*.pth > /dev/null 2>&1; then
        mkdir -p $run
        cp -n $kept/stage$stage/*.pth $run/
        continue
    fi
    if [ ! -f $run/state.pth ] && [ -f $kept/stage$stage/partial/state.pth ]; then
        mkdir -p $run
        cp $kept/stage$stage/partial/* $run/
    fi
    python train.py --config options/ablation/srfdb_first_block_stage$stage.yaml --resume --no_progress
done
out=experiments/ablation/srfdb_first_block
final=$out/final_lr1e-3
mkdir -p $out/prune $final
if [ ! -f $out/prune/pruned.pth ]; then
    if [ -f $kept/prune/pruned.pth ]; then
        find $kept/prune -maxdepth 1 -type f -exec cp {} $out/prune/ \;
    elif ! ls $out/prune/step_*.pth > /dev/null 2>&1 && ls $kept/prune/partial/step_*.pth > /dev/null 2>&1; then
        cp $kept/prune/partial/* $out/prune/
    fi
fi
if [ ! -f $out/prune/pruned.pth ]; then
    # the merge is exact and deterministic: re-running it gives the same parallel model
    [ -f $out/parallel_catsplit.pth ] || python reparam.py --config options/ablation/srfdb_first_block_merge.yaml
    python prune.py --config options/ablation/srfdb_first_block_prune_ft60.yaml --resume
fi
if [ -f $kept/final/model_best.pth ]; then
    cp -n $kept/final/model_best.pth $final/
else
    if [ ! -f $final/state.pth ] && [ -f $kept/final/partial/state.pth ]; then
        cp $kept/final/partial/* $final/
    fi
    python train.py --config options/ablation/srfdb_first_block_final_finetune.yaml --resume --no_progress
fi
[ -f $out/folded.pth ] || python reparam.py --config options/prfdn/fold.yaml \
    --input $final/model_best.pth --output $out/folded.pth
date -u
