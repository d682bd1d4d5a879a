"""NTIRE Efficient SR entry of team 01: RFDNCP, self-contained (imports only torch).

RFDN-CP: RFDN (Liu et al., ECCV Workshops 2020) channel-pruned directly with Torch-Pruning (Fang
et al., CVPR 2023) to widths a multiple of 8, distilled from RFDN while pruned and fine-tuned
after.

Input:  (N, 3, H, W) RGB in 0–255, H and W at least 15 (ESA pools with stride 3).
Output: (N, 3, 4H, 4W) RGB in 0–255 (×4 super-resolution).

Every block is defined in this file and CONVS lists the width, kernel size and bias of every
convolution, so `RFDNCP()` takes no arguments; its parameter names are the keys of
`team01_RFDNCP.pth`, which loads with strict=True:

    from models.team01_RFDNCP import RFDNCP
    model = RFDNCP()
    model.load_state_dict(torch.load('model_zoo/team01_RFDNCP.pth', map_location='cpu'), strict=True)

Branch for `select_model` in the organizers' test_demo.py (model_id: the number they assign):

    elif model_id == 5:
        from models.team01_RFDNCP import RFDNCP
        name, data_range = f"{model_id:02}_RFDNCP", 255.0
        model_path = os.path.join('model_zoo', 'team01_RFDNCP.pth')
        model = RFDNCP()
        model.load_state_dict(torch.load(model_path, map_location='cpu'), strict=True)

Generated from the checkpoint's tensors by
    python -m utils.compress.export entry model_zoo/team01_RFDNCP.pth models/team01_RFDNCP.py --model_id 5
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

# Every convolution, by parameter name (the checkpoint key without .weight / .bias):
# (input channels per group, output channels, kernel size, bias)
CONVS = {
    'fea_conv': (3, 32, 3, True),
    'B1.c1_d': (32, 8, 1, True),
    'B1.c1_r': (32, 32, 3, True),
    'B1.c2_d': (32, 8, 1, True),
    'B1.c2_r': (32, 32, 3, True),
    'B1.c3_d': (32, 8, 1, True),
    'B1.c3_r': (32, 32, 3, True),
    'B1.c4': (32, 8, 3, True),
    'B1.c5': (32, 32, 1, True),
    'B1.esa.conv1': (32, 8, 1, True),
    'B1.esa.conv_f': (8, 8, 1, True),
    'B1.esa.conv_max': (8, 8, 3, True),
    'B1.esa.conv2': (8, 8, 3, True),
    'B1.esa.conv3': (8, 8, 3, True),
    'B1.esa.conv3_': (8, 8, 3, True),
    'B1.esa.conv4': (8, 32, 1, True),
    'B2.c1_d': (32, 8, 1, True),
    'B2.c1_r': (32, 32, 3, True),
    'B2.c2_d': (32, 8, 1, True),
    'B2.c2_r': (32, 32, 3, True),
    'B2.c3_d': (32, 8, 1, True),
    'B2.c3_r': (32, 32, 3, True),
    'B2.c4': (32, 8, 3, True),
    'B2.c5': (32, 32, 1, True),
    'B2.esa.conv1': (32, 8, 1, True),
    'B2.esa.conv_f': (8, 8, 1, True),
    'B2.esa.conv_max': (8, 8, 3, True),
    'B2.esa.conv2': (8, 8, 3, True),
    'B2.esa.conv3': (8, 8, 3, True),
    'B2.esa.conv3_': (8, 8, 3, True),
    'B2.esa.conv4': (8, 32, 1, True),
    'B3.c1_d': (32, 8, 1, True),
    'B3.c1_r': (32, 32, 3, True),
    'B3.c2_d': (32, 8, 1, True),
    'B3.c2_r': (32, 32, 3, True),
    'B3.c3_d': (32, 8, 1, True),
    'B3.c3_r': (32, 32, 3, True),
    'B3.c4': (32, 8, 3, True),
    'B3.c5': (32, 32, 1, True),
    'B3.esa.conv1': (32, 8, 1, True),
    'B3.esa.conv_f': (8, 8, 1, True),
    'B3.esa.conv_max': (8, 8, 3, True),
    'B3.esa.conv2': (8, 8, 3, True),
    'B3.esa.conv3': (8, 8, 3, True),
    'B3.esa.conv3_': (8, 8, 3, True),
    'B3.esa.conv4': (8, 32, 1, True),
    'B4.c1_d': (32, 8, 1, True),
    'B4.c1_r': (32, 32, 3, True),
    'B4.c2_d': (32, 8, 1, True),
    'B4.c2_r': (32, 32, 3, True),
    'B4.c3_d': (32, 8, 1, True),
    'B4.c3_r': (32, 32, 3, True),
    'B4.c4': (32, 8, 3, True),
    'B4.c5': (32, 32, 1, True),
    'B4.esa.conv1': (32, 8, 1, True),
    'B4.esa.conv_f': (8, 8, 1, True),
    'B4.esa.conv_max': (8, 8, 3, True),
    'B4.esa.conv2': (8, 8, 3, True),
    'B4.esa.conv3': (8, 8, 3, True),
    'B4.esa.conv3_': (8, 8, 3, True),
    'B4.esa.conv4': (8, 32, 1, True),
    'c.0': (128, 32, 1, True),
    'LR_conv': (32, 32, 3, True),
    'upsampler.0': (32, 48, 3, True),
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


class RFDNCP(nn.Module):
    """RFDNCP, ×4: (N, 3, H, W) RGB in 0–255 -> (N, 3, 4H, 4W) RGB in 0–255.

    Built with no arguments; the checkpoint loads strictly (the select_model branch to paste is
    in the module docstring):

        model = RFDNCP()
        model.load_state_dict(torch.load('model_zoo/team01_RFDNCP.pth', map_location='cpu'), strict=True)

    RFDN (Liu et al., ECCV Workshops 2020): fea_conv, the blocks B1..B4 in sequence, c over
    all block outputs, LR_conv, the residual fea_conv(x), pixel-shuffle upsampler.
    """

    input_range = 255.0
    scale = 4
    num_blocks = 4

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
