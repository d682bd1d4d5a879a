#!/bin/bash
# Progressive branching after the first-block stage 1: detach branch 4, recover; detach branch 3,
# recover; detach branch 2, recover (options/ablation/progressive_branch{4,3,2}.yaml). Each phase
# resumes where an interrupted run stopped, so the script is re-run as it is to continue:
#   OMP_NUM_THREADS=2 nohup bash model_zoo/logs/ablation/progressive_branching/chain.sh \
#       >> model_zoo/logs/ablation/progressive_branching/chain.log 2>&1 &
# A finished phase's model_best.pth is kept beside its logs in branchK/ and copied back where its
# run under experiments/ is missing; the first-block stage 1 hand-off comes from the first-block
# chain's kept weights the same way.
cd "$(dirname "$0")/../../../.."
export ESR_SHARED="${ESR_SHARED:-../shared}"
kept=model_zoo/logs/ablation/progressive_branching
set -ex
date -u
python -m utils.engine.precompute --teacher "$ESR_SHARED/pretrained/rfdn_baseline.pth" \
    --out_dir teacher_outputs/rfdn_x4
stage1=experiments/ablation/srfdb_first_block_stage1
mkdir -p $stage1
cp -n model_zoo/logs/ablation/srfdb_first_block_chain/stage1/model_last.pth $stage1/
for branch in 4 3 2; do
    run=experiments/ablation/progressive_branch$branch
    if [ -f $kept/branch$branch/model_best.pth ]; then
        mkdir -p $run
        cp -n $kept/branch$branch/model_best.pth $run/
        continue
    fi
    python train.py --config options/ablation/progressive_branch$branch.yaml --resume --no_progress
    mkdir -p $kept/branch$branch
    cp $run/log.csv $run/config.yaml $run/curves.png $run/model_best.pth $kept/branch$branch/
done
date -u
