"""NTIRE Efficient SR entry of team 01: PRFDN, self-contained (imports only torch).

PRFDN (Parallel RFDN): the blocks of RFDN (Liu et al., ECCV Workshops 2020) trained as
independent branches, merged into one wide model and channel-pruned.

Input:  (N, 3, H, W) RGB in 0–255, H and W at least 15 (ESA pools with stride 3).
Output: (N, 3, 4H, 4W) RGB in 0–255 (×4 super-resolution).

Every block is defined in this file and CONVS lists the width, kernel size and bias of every
convolution, so `PRFDN()` takes no arguments; its parameter names are the keys of
`team01_PRFDN.pth`, which loads with strict=True:

    from models.team01_PRFDN import PRFDN
    model = PRFDN()
    model.load_state_dict(torch.load('model_zoo/team01_PRFDN.pth', map_location='cpu'), strict=True)

Branch for `select_model` in the organizers' test_demo.py (model_id: the number they assign):

    elif model_id == 1:
        from models.team01_PRFDN import PRFDN
        name, data_range = f"{model_id:02}_PRFDN", 255.0
        model_path = os.path.join('model_zoo', 'team01_PRFDN.pth')
        model = PRFDN()
        model.load_state_dict(torch.load(model_path, map_location='cpu'), strict=True)

Generated from the checkpoint's tensors by
    python -m utils.compress.export entry model_zoo/team01_PRFDN.pth models/team01_PRFDN.py --model_id 1
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

# Every convolution, by parameter name (the checkpoint key without .weight / .bias):
# (input channels per group, output channels, kernel size, bias)
CONVS = {
    'head': (3, 64, 3, True),
    'S.c1_d': (50, 22, 1, True),
    'S.c1_r': (50, 50, 3, True),
    'S.c4': (50, 22, 3, True),
    'S.c5': (44, 50, 1, True),
    'S.esa.conv1': (50, 9, 1, True),
    'S.esa.conv_f': (9, 9, 1, True),
    'S.esa.conv_max': (9, 9, 3, True),
    'S.esa.conv2': (9, 9, 3, True),
    'S.esa.conv3': (9, 9, 3, True),
    'S.esa.conv3_': (9, 9, 3, True),
    'S.esa.conv4': (9, 50, 1, True),
    'B.c1_d': (64, 32, 1, True),
    'B.c1_r': (64, 64, 3, True),
    'B.c2_d': (64, 32, 1, True),
    'B.c2_r': (64, 64, 3, True),
    'B.c3_d': (64, 32, 1, True),
    'B.c3_r': (64, 64, 3, True),
    'B.c4': (64, 32, 3, True),
    'B.c5': (128, 69, 1, True),
    'B.esa.conv1': (69, 13, 1, True),
    'B.esa.conv_f': (13, 13, 1, True),
    'B.esa.conv_max': (13, 13, 3, True),
    'B.esa.conv2': (13, 13, 3, True),
    'B.esa.conv3': (13, 13, 3, True),
    'B.esa.conv3_': (13, 13, 3, True),
    'B.esa.conv4': (13, 69, 1, True),
    'c.0': (69, 14, 1, True),
    'LR_conv': (14, 14, 3, True),
    'upsampler.0': (14, 48, 3, True),
}

NEGATIVE_SLOPE = 0.05  # of every LeakyReLU


def conv(name, stride=1, padding=None, groups=1):
    """The convolution `name` of CONVS; padding k // 2 (same size) unless given."""
    in_per_group, out_channels, kernel_size, bias = CONVS[name]
    if padding is None:
        padding = kernel_size // 2
    return nn.Conv2d(in_per_group * groups, out_channels, kernel_size, stride=stride,
                     padding=padding, bias=bias, groups=groups)


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


class PRFDN(nn.Module):
    """PRFDN, ×4: (N, 3, H, W) RGB in 0–255 -> (N, 3, 4H, 4W) RGB in 0–255.

    Built with no arguments; the checkpoint loads strictly (the select_model branch to paste is
    in the module docstring):

        model = PRFDN()
        model.load_state_dict(torch.load('model_zoo/team01_PRFDN.pth', map_location='cpu'), strict=True)

    Parallel RFDN: RFDN's blocks as independent branches, merged into one wide model.
        h = head(x);  g0, rest = split(h)  (a channel split, or the 1×1 convs split_res, split_s)
        y = B(cat(g0, S(rest)));  out = upsampler(LR_conv(c(y)) + g0)
    """

    input_range = 255.0
    scale = 4
    split_as_conv = False

    def __init__(self):
        super().__init__()
        self.head = conv('head')
        if self.split_as_conv:
            self.split_res = conv('split_res')
            self.split_s = conv('split_s')
        self.S = WideRFDB('S.', steps=1, groups=1, cat_mode='plain')
        self.B = WideRFDB('B.', steps=3, groups=1, cat_mode='plain')
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
