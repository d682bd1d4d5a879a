"""ONNX export matches PyTorch; the widths literal rebuilds the same model; NTIRE entry files are
standalone and exact for every architecture family they cover."""
import os

import numpy as np
import pytest
import torch
from refusals import user_error

from models import RFDN, BranchRFDN
from utils.compress.export import OnnxSR, conv_specs, export_onnx, onnx_max_difference
from utils.compress.reparam import branch_to_parallel
from utils.io.errors import UserError


def test_onnx_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = branch_to_parallel(BranchRFDN.from_rfdn(RFDN(nf=8)))
    path = str(tmp_path / 'm.onnx')
    export_onnx(model, path)
    lr = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    assert onnx_max_difference(model, path, lr) < 1e-3       # dynamic H, W: not the export size
    sr = OnnxSR(path, model.scale)(torch.rand(1, 3, 20, 20) * 255)
    assert sr.shape == (1, 3, 80, 80)


def test_conv_specs_rebuild():
    from models.blocks import apply_conv_overrides
    torch.manual_seed(0)
    model = RFDN(nf=8)
    apply_conv_overrides(model, {'B1.c1_d': (8, 3, 1, True), 'B1.c5': (15, 8, 1, True)})
    rebuilt = RFDN(nf=8, conv_overrides=conv_specs(model))
    assert conv_specs(rebuilt) == conv_specs(model)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_ntire_score():
    from utils.metrics.score import ntire_score
    base = {'runtime_256': 100.0, 'flops': 20.0, 'num_parameters': 0.4}
    assert abs(ntire_score(base, base)['total'] - np.exp(2)) < 1e-9
    half = {'runtime_256': 50.0, 'flops': 10.0, 'num_parameters': 0.2}
    assert abs(ntire_score(half, base)['total'] - np.exp(1)) < 1e-9


def _import_file(path):
    """The module of the file `path`, imported alone (not as part of this repository's packages)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'entry_{os.path.basename(path)[:-3]}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _imported_roots(path) -> set:
    """Top-level names of every module the file imports (relative imports as '.')."""
    import ast
    roots = set()
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add('.' if node.level else node.module.split('.')[0])
    return roots


def _family_model(family):
    """A small model of each architecture the entry templates cover, random weights."""
    from models import CLBIMDN, IMDN, RLFN, RLFN_NTIRE2022
    from utils.compress.collapse import collapse_model
    from utils.compress.kernel_pruning import bias_prune, replace_with_1x1
    if family == 'RFDN-pruned':        # irregular widths, as FMP-RFDN ships it
        return RFDN(nf=8, num_modules=2, upscale=2,
                    conv_overrides={'B1.c1_d': (8, 3, 1, True), 'B1.c5': (15, 8, 1, True)})
    if family.startswith('ParallelRFDN'):
        options = {'ParallelRFDN-plain': {},
                   'ParallelRFDN-conv-split': dict(cat_as_conv=True, split_as_conv=True),
                   'ParallelRFDN-grouped': dict(grouped=True),
                   'ParallelRFDN-grouped-conv': dict(grouped=True, cat_as_conv=True),
                   'ParallelRFDN-srfdb2': {}}[family]
        steps = 2 if family.endswith('srfdb2') else 1
        return branch_to_parallel(BranchRFDN.from_rfdn(RFDN(nf=8, num_modules=3), srfdb_steps=steps), **options)
    if family == 'RLFN-KP':            # kernel- and bias-pruned, as AdvancedSR ships it
        model = RLFN(feature_channels=12, mid_channels=10, esa_channels=4, num_blocks=2, upscale=2)
        replace_with_1x1(model, ['block_2.c2_r', 'conv_2', 'upsampler.0'])
        bias_prune(model)
        return model
    if family == 'RLFN_NTIRE2022':
        return RLFN_NTIRE2022(feature_channels=8, mid_channels=6, esa_channels=4, num_blocks=2)
    if family == 'IMDN':
        return IMDN(nc=12, nb=2, upscale=2)
    # CLB-IMDN trained form with non-zero 1×1 branches, collapsed into a plain IMDN
    model = CLBIMDN(nc=12, nb=2, upscale=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.conv1x1.' in name:
                p.normal_(0, 0.1)
    return collapse_model(model)


ENTRY_FAMILIES = ['RFDN-pruned', 'ParallelRFDN-plain', 'ParallelRFDN-conv-split', 'ParallelRFDN-grouped',
                  'ParallelRFDN-grouped-conv', 'ParallelRFDN-srfdb2', 'RLFN-KP', 'RLFN_NTIRE2022', 'IMDN',
                  'CLBIMDN-collapsed']


@pytest.mark.parametrize('family', ENTRY_FAMILIES)
def test_entry_file_is_standalone_and_exact_for_every_family(family, tmp_path, one_thread):
    """Checkpoint -> load_model -> entry file; the file imports only torch, its class builds with no
    arguments, loads the checkpoint strictly and computes exactly the repository's model."""
    from models import load_model
    from utils.compress.export import write_entry
    from utils.io.checkpoint import save_state_dict
    torch.manual_seed(0)
    ckpt = str(tmp_path / 'team99_SHIPPED.pth')
    save_state_dict(_family_model(family).state_dict(), ckpt)
    model = load_model(ckpt)
    entry_path = str(tmp_path / 'team99_SHIPPED.py')
    assert write_entry(model, ckpt, entry_path) == 0.0
    assert _imported_roots(entry_path) <= {'torch'}
    module = _import_file(entry_path)
    entry = module.SHIPPED().eval()                 # no arguments
    entry.load_state_dict(torch.load(ckpt, map_location='cpu', weights_only=True), strict=True)
    x = torch.rand(1, 3, 21, 17) * model.input_range
    with torch.no_grad():
        assert torch.equal(entry(x), model(x))
    assert (entry.input_range, entry.scale) == (model.input_range, model.scale)
    assert "elif model_id == 99:" in module.__doc__ and 'SHIPPED()' in module.SHIPPED.__doc__


def test_entry_refusals_write_nothing(tmp_path):
    """Architectures without a template, file names organizers cannot use, a class name that
    shadows a block of the file: one-line UserError, no file."""
    from models import CLBIMDN, IMDN
    from utils.compress.export import write_entry
    cases = [(CLBIMDN(nc=8, nb=1), 'team99_CLB.py', 'collapse it first'),      # uncollapsed keys
             (BranchRFDN(nf=8, num_modules=2), 'team99_BR.py', 'no entry template for BranchRFDN'),
             (IMDN(nc=8, nb=1), 'IMDN_entry.py', 'teamXX_NAME.py'),
             (IMDN(nc=8, nb=1), 'team99_IMDB.py', 'IMDB is also a name'),
             (RFDN(nf=8, num_modules=1), 'team99_conv.py', 'conv is also a name')]
    for model, filename, message in cases:
        with pytest.raises(UserError, match=message):
            write_entry(model, 'x.pth', str(tmp_path / filename))
    assert os.listdir(tmp_path) == []


def test_check_entry_catches_a_wrong_rendering(tmp_path):
    """The check that guards every written entry fails on a file that computes something else."""
    from utils.compress.export import check_entry, render_entry
    torch.manual_seed(0)
    model = RFDN(nf=8, num_modules=1).eval()
    path = str(tmp_path / 'team99_X.py')
    source = render_entry(model, 'x.pth', path)
    assert check_entry(source, path, model) == 0.0
    assert 'NEGATIVE_SLOPE = 0.05' in source
    with pytest.raises(UserError, match='differs from the model'):
        check_entry(source.replace('NEGATIVE_SLOPE = 0.05', 'NEGATIVE_SLOPE = 0.2'), path, model)
    with pytest.raises(UserError, match='does not load the checkpoint strictly'):
        check_entry(source.replace("'LR_conv': (8, 8, 3, True)", "'LR_conv': (8, 8, 3, False)"), path, model)


def test_entry_cli(tmp_path, shared_dir, capsys):
    """`python -m utils.compress.export entry CKPT OUT.py --model_id N`: the branch names N; the check runs on
    the real image; a bad output name fails before the checkpoint is read."""
    from models import IMDN
    from utils.compress.export import main
    from utils.io.checkpoint import save_state_dict
    torch.manual_seed(0)
    ckpt = str(tmp_path / 'team07_Tiny.pth')
    save_state_dict(IMDN(nc=8, nb=1).state_dict(), ckpt)
    out = str(tmp_path / 'team07_Tiny.py')
    assert main(['entry', ckpt, out, '--model_id', '12']) == 0
    assert 'max |entry - model| on butterflyx4.png: 0.00e+00' in capsys.readouterr().out
    text = open(out, encoding='utf-8').read()
    assert "    elif model_id == 12:\n        from models.team07_Tiny import Tiny\n" in text
    assert 'name, data_range = f"{model_id:02}_Tiny", 1.0' in text
    with pytest.raises(UserError, match='teamXX_NAME.py'):
        main(['entry', str(tmp_path / 'missing.pth'), str(tmp_path / 'tiny.py')])


def test_score_cli_scores_several_models(tmp_path, capsys):
    import json

    from utils.metrics.score import main

    def rec(ms, g, p):
        return {'runtime_256': ms, 'flops': g, 'num_parameters': p}
    path = tmp_path / 'r.json'
    path.write_text(json.dumps({'base': rec(100, 20, 0.4), 'half': rec(50, 10, 0.2),
                                'same': rec(100, 20, 0.4)}))
    assert main([str(path), 'half', 'same', 'base']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith('half vs base') and lines[1].startswith('same vs base')
    assert 'total 2.718' in lines[0] and 'total 7.389' in lines[1]       # e^1 and e^2
    with pytest.raises(UserError, match='nope not in'):
        main([str(path), 'nope', 'base'])


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    """A small RFDN checkpoint saved as `team99_Tiny.py`: a name that is also a valid entry output."""
    from utils.io.checkpoint import save_state_dict
    torch.manual_seed(0)
    path = tmp_path / 'team99_Tiny.py'
    save_state_dict(RFDN(nf=8, num_modules=1).state_dict(), str(path))
    return path


@pytest.mark.parametrize('what', ['onnx', 'entry'])
def test_export_cli_refuses_outputs_it_cannot_write(what, tiny_checkpoint, tmp_path):
    """An output that is the checkpoint, a folder or in a 'folder' that is a file: one-line UserError
    before anything is read or written, and the checkpoint is left as it was."""
    from utils.compress.export import main
    before = tiny_checkpoint.read_bytes()
    a_file = tmp_path / 'afile'
    a_file.write_text('x')
    (tmp_path / 'team99_Dir.py').mkdir()
    cases = [(tiny_checkpoint, 'is the input'), (tmp_path / 'team99_Dir.py', 'is a folder'),
             (a_file / 'team99_X.py', 'is a file, not a folder')]
    for output, message in cases:
        user_error(main, [what, tiny_checkpoint, output], message)
    assert tiny_checkpoint.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['afile', 'team99_Dir.py', 'team99_Tiny.py']
    assert os.listdir(tmp_path / 'team99_Dir.py') == []


def test_export_cli_reads_the_image_before_writing(tiny_checkpoint, tmp_path):
    from utils.compress.export import main
    for what, output in (('onnx', 'out.onnx'), ('entry', 'team99_Out.py')):
        with pytest.raises(UserError, match='cannot read image'):
            main([what, str(tiny_checkpoint), str(tmp_path / output), '--image', str(tmp_path / 'missing.png')])
        assert sorted(os.listdir(tmp_path)) == ['team99_Tiny.py']


def test_export_cli_refuses_a_negative_model_id(tiny_checkpoint, tmp_path):
    from utils.compress.export import main
    with pytest.raises(UserError, match='--model_id must be at least 0, got -3'):
        main(['entry', str(tiny_checkpoint), str(tmp_path / 'team99_Out.py'), '--model_id', '-3'])
    assert sorted(os.listdir(tmp_path)) == ['team99_Tiny.py']


def _score_file(tmp_path, records) -> str:
    import json
    path = tmp_path / 'r.json'
    path.write_text(json.dumps(records))
    return str(path)


BASE = {'runtime_256': 100.0, 'flops': 20.0, 'num_parameters': 0.4}


@pytest.mark.parametrize('content, message', [
    (None, 'results file not found'), ('dir', 'is a folder'), ('{bad', 'cannot read the results file'),
    ('[1, 2]', 'holds no JSON object'), ('{"base": 5}', 'base in .* is not a JSON object'),
])
def test_score_cli_refuses_unreadable_results(content, message, tmp_path):
    from utils.metrics.score import main
    path = tmp_path / 'r.json'
    if content == 'dir':
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    user_error(main, [path, 'base', 'base'], message)


@pytest.mark.parametrize('model, runtime_key, message', [
    ({'flops': 10.0, 'num_parameters': 0.2, 'valid_ave_runtime': 5.0, 'valid_runtime': [5.0]},
     'runtime_256', 'm has no runtime_256; its runtime keys: valid_ave_runtime$'),
    (dict(BASE), 'foo', 'base has no foo; its runtime keys: runtime_256$'),
    ({'runtime_256': 50.0, 'flops': 10.0}, 'runtime_256', 'm has no num_parameters'),
    (dict(BASE, runtime_256=-5.0), 'runtime_256', 'runtime_256 of m must be above 0, got -5'),
    (dict(BASE, flops=float('nan')), 'runtime_256', 'flops of m must be above 0, got nan'),
    (dict(BASE, num_parameters=float('inf')), 'runtime_256', 'num_parameters of m must be'),
    (dict(BASE, flops='20'), 'runtime_256', 'flops of m is a str, not a number'),
    (dict(BASE, flops=[10.0]), 'runtime_256', 'flops of m is a list, not a number'),
    (dict(BASE, flops=1e4), 'runtime_256', 'm has 500 times the flops of base: too far apart'),
])
def test_score_cli_refuses_bad_values(model, runtime_key, message, tmp_path, capsys):
    from utils.metrics.score import main
    path = _score_file(tmp_path, {'base': BASE, 'm': model})
    with pytest.raises(UserError, match=message):
        main([path, 'm', 'base', '--runtime_key', runtime_key])
    assert capsys.readouterr().out == ''


def test_score_cli_refuses_a_zero_baseline(tmp_path, capsys):
    from utils.metrics.score import main
    path = _score_file(tmp_path, {'base': dict(BASE, flops=0.0), 'm': BASE})
    with pytest.raises(UserError, match='flops of base must be above 0, got 0'):
        main([path, 'm', 'base'])
    assert capsys.readouterr().out == ''


def test_score_module_fails_in_one_line(tmp_path, repo_root):
    """`python -m utils.metrics.score` with a missing file: exit code 2, `error: ...`, no traceback."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, '-m', 'utils.metrics.score', str(tmp_path / 'no.json'), 'a', 'b'],
                          cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith('error: ') and proc.stderr.count('\n') == 1
