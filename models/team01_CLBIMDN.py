"""NTIRE Efficient SR entry of team 01: CLBIMDN, self-contained (imports only torch).

CLB-IMDN: a block-pruned IMDN (Hui et al., ACM MM 2019) trained with collapsible linear blocks
(Wang et al., CVPR Workshops 2022), collapsed into plain convolutions.

Input:  (N, 3, H, W) RGB in 0–1.
Output: (N, 3, 4H, 4W) RGB in 0–1 (×4 super-resolution).

Every block is defined in this file and CONVS lists the width, kernel size and bias of every
convolution, so `CLBIMDN()` takes no arguments; its parameter names are the keys of
`team01_CLBIMDN.pth`, which loads with strict=True:

    from models.team01_CLBIMDN import CLBIMDN
    model = CLBIMDN()
    model.load_state_dict(torch.load('model_zoo/team01_CLBIMDN.pth', map_location='cpu'), strict=True)

Branch for `select_model` in the organizers' test_demo.py (model_id: the number they assign):

    elif model_id == 2:
        from models.team01_CLBIMDN import CLBIMDN
        name, data_range = f"{model_id:02}_CLBIMDN", 1.0
        model_path = os.path.join('model_zoo', 'team01_CLBIMDN.pth')
        model = CLBIMDN()
        model.load_state_dict(torch.load(model_path, map_location='cpu'), strict=True)

Generated from the checkpoint's tensors by
    python -m utils.compress.export entry model_zoo/team01_CLBIMDN.pth models/team01_CLBIMDN.py --model_id 2
"""
import torch
import torch.nn as nn

# Every convolution, by parameter name (the checkpoint key without .weight / .bias):
# (input channels per group, output channels, kernel size, bias)
CONVS = {
    'model.0': (3, 64, 3, True),
    'model.1.sub.0.conv1.0': (64, 64, 3, True),
    'model.1.sub.0.conv2.0': (48, 64, 3, True),
    'model.1.sub.0.conv3.0': (48, 64, 3, True),
    'model.1.sub.0.conv4': (48, 16, 3, True),
    'model.1.sub.0.conv1x1': (64, 64, 1, True),
    'model.1.sub.1.conv1.0': (64, 64, 3, True),
    'model.1.sub.1.conv2.0': (48, 64, 3, True),
    'model.1.sub.1.conv3.0': (48, 64, 3, True),
    'model.1.sub.1.conv4': (48, 16, 3, True),
    'model.1.sub.1.conv1x1': (64, 64, 1, True),
    'model.1.sub.2.conv1.0': (64, 64, 3, True),
    'model.1.sub.2.conv2.0': (48, 64, 3, True),
    'model.1.sub.2.conv3.0': (48, 64, 3, True),
    'model.1.sub.2.conv4': (48, 16, 3, True),
    'model.1.sub.2.conv1x1': (64, 64, 1, True),
    'model.1.sub.3.conv1.0': (64, 64, 3, True),
    'model.1.sub.3.conv2.0': (48, 64, 3, True),
    'model.1.sub.3.conv3.0': (48, 64, 3, True),
    'model.1.sub.3.conv4': (48, 16, 3, True),
    'model.1.sub.3.conv1x1': (64, 64, 1, True),
    'model.1.sub.4.conv1.0': (64, 64, 3, True),
    'model.1.sub.4.conv2.0': (48, 64, 3, True),
    'model.1.sub.4.conv3.0': (48, 64, 3, True),
    'model.1.sub.4.conv4': (48, 16, 3, True),
    'model.1.sub.4.conv1x1': (64, 64, 1, True),
    'model.1.sub.5.conv1.0': (64, 64, 3, True),
    'model.1.sub.5.conv2.0': (48, 64, 3, True),
    'model.1.sub.5.conv3.0': (48, 64, 3, True),
    'model.1.sub.5.conv4': (48, 16, 3, True),
    'model.1.sub.5.conv1x1': (64, 64, 1, True),
    'model.1.sub.6.conv1.0': (64, 64, 3, True),
    'model.1.sub.6.conv2.0': (48, 64, 3, True),
    'model.1.sub.6.conv3.0': (48, 64, 3, True),
    'model.1.sub.6.conv4': (48, 16, 3, True),
    'model.1.sub.6.conv1x1': (64, 64, 1, True),
    'model.1.sub.7': (64, 64, 3, True),
    'model.2': (64, 48, 3, True),
}

NEGATIVE_SLOPE = 0.05  # of every LeakyReLU


def conv(name, stride=1, padding=None, groups=1):
    """The convolution `name` of CONVS; padding k // 2 (same size) unless given."""
    in_per_group, out_channels, kernel_size, bias = CONVS[name]
    if padding is None:
        padding = kernel_size // 2
    return nn.Conv2d(in_per_group * groups, out_channels, kernel_size, stride=stride,
                     padding=padding, bias=bias, groups=groups)


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


class CLBIMDN(nn.Module):
    """CLBIMDN, ×4: (N, 3, H, W) RGB in 0–1 -> (N, 3, 4H, 4W) RGB in 0–1.

    Built with no arguments; the checkpoint loads strictly (the select_model branch to paste is
    in the module docstring):

        model = CLBIMDN()
        model.load_state_dict(torch.load('model_zoo/team01_CLBIMDN.pth', map_location='cpu'), strict=True)

    IMDN (Hui et al., ACM MM 2019) in KAIR's layout: model.0 head conv, model.1 a shortcut
    around the 7 IMDBs and a conv, model.2 the upsampler conv, model.3 pixel shuffle.
    """

    input_range = 1.0
    scale = 4
    num_blocks = 7

    def __init__(self):
        super().__init__()
        body = [IMDB(f'model.1.sub.{i}.') for i in range(self.num_blocks)]
        body.append(conv(f'model.1.sub.{self.num_blocks}'))
        self.model = nn.Sequential(conv('model.0'), ShortcutBlock(nn.Sequential(*body)),
                                   conv('model.2'), nn.PixelShuffle(self.scale))

    def forward(self, x):
        return self.model(x)
