"""NTIRE Efficient SR entry of team 01: RLFNKP, self-contained (imports only torch).

RLFN-KP: RLFN (Kong et al., CVPR Workshops 2022) with kernel and bias pruning as in AdvancedSR
(NTIRE 2024 Efficient SR).

Input:  (N, 3, H, W) RGB in 0–255, H and W at least 15 (ESA pools with stride 3).
Output: (N, 3, 4H, 4W) RGB in 0–255 (×4 super-resolution).

Every block is defined in this file and CONVS lists the width, kernel size and bias of every
convolution, so `RLFNKP()` takes no arguments; its parameter names are the keys of
`team01_RLFNKP.pth`, which loads with strict=True:

    from models.team01_RLFNKP import RLFNKP
    model = RLFNKP()
    model.load_state_dict(torch.load('model_zoo/team01_RLFNKP.pth', map_location='cpu'), strict=True)

Branch for `select_model` in the organizers' test_demo.py (model_id: the number they assign):

    elif model_id == 3:
        from models.team01_RLFNKP import RLFNKP
        name, data_range = f"{model_id:02}_RLFNKP", 255.0
        model_path = os.path.join('model_zoo', 'team01_RLFNKP.pth')
        model = RLFNKP()
        model.load_state_dict(torch.load(model_path, map_location='cpu'), strict=True)

Generated from the checkpoint's tensors by
    python -m utils.compress.export entry model_zoo/team01_RLFNKP.pth models/team01_RLFNKP.py --model_id 3
"""
import torch.nn as nn
import torch.nn.functional as F

# Every convolution, by parameter name (the checkpoint key without .weight / .bias):
# (input channels per group, output channels, kernel size, bias)
CONVS = {
    'conv_1': (3, 46, 3, True),
    'block_1.c1_r': (46, 48, 3, False),
    'block_1.c2_r': (48, 48, 3, False),
    'block_1.c3_r': (48, 46, 3, False),
    'block_1.c5': (46, 46, 1, False),
    'block_1.esa.conv1': (46, 16, 1, True),
    'block_1.esa.conv_f': (16, 16, 1, True),
    'block_1.esa.conv2': (16, 16, 3, True),
    'block_1.esa.conv3': (16, 16, 3, True),
    'block_1.esa.conv4': (16, 46, 1, True),
    'block_2.c1_r': (46, 48, 1, False),
    'block_2.c2_r': (48, 48, 3, False),
    'block_2.c3_r': (48, 46, 3, False),
    'block_2.c5': (46, 46, 1, False),
    'block_2.esa.conv1': (46, 16, 1, True),
    'block_2.esa.conv_f': (16, 16, 1, True),
    'block_2.esa.conv2': (16, 16, 3, True),
    'block_2.esa.conv3': (16, 16, 3, True),
    'block_2.esa.conv4': (16, 46, 1, True),
    'block_3.c1_r': (46, 48, 3, False),
    'block_3.c2_r': (48, 48, 3, False),
    'block_3.c3_r': (48, 46, 3, False),
    'block_3.c5': (46, 46, 1, False),
    'block_3.esa.conv1': (46, 16, 1, True),
    'block_3.esa.conv_f': (16, 16, 1, True),
    'block_3.esa.conv2': (16, 16, 3, True),
    'block_3.esa.conv3': (16, 16, 3, True),
    'block_3.esa.conv4': (16, 46, 1, True),
    'block_4.c1_r': (46, 48, 3, False),
    'block_4.c2_r': (48, 48, 1, False),
    'block_4.c3_r': (48, 46, 3, False),
    'block_4.c5': (46, 46, 1, False),
    'block_4.esa.conv1': (46, 16, 1, True),
    'block_4.esa.conv_f': (16, 16, 1, True),
    'block_4.esa.conv2': (16, 16, 3, True),
    'block_4.esa.conv3': (16, 16, 3, True),
    'block_4.esa.conv4': (16, 46, 1, True),
    'conv_2': (46, 46, 3, False),
    'upsampler.0': (46, 48, 1, False),
}

NEGATIVE_SLOPE = 0.05  # of every LeakyReLU


def conv(name, stride=1, padding=None, groups=1):
    """The convolution `name` of CONVS; padding k // 2 (same size) unless given."""
    in_per_group, out_channels, kernel_size, bias = CONVS[name]
    if padding is None:
        padding = kernel_size // 2
    return nn.Conv2d(in_per_group * groups, out_channels, kernel_size, stride=stride,
                     padding=padding, bias=bias, groups=groups)


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


class RLFNKP(nn.Module):
    """RLFNKP, ×4: (N, 3, H, W) RGB in 0–255 -> (N, 3, 4H, 4W) RGB in 0–255.

    Built with no arguments; the checkpoint loads strictly (the select_model branch to paste is
    in the module docstring):

        model = RLFNKP()
        model.load_state_dict(torch.load('model_zoo/team01_RLFNKP.pth', map_location='cpu'), strict=True)

    RLFN (Kong et al., CVPR Workshops 2022): conv_1, the blocks block_1..block_4
    in sequence, conv_2, the residual conv_1(x), pixel-shuffle upsampler.
    """

    input_range = 255.0
    scale = 4
    num_blocks = 4

    def __init__(self):
        super().__init__()
        self.conv_1 = conv('conv_1')
        for i in range(1, self.num_blocks + 1):
            setattr(self, f'block_{i}', RLFB(f'block_{i}.'))
        self.conv_2 = conv('conv_2')
        self.upsampler = nn.Sequential(conv('upsampler.0'), nn.PixelShuffle(self.scale))

    def forward(self, x):
        out_feature = self.conv_1(x)
        h = out_feature
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f'block_{i}')(h)
        return self.upsampler(self.conv_2(h) + out_feature)
