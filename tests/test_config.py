"""Recipes as YAML files: --config fills the defaults, flags override, the resolved recipe
written beside a run reads back to the same options."""
import argparse

import pytest
import torch

from utils.io.config import ConfigError, parse_with_config, read_config, write_resolved_config


def make_parser():
    p = argparse.ArgumentParser()
    p.add_argument('--input', required=True)
    p.add_argument('--steps', type=int, default=16)
    p.add_argument('--lr', type=float, default=1e-4)
    p.add_argument('--importance', default='l1', choices=['l1', 'taylor'])
    p.add_argument('--data_dir', nargs='+', default=None)
    p.add_argument('--distill', action='store_true')
    p.add_argument('--resume', action='store_true')
    return p


def test_recipe_fills_defaults_and_flags_override(tmp_path):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text('input: a.pth\nsteps: 4\nlr: 5.0e-4\nimportance: taylor\n'
                      'data_dir: [x, y]\ndistill: true\n')
    args = parse_with_config(make_parser(), ['--config', str(recipe), '--steps', '8'])
    assert (args.input, args.steps, args.lr, args.importance) == ('a.pth', 8, 5e-4, 'taylor')
    assert args.data_dir == ['x', 'y'] and args.distill is True


def test_resolved_recipe_repeats_the_run(tmp_path):
    first = parse_with_config(make_parser(), ['--input', 'a.pth', '--steps', '3', '--distill',
                                              '--data_dir', 'd1', 'd2', '--resume'])
    out = tmp_path / 'run' / 'config.yaml'
    write_resolved_config(first, str(out))
    assert 'resume' not in read_config(str(out))       # how a run was invoked is not recorded
    again = parse_with_config(make_parser(), ['--config', str(out)])
    expected = {k: v for k, v in vars(first).items() if k not in ('config', 'resume')}
    assert {k: v for k, v in vars(again).items() if k not in ('config', 'resume')} == expected
    assert again.resume is False


def test_resolved_recipe_records_the_thread_count(tmp_path, monkeypatch):
    # the same recipe at another thread count rounds differently, so the count is written down
    args = parse_with_config(make_parser(), ['--input', 'a.pth'])
    monkeypatch.setenv('OMP_NUM_THREADS', '3')
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        write_resolved_config(args, str(tmp_path / 'config.yaml'))
    finally:
        torch.set_num_threads(before)
    header = (tmp_path / 'config.yaml').read_text().splitlines()[1]
    assert header == (f'# torch {torch.__version__}, 3 CPU threads (OMP_NUM_THREADS=3) '
                      'in the process that wrote this file')
    assert read_config(str(tmp_path / 'config.yaml'))['input'] == 'a.pth'   # a comment, not an option


@pytest.mark.parametrize('text, message', [
    ('steps: [1, 2\n', 'not valid YAML'),
    ('- a\n- b\n', 'must be a mapping'),
    ('stepz: 3\n', 'unknown option "stepz"'),
    ('steps: many\n', 'bad value'),
    ('importance: random\n', 'must be one of l1, taylor'),
])
def test_bad_recipes_are_one_line_errors(tmp_path, text, message):
    recipe = tmp_path / 'bad.yaml'
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=message):
        parse_with_config(make_parser(), ['--config', str(recipe), '--input', 'a.pth'])


def test_recipe_that_is_not_text(tmp_path):
    recipe = tmp_path / 'binary.yaml'
    recipe.write_bytes(b'\xff\xfe\x00')
    with pytest.raises(ConfigError, match='is not a UTF-8 text file'):
        parse_with_config(make_parser(), ['--config', str(recipe), '--input', 'a.pth'])


def test_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match='config file not found'):
        parse_with_config(make_parser(), ['--config', str(tmp_path / 'nope.yaml')])


def test_shared_folder_in_recipes(tmp_path, monkeypatch):
    monkeypatch.setenv('ESR_SHARED', '/data/ref')
    recipe = tmp_path / 'r.yaml'
    recipe.write_text('input: $ESR_SHARED/pretrained/rfdn_baseline.pth\ndata_dir: ["${ESR_SHARED}/train/a"]\n')
    args = parse_with_config(make_parser(), ['--config', str(recipe)])
    assert args.input == '/data/ref/pretrained/rfdn_baseline.pth' and args.data_dir == ['/data/ref/train/a']


def _same_tensors(a, b):
    import torch
    sa = torch.load(a, weights_only=True)
    sb = torch.load(b, weights_only=True)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_merge_recipe_gives_the_tensors_of_the_flags(tmp_path, shared_dir):
    """options/prfdn/merge.yaml (input and output redirected) = the same merge given as flags."""
    import torch

    import reparam
    from models import RFDN, BranchRFDN
    from utils.io.checkpoint import save_state_dict
    torch.manual_seed(0)
    branch = tmp_path / 'branch.pth'
    save_state_dict(BranchRFDN.from_rfdn(RFDN(nf=8)).state_dict(), str(branch))
    image = f'{shared_dir}/benchmark/Set5/LR_bicubic/X4/butterflyx4.png'
    by_flags, by_recipe = tmp_path / 'flags.pth', tmp_path / 'recipe.pth'
    assert reparam.main(['--input', str(branch), '--output', str(by_flags), '--cat-as-conv',
                         '--split-as-conv', '--no_runtime', '--image', image]) == 0
    assert reparam.main(['--config', 'options/prfdn/merge.yaml', '--input', str(branch),
                         '--output', str(by_recipe), '--image', image]) == 0
    assert _same_tensors(by_flags, by_recipe)
    assert 'B.cat_conv.weight' in torch.load(by_recipe, weights_only=True)   # the recipe's options took


@pytest.mark.slow
def test_pruning_run_repeats_from_its_written_recipe(tmp_path):
    """prune.py writes config.yaml beside the run; --config with it gives the same tensors."""
    import torch

    import prune
    from models import RFDN, BranchRFDN
    from utils.compress.reparam import branch_to_parallel
    from utils.io.checkpoint import save_state_dict
    torch.manual_seed(0)
    src = tmp_path / 'parallel.pth'
    save_state_dict(branch_to_parallel(BranchRFDN.from_rfdn(RFDN(nf=12))).state_dict(), str(src))
    first = tmp_path / 'first'
    assert prune.main(['--input', str(src), '--out_dir', str(first), '--steps', '2', '--ratio', '0.4',
                       '--finetune_iters', '0', '--val_hr_dir', 'none', '--no_timing']) == 0
    recipe = read_config(str(first / 'config.yaml'))
    assert recipe['steps'] == 2 and recipe['ratio'] == 0.4 and recipe['input'] == str(src)
    again = tmp_path / 'again'
    assert prune.main(['--config', str(first / 'config.yaml'), '--out_dir', str(again)]) == 0
    assert _same_tensors(first / 'pruned.pth', again / 'pruned.pth')


RECIPE_SCRIPTS = {
    'train': ['prfdn/branch_stage1', 'prfdn/branch_stage2', 'prfdn/branch_stage3', 'prfdn/branch_stage4',
              'prfdn/branch_stage5', 'prfdn/branch_stage6', 'prfdn/branch_stage7', 'prfdn/final_finetune',
              'clb_imdn/imdn7_finetune', 'clb_imdn/clb_64', 'clb_imdn/clb_two_stage', 'rlfn_kp/final',
              'rlfn_kp/final2', 'ablation/srfdb_first_block_stage1', 'ablation/srfdb_first_block_stage2',
              'ablation/srfdb_first_block_stage2_features', 'ablation/srfdb_first_block_stage3',
              'ablation/srfdb_first_block_stage4', 'ablation/srfdb_first_block_stage5',
              'ablation/srfdb_first_block_stage6', 'ablation/srfdb_first_block_stage7',
              'ablation/progressive_branch4', 'ablation/progressive_branch3', 'ablation/progressive_branch2',
              'ablation/srfdb3_first_block_stage1',
              'ablation/srfdb_first_block_final_finetune', 'ablation/srfdb_first_block_final_finetune_teacher_pairs',
              'ablation/srfdb_first_block_refine_patch80', 'ablation/srfdb_first_block_refine_patch80_ema',
              'ablation/stage7_final_finetune', 'ablation/stage7_final_finetune_stored',
              'ablation/stage7_final_finetune_lr5e-4', 'ablation/stage7_final_finetune_lr1e-3',
              'ablation/stage7_final_finetune_lr2e-3',
              'ablation/stage7_prune_ramp_final_finetune', 'ablation/stage7_prune_ramp_final_finetune_lr1e-3',
              'ablation/stage7_prune_ramp_refine_patch80',
              'ablation/stage7_prune_ramp_final_finetune_patch80',
              'ablation/stage7_prune_ramp_size049_final_finetune', 'ablation/stage7_prune_ramp_size049_refine_patch80',
              'ablation/shipped_refine_l1', 'ablation/shipped_refine_teacher_pairs', 'ablation/shipped_refine_patch80',
              'ablation/shipped_refine_l2', 'ablation/shipped_refine_l2_lr1e-5',
              'ablation/shipped_refine_lr1e-3', 'ablation/rfdn_prune_ramp_final_finetune',
              'ablation/rfdn_prune_ramp_round8_final_finetune',
              'ablation/rfdn_prune_ramp_round8_final_finetune_4000', 'ablation/rfdn_cp_refine_patch80',
              'ablation/srfdb_first_block_prune_ramp_final_finetune',
              'ablation/srfdb_first_block_prune_ramp_refine_patch80',
              'ablation/srfdb_first_block_prune_ramp_refine_patch80_expanded',
              'ablation/srfdb_first_block_prune_ramp_final_finetune_expanded'],
    'prune': ['prfdn/prune', 'clb_imdn/block_prune', 'rlfn_kp/kernel', 'rlfn_kp/bias', 'fmp/channel',
              'fmp/weight', 'fmp/total_fixed', 'fmp/total', 'ablation/stage7_prune_ft60',
              'ablation/srfdb_first_block_prune_ft60', 'ablation/srfdb_first_block_prune_ft60_group_norm',
              'ablation/stage7_prune_ramp', 'ablation/stage7_prune_ramp_size049', 'ablation/rfdn_prune_ramp',
              'ablation/rfdn_prune_ramp_round8', 'ablation/srfdb_first_block_prune_ramp'],
    'reparam': ['prfdn/merge', 'prfdn/fold', 'clb_imdn/collapse', 'ablation/stage7_merge',
                'ablation/srfdb_first_block_merge', 'ablation/stage7_prune_ramp_fold',
                'ablation/stage7_prune_ramp_size049_fold', 'ablation/srfdb_first_block_prune_ramp_fold',
                'ablation/srfdb_first_block_prune_ramp_expanded_fold'],
}


def test_every_shipped_recipe_is_read_by_its_script(repo_root):
    """Each file under options/ (but the entry list) belongs to one script and parses with it."""
    import glob
    import os

    import prune
    import reparam
    import train
    parsers = {'train': train.parse_args, 'prune': prune.parse_args, 'reparam': reparam.parse_args}
    listed = {f'{name}.yaml' for names in RECIPE_SCRIPTS.values() for name in names}
    found = {os.path.relpath(p, os.path.join(repo_root, 'options'))
             for p in glob.glob(os.path.join(repo_root, 'options', '*', '*.yaml'))}
    assert found == listed
    for script, names in RECIPE_SCRIPTS.items():
        for name in names:
            args = parsers[script](['--config', os.path.join(repo_root, 'options', f'{name}.yaml')])
            assert args.config.endswith(f'{name}.yaml')
