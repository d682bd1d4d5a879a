#!/bin/bash
# RFDN-CP's second, short fine-tune on 80² patches (options/ablation/rfdn_cp_refine_patch80.yaml),
# from the shipped model_zoo/team01_RFDNCP.pth. Resumes where an interrupted run stopped:
#   OMP_NUM_THREADS=2 nohup bash model_zoo/logs/ablation/rfdn_cp_refine_patch80/run.sh \
#       >> model_zoo/logs/ablation/rfdn_cp_refine_patch80/run.log 2>&1 &
cd "$(dirname "$0")/../../../.."
export ESR_SHARED="${ESR_SHARED:-../shared}"
kept=model_zoo/logs/ablation/rfdn_cp_refine_patch80
run=experiments/ablation/rfdn_direct/refine_patch80
set -ex
date -u
echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
python -m utils.engine.precompute --teacher "$ESR_SHARED/pretrained/rfdn_baseline.pth" \
    --out_dir teacher_outputs/rfdn_x4
python train.py --config options/ablation/rfdn_cp_refine_patch80.yaml --resume --no_progress
cp $run/log.csv $run/config.yaml $run/curves.png $kept/
date -u
