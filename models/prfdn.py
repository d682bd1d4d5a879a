"""PRFDN family: the branch model built from a pre-trained RFDN (Yin et al., NTIRE 2023: branching).

`BranchRFDN` turns RFDN's four sequential RFDBs into four independent branches:

    branch 1:  B1(fea_conv(x))
    branch k:  B_k(S_{k-1}(fea_conv{k-1}(x)))      k = 2, 3, 4

where `S_j` is a small SRFDB (one distillation step + c4 + c5 + ESA, as in the paper;
`srfdb_steps` deepens it) trained to stand in for the teacher's chain B1..B_j, i.e. to reproduce
the teacher's block-j output. `set_sequential_branches` feeds chosen branches from the previous
block instead, as RFDN does (progressive branching). The tail is
RFDN's: `c` over the concatenated branch outputs, `LR_conv`, `+ fea_conv(x)`, pixel shuffle.
Input and output in 0–255, like RFDN.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from utils.io.errors import UserError

from .blocks import ESA, conv_same, lrelu, pixelshuffle_upsampler
from .registry import SRModel, count_indexed, register_model, scale_from_upsampler
from .rfdn import RFDB, RFDN


def SRFDB(in_channels: int, steps: int = 1) -> RFDB:
    """Short RFDB: `steps` distillation steps (one in the PRFDN paper: c1_d, c1_r), c4, c5 and
    ESA. (N,C,H,W)->(N,C,H,W)."""
    return RFDB(in_channels, steps=steps)


SRFDB_INITS = ('fresh', 'first_block')


def truncate_rfdb(block: RFDB, steps: int = 1) -> dict:
    """State dict of a `steps`-step SRFDB cut from a (three-step) RFDB of the same width.

    The first `steps` distillation steps, c4 and ESA are kept; c5's weight keeps the input
    columns of d1..d_steps and of r (c4's part), which is what a shorter block concatenates
    (steps = block.steps: an exact copy).
    """
    if not 1 <= steps <= block.steps:
        raise ValueError(f'an SRFDB cut from a {block.steps}-step RFDB has 1..{block.steps} steps, not {steps}')
    sd = block.state_dict()
    dc = block.c1_d.out_channels
    kept = tuple(f'c{i}_' for i in range(1, steps + 1)) + ('c4.', 'esa.')
    out = {k: v.detach().clone() for k, v in sd.items() if k.startswith(kept)}
    w = sd['c5.weight']
    out['c5.weight'] = torch.cat([w[:, :steps * dc], w[:, block.steps * dc:]], dim=1).clone()
    out['c5.bias'] = sd['c5.bias'].detach().clone()
    return out


@register_model
class BranchRFDN(SRModel):
    """RFDN with independent branches. (N, 3, H, W) in 0–255 -> (N, 3, sH, sW) in 0–255."""

    input_range = 255.0
    min_input_size = ESA.min_size
    attention_types = (ESA,)

    def __init__(self, in_nc: int = 3, nf: int = 50, num_modules: int = 4, out_nc: int = 3,
                 upscale: int = 4, srfdb_steps: int = 1, conv_overrides: dict | None = None):
        super().__init__()
        self.scale = upscale
        self.num_modules = num_modules
        self.fea_conv = conv_same(in_nc, nf, 3)
        for j in range(1, num_modules):
            setattr(self, f'fea_conv{j}', conv_same(in_nc, nf, 3))
            setattr(self, f'S{j}', SRFDB(nf, srfdb_steps))
        for k in range(1, num_modules + 1):
            setattr(self, f'B{k}', RFDB(nf))
        self.c = nn.Sequential(nn.Conv2d(nf * num_modules, nf, 1), lrelu(0.05))
        self.LR_conv = conv_same(nf, nf, 3)
        self.upsampler = pixelshuffle_upsampler(nf, out_nc, upscale)
        self.sequential_branches = ()
        self._finish_init(conv_overrides)

    def set_sequential_branches(self, branches) -> 'BranchRFDN':
        """Feed each branch k in `branches` (2..num_modules) from B_{k-1}'s output, as in RFDN,
        instead of from S_{k-1}. Progressive branching detaches one branch at a time this way
        (all sequential = the teacher's own chain; none = the branch model); the state dict is
        the same in every case. Returns self."""
        branches = tuple(sorted(set(int(k) for k in branches)))
        if any(not 2 <= k <= self.num_modules for k in branches):
            raise ValueError(f'sequential branches are numbered 2..{self.num_modules}, not {list(branches)}')
        self.sequential_branches = branches
        return self

    def branch_inputs_and_outputs(self, x: torch.Tensor) -> tuple:
        """([input of B1, input of B2, ...], [output of B1, ...]), each (N, nf, H, W)."""
        inputs, outputs = [], []
        for k in range(1, self.num_modules + 1):
            if k == 1:
                h = self.fea_conv(x)
            elif k in self.sequential_branches:
                h = outputs[-1]
            else:
                h = getattr(self, f'S{k - 1}')(getattr(self, f'fea_conv{k - 1}')(x))
            inputs.append(h)
            outputs.append(getattr(self, f'B{k}')(h))
        return inputs, outputs

    def branch_inputs(self, x: torch.Tensor) -> list:
        """[input of B1, input of B2, ...]: fea_conv(x), then S_{k-1}(fea_conv{k-1}(x)) (or
        B_{k-1}'s output for a sequential branch)."""
        return self.branch_inputs_and_outputs(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._tail(*self.branch_inputs_and_outputs(x))

    def _tail(self, inputs: list, outputs: list) -> torch.Tensor:
        out_b = self.c(torch.cat(outputs, dim=1))
        out_lr = self.LR_conv(out_b) + inputs[0]
        return self.upsampler(out_lr)

    def distillation_features(self, x: torch.Tensor) -> list:
        """Student features for feature distillation: the SRFDB outputs S_1..S_{n-1}
        (to match the teacher's block outputs B_1..B_{n-1}, see RFDN.block_outputs)."""
        return self.branch_inputs(x)[1:]

    def output_and_features(self, x: torch.Tensor) -> tuple:
        """(forward(x), distillation_features(x)) from one pass."""
        inputs, outputs = self.branch_inputs_and_outputs(x)
        return self._tail(inputs, outputs), inputs[1:]

    @classmethod
    def from_rfdn(cls, rfdn: RFDN, srfdb_init: str = 'fresh', srfdb_steps: int = 1) -> 'BranchRFDN':
        """A branch model holding every tensor of a pre-trained RFDN.

        RFDBs, `c`, `LR_conv`, upsampler and `fea_conv` are copied; each extra head conv
        `fea_conv{j}` starts as a copy of `fea_conv`. The SRFDBs start fresh
        (`srfdb_init='fresh'`) or as RFDN's first block cut to one distillation step
        (`'first_block'`: c1_d, c1_r, c4 and ESA copied, c5 keeping the columns that read d1
        and r4), which starts each S_j's output near the teacher's B1 output instead of at
        random (relative L2 distance to the teacher's block outputs on Set5: 0.91 / 1.50 /
        1.47 against 2.04 / 2.05 / 2.67 fresh). `srfdb_steps` deepens every SRFDB (1..3
        distillation steps; 1 in the PRFDN paper); cut from B1, a 3-step SRFDB is B1 itself.
        """
        if srfdb_init not in SRFDB_INITS:
            raise ValueError(f'srfdb_init must be one of {SRFDB_INITS}, not {srfdb_init!r}')
        nf = rfdn.fea_conv.out_channels
        if not 1 <= srfdb_steps <= rfdn.B1.steps:
            raise ValueError(f'srfdb_steps must be 1..{rfdn.B1.steps}, not {srfdb_steps}')
        model = cls(in_nc=rfdn.fea_conv.in_channels, nf=nf, num_modules=rfdn.num_modules,
                    out_nc=rfdn.upsampler[0].out_channels // rfdn.scale ** 2, upscale=rfdn.scale,
                    srfdb_steps=srfdb_steps)
        own = model.state_dict()
        for k, v in rfdn.state_dict().items():
            if k not in own or own[k].shape != v.shape:
                raise ValueError(f'RFDN tensor {k} has no place in BranchRFDN (widths differ?)')
            own[k] = v.clone()
        for j in range(1, rfdn.num_modules):
            own[f'fea_conv{j}.weight'] = rfdn.fea_conv.weight.detach().clone()
            own[f'fea_conv{j}.bias'] = rfdn.fea_conv.bias.detach().clone()
            if srfdb_init == 'first_block':
                for k, v in truncate_rfdb(rfdn.B1, srfdb_steps).items():
                    own[f'S{j}.{k}'] = v
        model.load_state_dict(own, strict=True)
        return model

    @classmethod
    def recognises(cls, sd: dict) -> bool:
        return 'fea_conv1.weight' in sd and 'S1.c1_d.weight' in sd and 'B1.c1_d.weight' in sd

    @classmethod
    def config_from_state_dict(cls, sd: dict) -> dict:
        """RFDN's (the branch model holds RFDN's tensors under RFDN's names, plus fea_conv{j}
        and S{j}) and the SRFDBs' depth."""
        return dict(RFDN.config_from_state_dict(sd), srfdb_steps=count_indexed(sd, 'S1.c', '_d.weight'))


# ----------------------------------------------------------------------------------------
# The re-parametrized model: all branches as one wide model (PRFDN, Eq. 1)
# ----------------------------------------------------------------------------------------
CAT_MODES = ('plain', 'conv', 'shuffle')


def channel_shuffle(x: torch.Tensor, parts: int, groups: int) -> torch.Tensor:
    """(N, parts·groups·c, H, W) ordered part-major -> group-major (a free re-indexing)."""
    n, ch, h, w = x.shape
    return x.view(n, parts, groups, ch // (parts * groups), h, w).transpose(1, 2).reshape(n, ch, h, w)


class WideRFDB(RFDB):
    """n RFDBs (or SRFDBs) side by side as one block of n× the width.

    Every conv holds the n branch kernels block-diagonally: dense with explicit zero blocks
    (`groups=1`, what channel pruning works on) or as a grouped conv (`groups=n`, n× fewer
    FLOPs). The concatenation before `c5` is part-major ([d1 of all branches, d2 of all
    branches, ...]) while each branch's c5 wants its own parts together; `cat_mode` says
    how that re-ordering is realized:
      'plain'   — c5's input columns are permuted (free; dense only),
      'conv'    — a fixed 1×1 permutation conv `cat_conv` before c5 (the PRFDN paper's way, visible
                  to an automatic pruner; removed again by `reparam.py --fold`),
      'shuffle' — a channel shuffle (free re-indexing; used with grouped convs).
    (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, in_channels: int, distilled_channels: int, esa_channels: int,
                 steps: int = 3, groups: int = 1, cat_mode: str = 'plain'):
        super().__init__(in_channels, distilled_channels, esa_channels, steps)
        if cat_mode not in CAT_MODES:
            raise ValueError(f'cat_mode must be one of {CAT_MODES}')
        if groups > 1 and cat_mode == 'plain':
            raise ValueError("grouped convs need cat_mode 'shuffle' or 'conv'")
        self.groups, self.cat_mode = groups, cat_mode
        if groups > 1:
            _make_grouped(self, groups)
        if cat_mode == 'conv':
            width = distilled_channels * (steps + 1)
            self.cat_conv = nn.Conv2d(width, width, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cat = torch.cat(self.distilled_parts(x), dim=1)
        if self.cat_mode == 'conv':
            cat = self.cat_conv(cat)
        elif self.cat_mode == 'shuffle':
            cat = channel_shuffle(cat, self.steps + 1, self.groups)
        return self.esa(self.c5(cat))


def _make_grouped(block: nn.Module, groups: int) -> None:
    """Turn every conv of `block` into a grouped conv of the same in/out widths."""
    for name, conv in list(block.named_modules()):
        if not isinstance(conv, nn.Conv2d):
            continue
        parent = block
        *path, attr = name.split('.')
        for p in path:
            parent = getattr(parent, p)
        setattr(parent, attr, nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                                        stride=conv.stride, padding=conv.padding, groups=groups,
                                        bias=conv.bias is not None))


@register_model
class ParallelRFDN(SRModel):
    """BranchRFDN re-parametrized into one wide model. (N,3,H,W) 0–255 -> (N,3,sH,sW) 0–255.

        h = head(x)                          # fea_conv, fea_conv1..n-1 stacked: 3 -> n·nf
        g0, rest = split(h, [nf, (n-1)·nf])  # or two 1×1 selection convs (split_as_conv)
        y = B(cat(g0, S(rest)))              # S: n-1 SRFDBs as one; B: n RFDBs as one
        out = upsampler(LR_conv(c(y)) + g0)

    Widths are read from the convs at run time, so pruned versions (irregular widths) are
    the same class; `load_model` rebuilds them from the tensors.
    """

    input_range = 255.0
    min_input_size = ESA.min_size
    attention_types = (ESA,)

    def __init__(self, in_nc: int = 3, nf: int = 50, num_modules: int = 4, out_nc: int = 3,
                 upscale: int = 4, groups: bool = False, cat_mode: str = 'plain',
                 split_as_conv: bool = False, srfdb_steps: int = 1, conv_overrides: dict | None = None):
        super().__init__()
        n = num_modules
        self.scale, self.num_modules = upscale, n
        self.head = conv_same(in_nc, nf * n, 3)
        self.split_as_conv = split_as_conv
        if split_as_conv:
            self.split_res = nn.Conv2d(nf * n, nf, 1, bias=False)
            self.split_s = nn.Conv2d(nf * n, nf * (n - 1), 1, bias=False)
        self.S = WideRFDB(nf * (n - 1), nf // 2 * (n - 1), nf // 4 * (n - 1), steps=srfdb_steps,
                          groups=(n - 1) if groups else 1, cat_mode=cat_mode)
        self.B = WideRFDB(nf * n, nf // 2 * n, nf // 4 * n, steps=3,
                          groups=n if groups else 1, cat_mode=cat_mode)
        self.c = nn.Sequential(nn.Conv2d(nf * n, nf, 1), lrelu(0.05))
        self.LR_conv = conv_same(nf, nf, 3)
        self.upsampler = pixelshuffle_upsampler(nf, out_nc, upscale)
        self._finish_init(conv_overrides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        if self.split_as_conv:
            g0, rest = self.split_res(h), self.split_s(h)
        else:
            res_width = self.LR_conv.out_channels  # g0 is added to LR_conv's output
            g0, rest = torch.split(h, [res_width, h.shape[1] - res_width], dim=1)
        y = self.B(torch.cat([g0, self.S(rest)], dim=1))
        return self.upsampler(self.LR_conv(self.c(y)) + g0)

    # -- compression hooks (see SRModel) ------------------------------------------------
    def fixed_output_layers(self) -> list:
        """The upsampler conv: nf -> out·s² channels (not the last conv in module order once
        `prepare_for_pruning` has added the split convs)."""
        return [self.upsampler[0]]

    def prepare_for_pruning(self) -> 'ParallelRFDN':
        """Write the head split as two 1×1 selection convs, in place (exact).

        Torch-Pruning 1.6 mis-maps channel indices when a torch.split feeds both a
        concatenation and a residual add; the PRFDN paper's remedy is the split as convs:
        `split_res` (weight rows 0..res-1 of the identity, shape (res, total, 1, 1)) and
        `split_s` (the other rows), which `reparam.py --fold` removes after pruning. A
        grouped merge (groups > 1) cannot be channel-pruned: UserError.
        """
        if self.B.groups > 1:
            raise UserError('a grouped ParallelRFDN cannot be channel-pruned: prune the dense '
                            '(groups=1) merge')
        if not self.split_as_conv:
            with torch.no_grad():
                res = self.LR_conv.out_channels
                total = self.head.out_channels
                eye = torch.eye(total, device=self.head.weight.device).view(total, total, 1, 1)
                self.split_res = nn.Conv2d(total, res, 1, bias=False).to(eye.device)
                self.split_s = nn.Conv2d(total, total - res, 1, bias=False).to(eye.device)
                self.split_res.weight.copy_(eye[:res])
                self.split_s.weight.copy_(eye[res:])
                self.split_as_conv = True
        return self

    def pruning_excluded_convs(self) -> list:
        """The 0/1 selection convs (`split_res`, `split_s`, the blocks' `cat_conv`): exact
        index maps that folding removes, so weight pruning must not touch them."""
        candidates = (getattr(self, 'split_res', None), getattr(self, 'split_s', None),
                      getattr(self.S, 'cat_conv', None), getattr(self.B, 'cat_conv', None))
        return [m for m in candidates if m is not None]

    @classmethod
    def recognises(cls, sd: dict) -> bool:
        return 'head.weight' in sd and 'S.c1_d.weight' in sd and 'B.c3_r.weight' in sd

    @classmethod
    def config_from_state_dict(cls, sd: dict) -> dict:
        nf = int(sd['LR_conv.weight'].shape[0])
        w = sd['B.c1_r.weight']
        # c1_r maps B's width to itself (residual): a narrower kernel input means groups
        grouped = w.shape[0] != w.shape[1]
        if grouped:
            n = int(w.shape[0] // w.shape[1])
        else:
            n = max(2, int(round(sd['head.weight'].shape[0] / nf)))
        cat_mode = 'conv' if 'B.cat_conv.weight' in sd else ('shuffle' if grouped else 'plain')
        return dict(in_nc=int(sd['head.weight'].shape[1]), nf=nf, num_modules=n,
                    upscale=scale_from_upsampler(sd['upsampler.0.weight']), groups=grouped,
                    cat_mode=cat_mode, split_as_conv='split_res.weight' in sd,
                    srfdb_steps=count_indexed(sd, 'S.c', '_d.weight'))
