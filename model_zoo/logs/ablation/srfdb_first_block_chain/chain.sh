#!/bin/bash
# The first-block PRFDN chain end to end, one recipe after the other: branch stages 1-7
# (SRFDBs cut from RFDN's first block), merge, pruning (60 fine-tuning steps between pruning
# steps), final fine-tune at 1e-3, fold. Every step resumes where an interrupted run stopped,
# so the script is re-run as it is to continue:
#   OMP_NUM_THREADS=1 nohup bash model_zoo/logs/ablation/srfdb_first_block_chain/chain.sh \
#       >> model_zoo/logs/ablation/srfdb_first_block_chain/chain.log 2>&1 &
cd "$(dirname "$0")/../../../.."
export ESR_SHARED="${ESR_SHARED:-../shared}"
set -ex
date -u
for stage in 1 2 3 4 5 6 7; do
    python train.py --config options/ablation/srfdb_first_block_stage$stage.yaml --resume --no_progress
done
out=experiments/ablation/srfdb_first_block
[ -f $out/parallel_catsplit.pth ] || python reparam.py --config options/ablation/srfdb_first_block_merge.yaml
[ -f $out/prune/pruned.pth ] || python prune.py --config options/ablation/srfdb_first_block_prune_ft60.yaml --resume
python train.py --config options/ablation/srfdb_first_block_final_finetune.yaml --resume --no_progress
[ -f $out/folded.pth ] || python reparam.py --config options/prfdn/fold.yaml \
    --input $out/final_lr1e-3/model_best.pth --output $out/folded.pth
date -u
