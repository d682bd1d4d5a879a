"""Deployment tools: the shipped model's widths, ONNX export, and NTIRE entry files.

    python -m utils.compress.export widths model_zoo/team01_PRFDN.pth         # dict literal of every conv
    python -m utils.compress.export onnx model_zoo/team01_PRFDN.pth out.onnx  # + onnxruntime check
    python -m utils.compress.export entry model_zoo/team01_PRFDN.pth models/team01_PRFDN.py --model_id 1

`entry` writes a self-contained NTIRE entry (class PRFDN: the name after team01_): one file that
imports only torch, defines every block it uses and lists every conv's width, kernel size and
bias, so the organizers copy it alone into their models/ and load the checkpoint strictly.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import textwrap
from string import Template
from typing import Callable, NamedTuple

import numpy as np
import torch

from models import load_model
from models.blocks import conv_spec
from models.zoo import MODEL_ZOO
from utils.io.atomic import atomic_path, atomic_write_text
from utils.io.checkpoint import check_output_file
from utils.io.config import shared_dir
from utils.io.errors import UserError, check_option
from utils.io.image_io import imread_rgb, uint8_to_tensor


def conv_specs(model: torch.nn.Module) -> dict:
    """{conv name: (in per group, out, kernel, bias)} of every conv, in module order."""
    return {n: conv_spec(m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def export_onnx(model: torch.nn.Module, path: str, opset: int = 17) -> None:
    """ONNX graph with dynamic height/width; input (1, 3, H, W) in the model's range."""
    model = model.eval().cpu()
    x = torch.rand(1, 3, 64, 64) * getattr(model, 'input_range', 255.0)
    import warnings
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (x,), tmp, input_names=['lr'], output_names=['sr'],
                          opset_version=opset, dynamo=False,
                          dynamic_axes={'lr': {2: 'h', 3: 'w'}, 'sr': {2: 'sh', 3: 'sw'}})


def onnx_max_difference(model: torch.nn.Module, path: str, lr_uint8: np.ndarray) -> float:
    """Largest |PyTorch - onnxruntime| (0–255 units) on one real LR image."""
    import onnxruntime as ort

    rng = getattr(model, 'input_range', 255.0)
    x = uint8_to_tensor(lr_uint8, rng)
    with torch.no_grad():
        ref = model.eval().cpu()(x).numpy()
    runtime = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    out = runtime.run(None, {'lr': x.numpy()})[0]
    return float(np.abs(out - ref).max() * 255.0 / rng)


class OnnxSR:
    """An ONNX model behind the interface `utils.engine.evaluate.evaluate` expects."""

    def __init__(self, path: str, scale: int, input_range: float = 255.0, min_input_size: int = 15):
        import onnxruntime as ort
        self.runtime = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
        self.scale, self.input_range, self.min_input_size = scale, input_range, min_input_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runtime.run(None, {'lr': x.detach().cpu().float().numpy()})[0])


# ------------------------------------------------------------------------------------------
# NTIRE entry files: one self-contained Python file per shipped model
# ------------------------------------------------------------------------------------------
# Organizers copy ONE file into their models/ and ONE checkpoint into model_zoo/, so the entry
# may import nothing of this repository. It is rendered from source templates: a header
# (docstring, imports, the table of every conv, the `conv` builder), the blocks the family
# needs, and the family's network class. string.Template ($name) keeps the code's own braces
# literal. Each template mirrors the forward pass of its model in models/ operation by
# operation; `write_entry` checks the rendered file against the model before writing it.

ENTRY_HEADER = '''\
"""NTIRE Efficient SR entry of team $team: $name, self-contained (imports only torch).

$description

Input:  (N, 3, H, W) RGB in 0–$range_text$size_note.
Output: (N, 3, ${scale}H, ${scale}W) RGB in 0–$range_text (×$scale super-resolution).

Every block is defined in this file and CONVS lists the width, kernel size and bias of every
convolution, so `$name()` takes no arguments; its parameter names are the keys of
`$checkpoint`, which loads with strict=True:

    from models.$module import $name
    model = $name()
    model.load_state_dict(torch.load('model_zoo/$checkpoint', map_location='cpu'), strict=True)

Branch for `select_model` in the organizers' test_demo.py (model_id: the number they assign):

$branch

Generated from the checkpoint's tensors by
    python -m utils.compress.export entry $checkpoint_arg models/$module.py --model_id $model_id
"""
$imports

# Every convolution, by parameter name (the checkpoint key without .weight / .bias):
# (input channels per group, output channels, kernel size, bias)
CONVS = {
$convs}

NEGATIVE_SLOPE = $negative_slope  # of every LeakyReLU


def conv(name, stride=1, padding=None, groups=1):
    """The convolution `name` of CONVS; padding k // 2 (same size) unless given."""
    in_per_group, out_channels, kernel_size, bias = CONVS[name]
    if padding is None:
        padding = kernel_size // 2
    return nn.Conv2d(in_per_group * groups, out_channels, kernel_size, stride=stride,
                     padding=padding, bias=bias, groups=groups)
'''

ESA_SOURCE = '''
class ESA(nn.Module):
    """Enhanced spatial attention of RFDN (Liu et al., ECCV Workshops 2020).

    (N, C, H, W) -> (N, C, H, W), H and W >= 15: the input gated by a sigmoid mask.
    """

    def __init__(self, prefix, groups=1):
        super().__init__()
        self.conv1 = conv(prefix + 'conv1', groups=groups)
        self.conv_f = conv(prefix + 'conv_f', groups=groups)
        self.conv_max = conv(prefix + 'conv_max', groups=groups)
        self.conv2 = conv(prefix + 'conv2', stride=2, padding=0, groups=groups)
        self.conv3 = conv(prefix + 'conv3', groups=groups)
        self.conv3_ = conv(prefix + 'conv3_', groups=groups)
        self.conv4 = conv(prefix + 'conv4', groups=groups)
        self.sigmoid = nn.Sigmoid()
        self.relu = nn.ReLU()

    def forward(self, x):
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
        v_range = self.relu(self.conv_max(v_max))
        c3 = self.relu(self.conv3(v_range))
        c3 = self.conv3_(c3)
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode='bilinear', align_corners=False)
        cf = self.conv_f(c1_)
        mask = self.sigmoid(self.conv4(c3 + cf))
        return x * mask
'''

RFDB_SOURCE = '''
class RFDB(nn.Module):
    """Residual feature distillation block: `steps` distillation steps, c4, c5 and ESA.

    (N, C, H, W) -> (N, C, H, W); the split widths are those of the convs.
    """

    def __init__(self, prefix, steps=3, groups=1):
        super().__init__()
        self.steps = steps
        for i in range(1, steps + 1):
            setattr(self, f'c{i}_d', conv(f'{prefix}c{i}_d', groups=groups))
            setattr(self, f'c{i}_r', conv(f'{prefix}c{i}_r', groups=groups))
        self.c4 = conv(prefix + 'c4', groups=groups)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)
        self.c5 = conv(prefix + 'c5', groups=groups)
        self.esa = ESA(prefix + 'esa.', groups=groups)

    def distilled_parts(self, x):
        distilled = []
        r = x
        for i in range(1, self.steps + 1):
            distilled.append(self.act(getattr(self, f'c{i}_d')(r)))
            r = self.act(getattr(self, f'c{i}_r')(r) + r)
        distilled.append(self.act(self.c4(r)))
        return distilled

    def forward(self, x):
        return self.esa(self.c5(torch.cat(self.distilled_parts(x), dim=1)))
'''

WIDE_RFDB_SOURCE = '''
def channel_shuffle(x, parts, groups):
    """(N, parts·groups·c, H, W) ordered part-major -> group-major (a re-indexing)."""
    n, ch, h, w = x.shape
    return x.view(n, parts, groups, ch // (parts * groups), h, w).transpose(1, 2).reshape(n, ch, h, w)


class WideRFDB(RFDB):
    """Several RFDBs side by side as one block (block-diagonal or grouped convs).

    The concatenation before c5 is part-major; `cat_mode` says how it reaches each
    branch's columns of c5: 'plain' (c5's input columns are permuted accordingly),
    'conv' (a fixed 1×1 permutation conv `cat_conv`), 'shuffle' (a channel shuffle).
    (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, prefix, steps, groups, cat_mode):
        super().__init__(prefix, steps, groups)
        self.groups, self.cat_mode = groups, cat_mode
        if cat_mode == 'conv':
            self.cat_conv = conv(prefix + 'cat_conv')

    def forward(self, x):
        cat = torch.cat(self.distilled_parts(x), dim=1)
        if self.cat_mode == 'conv':
            cat = self.cat_conv(cat)
        elif self.cat_mode == 'shuffle':
            cat = channel_shuffle(cat, self.steps + 1, self.groups)
        return self.esa(self.c5(cat))
'''

LIGHT_ESA_SOURCE = '''
class LightESA(nn.Module):
    """ESA as in RLFN (no conv_max / conv3_). (N, C, H, W) -> (N, C, H, W), H, W >= 15."""

    def __init__(self, prefix):
        super().__init__()
        self.conv1 = conv(prefix + 'conv1')
        self.conv_f = conv(prefix + 'conv_f')
        self.conv2 = conv(prefix + 'conv2', stride=2, padding=0)
        self.conv3 = conv(prefix + 'conv3')
        self.conv4 = conv(prefix + 'conv4')
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
        c3 = self.conv3(v_max)
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode='bilinear', align_corners=False)
        cf = self.conv_f(c1_)
        mask = self.sigmoid(self.conv4(c3 + cf))
        return x * mask
'''

RLFB_SOURCE = '''
class RLFB(nn.Module):
    """Residual local feature block: three conv + LeakyReLU, residual add, c5, ESA.

    (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, prefix):
        super().__init__()
        self.c1_r = conv(prefix + 'c1_r')
        self.c2_r = conv(prefix + 'c2_r')
        self.c3_r = conv(prefix + 'c3_r')
        self.c5 = conv(prefix + 'c5')
        self.esa = LightESA(prefix + 'esa.')
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)

    def forward(self, x):
        out = self.act(self.c1_r(x))
        out = self.act(self.c2_r(out))
        out = self.act(self.c3_r(out))
        return self.esa(self.c5(out + x))
'''

IMDB_SOURCE = '''
class IMDB(nn.Module):
    """Information multi-distillation block. (N, C, H, W) -> (N, C, H, W).

    conv1..conv3 (3×3 + LeakyReLU) each split off distilled channels and pass the rest
    on (split sizes: the next conv's input width); conv4 makes the last part; conv1x1
    fuses the four parts; residual add.
    """

    def __init__(self, prefix):
        super().__init__()
        self.conv1 = nn.Sequential(conv(prefix + 'conv1.0'), nn.LeakyReLU(NEGATIVE_SLOPE))
        self.conv2 = nn.Sequential(conv(prefix + 'conv2.0'), nn.LeakyReLU(NEGATIVE_SLOPE))
        self.conv3 = nn.Sequential(conv(prefix + 'conv3.0'), nn.LeakyReLU(NEGATIVE_SLOPE))
        self.conv4 = conv(prefix + 'conv4')
        self.conv1x1 = conv(prefix + 'conv1x1')

    @staticmethod
    def _split(features, remaining):
        return torch.split(features, [features.shape[1] - remaining, remaining], dim=1)

    def forward(self, x):
        d1, r1 = self._split(self.conv1(x), self.conv2[0].in_channels)
        d2, r2 = self._split(self.conv2(r1), self.conv3[0].in_channels)
        d3, r3 = self._split(self.conv3(r2), self.conv4.in_channels)
        d4 = self.conv4(r3)
        return x + self.conv1x1(torch.cat((d1, d2, d3, d4), dim=1))


class ShortcutBlock(nn.Module):
    """x + sub(x); the attribute name `sub` is part of the checkpoint keys."""

    def __init__(self, sub):
        super().__init__()
        self.sub = sub

    def forward(self, x):
        return x + self.sub(x)
'''

# The network classes. Common placeholders: $name, $class_doc (range, scale and loading),
# $input_range, $scale; family ones as named.
PARALLEL_RFDN_SOURCE = '''

class $name(nn.Module):
    """$class_doc

    Parallel RFDN: RFDN's blocks as independent branches, merged into one wide model.
        h = head(x);  g0, rest = split(h)  (a channel split, or the 1×1 convs split_res, split_s)
        y = B(cat(g0, S(rest)));  out = upsampler(LR_conv(c(y)) + g0)
    """

    input_range = $input_range
    scale = $scale
    split_as_conv = $split_as_conv

    def __init__(self):
        super().__init__()
        self.head = conv('head')
        if self.split_as_conv:
            self.split_res = conv('split_res')
            self.split_s = conv('split_s')
        self.S = WideRFDB('S.', steps=$s_steps, groups=$s_groups, cat_mode=$s_cat_mode)
        self.B = WideRFDB('B.', steps=$b_steps, groups=$b_groups, cat_mode=$b_cat_mode)
        self.c = nn.Sequential(conv('c.0'), nn.LeakyReLU(NEGATIVE_SLOPE))
        self.LR_conv = conv('LR_conv')
        self.upsampler = nn.Sequential(conv('upsampler.0'), nn.PixelShuffle(self.scale))

    def forward(self, x):
        h = self.head(x)
        if self.split_as_conv:
            g0, rest = self.split_res(h), self.split_s(h)
        else:
            res_width = self.LR_conv.out_channels  # g0 is added to LR_conv's output
            g0, rest = torch.split(h, [res_width, h.shape[1] - res_width], dim=1)
        y = self.B(torch.cat([g0, self.S(rest)], dim=1))
        return self.upsampler(self.LR_conv(self.c(y)) + g0)
'''

RFDN_SOURCE = '''

class $name(nn.Module):
    """$class_doc

    RFDN (Liu et al., ECCV Workshops 2020): fea_conv, the blocks B1..B$num_blocks in sequence, c over
    all block outputs, LR_conv, the residual fea_conv(x), pixel-shuffle upsampler.
    """

    input_range = $input_range
    scale = $scale
    num_blocks = $num_blocks

    def __init__(self):
        super().__init__()
        self.fea_conv = conv('fea_conv')
        for i in range(1, self.num_blocks + 1):
            setattr(self, f'B{i}', RFDB(f'B{i}.'))
        self.c = nn.Sequential(conv('c.0'), nn.LeakyReLU(NEGATIVE_SLOPE))
        self.LR_conv = conv('LR_conv')
        self.upsampler = nn.Sequential(conv('upsampler.0'), nn.PixelShuffle(self.scale))

    def forward(self, x):
        outs = [self.fea_conv(x)]
        for i in range(1, self.num_blocks + 1):
            outs.append(getattr(self, f'B{i}')(outs[-1]))
        out_fea = outs.pop(0)
        out_b = self.c(torch.cat(outs, dim=1))
        return self.upsampler(self.LR_conv(out_b) + out_fea)
'''

RLFN_SOURCE = '''

class $name(nn.Module):
    """$class_doc

    RLFN (Kong et al., CVPR Workshops 2022): $head, the blocks ${block}1..${block}$num_blocks
    in sequence, $tail, the residual $head(x), pixel-shuffle upsampler.
    """

    input_range = $input_range
    scale = $scale
    num_blocks = $num_blocks

    def __init__(self):
        super().__init__()
        self.$head = conv('$head')
        for i in range(1, self.num_blocks + 1):
            setattr(self, f'$block{i}', RLFB(f'$block{i}.'))
        self.$tail = conv('$tail')
        self.upsampler = nn.Sequential(conv('upsampler.0'), nn.PixelShuffle(self.scale))

    def forward(self, x):
        out_feature = self.$head(x)
        h = out_feature
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f'$block{i}')(h)
        return self.upsampler(self.$tail(h) + out_feature)
'''

IMDN_SOURCE = '''

class $name(nn.Module):
    """$class_doc

    IMDN (Hui et al., ACM MM 2019) in KAIR's layout: model.0 head conv, model.1 a shortcut
    around the $num_blocks IMDBs and a conv, model.2 the upsampler conv, model.3 pixel shuffle.
    """

    input_range = $input_range
    scale = $scale
    num_blocks = $num_blocks

    def __init__(self):
        super().__init__()
        body = [IMDB(f'model.1.sub.{i}.') for i in range(self.num_blocks)]
        body.append(conv(f'model.1.sub.{self.num_blocks}'))
        self.model = nn.Sequential(conv('model.0'), ShortcutBlock(nn.Sequential(*body)),
                                   conv('model.2'), nn.PixelShuffle(self.scale))

    def forward(self, x):
        return self.model(x)
'''

TORCH, NN, FUNCTIONAL = 'import torch', 'import torch.nn as nn', 'import torch.nn.functional as F'


def _parallel_rfdn_values(model) -> dict:
    return dict(split_as_conv=model.split_as_conv,
                s_steps=model.S.steps, s_groups=model.S.groups, s_cat_mode=repr(model.S.cat_mode),
                b_steps=model.B.steps, b_groups=model.B.groups, b_cat_mode=repr(model.B.cat_mode))


def _rlfn_values(model) -> dict:
    return dict(head=model.head_name, block=model.block_prefix, tail=model.tail_name,
                num_blocks=model.num_blocks)


class EntryFamily(NamedTuple):
    """How an architecture is rendered as an entry file."""
    imports: tuple          # import lines of the file
    blocks: tuple           # block sources, in dependency order
    network: str            # template of the network class
    values: Callable        # model -> its placeholders of `network`
    summary: str            # what it is, for the docstring of an entry without a description


# by exact class name: a subclass (an uncollapsed CLBIMDN, say) has other keys than its parent
ENTRY_FAMILIES = {
    'ParallelRFDN': EntryFamily((TORCH, NN, FUNCTIONAL), (ESA_SOURCE, RFDB_SOURCE, WIDE_RFDB_SOURCE),
                                PARALLEL_RFDN_SOURCE, _parallel_rfdn_values,
                                "RFDN's blocks as independent branches merged into one wide model"),
    'RFDN': EntryFamily((TORCH, NN, FUNCTIONAL), (ESA_SOURCE, RFDB_SOURCE), RFDN_SOURCE,
                        lambda m: dict(num_blocks=m.num_modules), 'an RFDN'),
    'RLFN': EntryFamily((NN, FUNCTIONAL), (LIGHT_ESA_SOURCE, RLFB_SOURCE), RLFN_SOURCE,
                        _rlfn_values, 'an RLFN'),
    'RLFN_NTIRE2022': EntryFamily((NN, FUNCTIONAL), (LIGHT_ESA_SOURCE, RLFB_SOURCE), RLFN_SOURCE,
                                  _rlfn_values, 'an RLFN (NTIRE 2022 key names)'),
    'IMDN': EntryFamily((TORCH, NN), (IMDB_SOURCE,), IMDN_SOURCE,
                        lambda m: dict(num_blocks=m.num_blocks), 'an IMDN'),
}

# what the shipped entries are, for their docstrings (entry class -> description)
ENTRY_DESCRIPTIONS = {
    'PRFDN': 'PRFDN (Parallel RFDN): the blocks of RFDN (Liu et al., ECCV Workshops 2020) trained as '
             'independent branches, merged into one wide model and channel-pruned.',
    'CLBIMDN': 'CLB-IMDN: a block-pruned IMDN (Hui et al., ACM MM 2019) trained with collapsible '
               'linear blocks (Wang et al., CVPR Workshops 2022), collapsed into plain convolutions.',
    'RLFNKP': 'RLFN-KP: RLFN (Kong et al., CVPR Workshops 2022) with kernel and bias pruning as in '
              'AdvancedSR (NTIRE 2024 Efficient SR).',
    'FMPRFDN': 'FMP-RFDN: RFDN (Liu et al., ECCV Workshops 2020) with joint channel and weight '
               'pruning to a budget (Total Fixed criterion).',
    'RFDNCP': 'RFDN-CP: RFDN (Liu et al., ECCV Workshops 2020) channel-pruned directly with '
              'Torch-Pruning (Fang et al., CVPR 2023) to widths a multiple of 8, distilled from '
              'RFDN while pruned and fine-tuned after.',
}

CLASS_DOC = '''\
{name}, ×{scale}: (N, 3, H, W) RGB in 0–{range_text} -> (N, 3, {scale}H, {scale}W) RGB in 0–{range_text}.

    Built with no arguments; the checkpoint loads strictly (the select_model branch to paste is
    in the module docstring):

        model = {name}()
        model.load_state_dict(torch.load('model_zoo/{checkpoint}', map_location='cpu'), strict=True)'''

SELECT_MODEL_BRANCH = '''\
    elif model_id == {model_id}:
        from models.{module} import {name}
        name, data_range = f"{{model_id:02}}_{name}", {data_range!r}
        model_path = os.path.join('model_zoo', '{checkpoint}')
        model = {name}()
        model.load_state_dict(torch.load(model_path, map_location='cpu'), strict=True)'''


def entry_names(path: str) -> tuple[str, str, str]:
    """(module, team, class) of an entry file `.../teamXX_NAME.py`: NAME is the class."""
    module = os.path.splitext(os.path.basename(path))[0]
    match = re.fullmatch(r'team(\d+)_(\w+)', module)
    if not path.endswith('.py') or not match or not match.group(2).isidentifier():
        raise UserError(f'{path}: an entry file is named teamXX_NAME.py (XX the team number, '
                        'NAME the class, a Python identifier)')
    return module, match.group(1), match.group(2)


def default_model_id(checkpoint: str, team: str) -> int:
    """The `--model_id` under which models/zoo.py lists the checkpoint's file name (so the shipped
    entries' select_model branches use this repository's ids), else the team number."""
    base = os.path.basename(checkpoint)
    ids = [model_id for model_id, (_, files) in MODEL_ZOO.items() if base in files]
    return ids[0] if len(ids) == 1 else int(team)


def render_entry(model: torch.nn.Module, checkpoint: str, path: str, model_id: int | None = None) -> str:
    """The source of the entry file `path` (teamXX_NAME.py) for `model`, read from `checkpoint`.

    Raises UserError for an architecture without a template, a class name that would shadow
    a name of the file, or LeakyReLUs of different slopes.
    """
    module, team, name = entry_names(path)
    family = type(model).__name__
    if family not in ENTRY_FAMILIES:
        hint = ' (collapse it first: reparam.py --mode collapse)' if family == 'CLBIMDN' else ''
        raise UserError(f'no entry template for {family}{hint}; '
                        f'templates: {", ".join(sorted(ENTRY_FAMILIES))}')
    spec = ENTRY_FAMILIES[family]
    slopes = {m.negative_slope for m in model.modules() if isinstance(m, torch.nn.LeakyReLU)}
    if len(slopes) > 1:
        raise UserError(f'the LeakyReLUs of {family} have different slopes {sorted(slopes)}')
    input_range, scale = float(model.input_range), int(model.scale)
    range_text = f'{input_range:g}'
    model_id = default_model_id(checkpoint, team) if model_id is None else model_id
    ckpt_file = os.path.basename(checkpoint)
    common = dict(name=name, input_range=input_range, scale=scale)
    branch = SELECT_MODEL_BRANCH.format(model_id=model_id, module=module, name=name,
                                        data_range=input_range, checkpoint=ckpt_file)
    min_size = int(getattr(model, 'min_input_size', 1))
    header = Template(ENTRY_HEADER).substitute(
        common, team=team, module=module, checkpoint=ckpt_file, range_text=range_text,
        checkpoint_arg=checkpoint.replace(os.sep, '/'), model_id=model_id, branch=branch,
        description=textwrap.fill(ENTRY_DESCRIPTIONS.get(name, f'{name}: {spec.summary}.'), 96),
        size_note=f', H and W at least {min_size} (ESA pools with stride 3)' if min_size > 1 else '',
        imports='\n'.join(spec.imports),
        convs=''.join(f"    '{n}': {spec},\n" for n, spec in conv_specs(model).items()),
        negative_slope=slopes.pop() if slopes else 0.05)
    class_doc = CLASS_DOC.format(name=name, scale=scale, range_text=range_text, checkpoint=ckpt_file)
    network = Template(spec.network).substitute(common, class_doc=class_doc, **spec.values(model))
    # two blank lines between top-level definitions (PEP 8)
    text = '\n\n\n'.join(part.strip('\n') for part in (header, *spec.blocks, network)) + '\n'
    clashes = [n for n in _top_level_names(text) if n == name]
    if len(clashes) > 1:
        raise UserError(f'the class name {name} is also a name the entry file defines; '
                        'choose another file name')
    return text


def _top_level_names(source: str) -> list:
    """Names bound at the top level of `source` (classes, functions, assignments, imports)."""
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split('.')[0] for a in node.names]
    return names


def check_entry(source: str, path: str, model: torch.nn.Module, lr_uint8: np.ndarray | None = None,
                tolerance: float = 1e-4) -> float:
    """Max |entry - model| (0–255 units) of the entry class that `source` defines.

    The class is built with no arguments and loads `model`'s tensors strictly; both run on
    `lr_uint8` (H×W×3 uint8 RGB, converted to the model's range) or, without it, on a fixed
    random input. UserError when the entry does not load or differs by more than `tolerance`.
    """
    module, _, name = entry_names(path)
    namespace = {'__name__': f'models.{module}'}
    exec(compile(source, path, 'exec'), namespace)   # the file as the organizers import it
    entry = namespace[name]().eval()
    try:
        entry.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as exc:
        raise UserError(f'{path}: the rendered entry does not load the checkpoint strictly '
                        f'({str(exc).strip().splitlines()[0][:160]})') from None
    rng = float(model.input_range)
    if lr_uint8 is not None:
        x = uint8_to_tensor(lr_uint8, rng)
    else:
        size = max(int(getattr(model, 'min_input_size', 1)), 16)
        x = torch.rand(1, 3, size + 5, size + 2, generator=torch.Generator().manual_seed(0)) * rng
    with torch.no_grad():
        diff = float((entry(x) - model.eval()(x)).abs().max()) * 255.0 / rng
    if not diff <= tolerance:
        raise UserError(f'{path}: the rendered entry differs from the model by {diff:.3g} '
                        f'(0–255) > {tolerance:g}; not written')
    return diff


def write_entry(model: torch.nn.Module, checkpoint: str, path: str, model_id: int | None = None,
                lr_uint8: np.ndarray | None = None) -> float:
    """Write the self-contained entry file `path` (teamXX_NAME.py, class NAME) for `model`.

    `checkpoint` is the file the model was read from (its base name goes into the loading
    code), `model_id` the number in the `select_model` branch (default: `default_model_id`).
    The file is checked against `model` before it is written (atomically; see `check_entry`
    for `lr_uint8`); returns the max |entry - model| of that check (0–255 units).
    """
    source = render_entry(model, checkpoint, path, model_id)
    diff = check_entry(source, path, model, lr_uint8)
    atomic_write_text(path, source)
    return diff


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('what', choices=['widths', 'onnx', 'entry'])
    p.add_argument('checkpoint')
    p.add_argument('output', nargs='?')
    shared = shared_dir()
    p.add_argument('--image', default=os.path.join(shared, 'benchmark', 'Set5', 'LR_bicubic', 'X4',
                                                   'butterflyx4.png'),
                   help='real LR image the export is checked on (onnx, entry)')
    p.add_argument('--model_id', type=int, default=None,
                   help="entry: the number in the organizers' select_model branch (default: the "
                        "checkpoint's id in models/zoo.py, else the team number)")
    args = p.parse_args(argv)

    if args.what != 'widths' and not args.output:
        raise UserError(f'{args.what} needs an output path')
    if args.what == 'entry':
        entry_names(args.output)   # a bad file name fails before any work
        check_option('--model_id', args.model_id, at_least=0)
    if args.what != 'widths':
        check_output_file(args.output, 'output', inputs=[args.checkpoint, args.image])
        lr = imread_rgb(args.image)   # a bad image must fail before the output is written
    model = load_model(args.checkpoint)
    if args.what == 'widths':
        print('{')
        for name, spec in conv_specs(model).items():
            print(f"    '{name}': {spec},")
        print('}')
        return 0
    if args.what == 'entry':
        diff = write_entry(model, args.checkpoint, args.output, args.model_id, lr)
        print(f'wrote {args.output}; max |entry - model| on {os.path.basename(args.image)}: '
              f'{diff:.2e} (0–255)')
        return 0
    export_onnx(model, args.output)
    diff = onnx_max_difference(model, args.output, lr)
    print(f'wrote {args.output}; max |PyTorch - onnxruntime| on {os.path.basename(args.image)}: '
          f'{diff:.2e} (0–255)')
    if diff > 1e-3:
        os.remove(args.output)
        raise UserError(f'ONNX output differs by {diff:.2e} > 1e-3; removed {args.output}')
    return 0


if __name__ == '__main__':
    from utils.io.errors import run_cli
    run_cli(main)
