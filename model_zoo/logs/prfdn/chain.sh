#!/bin/bash
# PRFDN steps 4-5 from the stage-4 branch model, pruned to a FLOPs budget (geometric schedule)
cd /work/main
set -ex
python prune.py --input experiments/prfdn4/parallel_catsplit.pth --out_dir experiments/prfdn5/prune \
    --steps 16 --target_flops 14.3e9 --importance taylor --finetune_iters 30 --distill \
    --teacher experiments/branch_stage4/model_best.pth --lr 1e-4
python train.py --model ParallelRFDN --pretrained experiments/prfdn5/prune/pruned.pth \
    --teacher ../shared/pretrained/rfdn_baseline.pth --distill output --distill_weight 1 --pixel_weight 1 \
    --lr 2e-4 --scheduler cosine --iters 3200 --batch_size 16 --patch_size 64 --val_every 200 \
    --save_every 50 --plot --profile --no_progress --out_dir experiments/prfdn5/final
echo done
