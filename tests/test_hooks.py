"""Architecture hooks of SRModel: the compression code reads architecture facts only from them.

1. An AST check of the compression modules: no import from a model-family module, no
   reference (isinstance, issubclass, `type(m) is ...`) to a model or block class other than
   SRModel, no string naming a registered model or one of its layers.
2. A toy SRModel subclass defining the hooks is channel-pruned, kernel/bias-pruned and
   block-dropped by the unchanged compression code.
"""
import ast
import importlib
import inspect
import pathlib
import re

import pytest
import torch
import torch.nn as nn

from models import MODEL_REGISTRY, RFDN, BranchRFDN, ParallelRFDN, SRModel
from models.blocks import conv_same
from models.registry import scale_from_upsampler
from utils.compress.block_pruning import drop_blocks, num_blocks
from utils.compress.fmp import maskable_convs
from utils.compress.kernel_pruning import bias_prune, eligible_convs
from utils.compress.pruning import example_input, prepare_for_pruning, prune_step
from utils.compress.reparam import branch_to_parallel
from utils.io.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPRESSION_MODULES = ['utils.compress.pruning', 'utils.compress.fmp', 'utils.compress.block_pruning',
                       'utils.compress.kernel_pruning']

pytestmark = pytest.mark.usefixtures('one_thread')


# -- 1. no architecture special cases in the compression code --------------------------------
def family_modules() -> set:
    """Modules that define registered models (models.rfdn, models.prfdn, ...)."""
    return {cls.__module__ for cls in MODEL_REGISTRY.values()}


def layer_names() -> set:
    """Every dotted module name of every registered model (ParallelRFDN also with its
    selection convs), and every non-numeric component of those names."""
    models = [cls() for cls in MODEL_REGISTRY.values()]
    models.append(ParallelRFDN(nf=8, split_as_conv=True, cat_mode='conv'))
    names = set()
    for model in models:
        for name, _ in model.named_modules():
            if name:
                names.add(name)
                names.update(part for part in name.split('.') if not part.isdigit())
    return names


def _docstrings(tree) -> set:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _resolve(node, namespace):
    """The object a Name / dotted Attribute chain refers to in `namespace`, or None."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, namespace)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def _architecture_classes(obj) -> list:
    """Model or block classes (nn.Module subclasses defined in models.*, SRModel excepted)
    in `obj` (a class, or a tuple of them)."""
    items = obj if isinstance(obj, tuple) else (obj,)
    return [c for c in items if inspect.isclass(c) and issubclass(c, nn.Module) and c is not SRModel
            and c.__module__.split('.')[0] == 'models']


def architecture_special_cases(source: str, namespace: dict, families: set, names: set) -> list:
    """Lines of `source` (a module whose globals are `namespace`) that name an architecture."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, 'lineno', '?')
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module in families or node.module.startswith('models.team01_'):
                found.append(f'{line}: imports from the model family {node.module}')
        elif isinstance(node, ast.Import):
            found += [f'{line}: imports {a.name}' for a in node.names if a.name in families]
        elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
            for cls in _architecture_classes(_resolve(node, namespace)):
                found.append(f'{line}: refers to the architecture class {cls.__name__}')
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
            if ' ' in text:                                    # a message, not a name or pattern
                continue
            for token in re.findall(r'[A-Za-z_]\w*(?:\\?\.\w+)*', text):
                parts = token.replace('\\.', '.').split('.')
                prefixes = {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)}
                hit = sorted(prefixes & (names | set(MODEL_REGISTRY)))
                if hit:
                    found.append(f'{line}: string {text!r} names {hit[0]}')
    return found


@pytest.mark.parametrize('module', COMPRESSION_MODULES)
def test_compression_code_has_no_architecture_special_cases(module):
    path = ROOT / (module.replace('.', '/') + '.py')
    namespace = vars(importlib.import_module(module))
    found = architecture_special_cases(path.read_text(), namespace, family_modules(), layer_names())
    assert not found, f'{module}: ' + '; '.join(found)


def test_the_check_finds_each_kind_of_special_case():
    source = '\n'.join([
        'from models.prfdn import ParallelRFDN',
        'from models.blocks import ESA',
        'import torch.nn as nn',
        'def f(model, m):',
        '    """upsampler: a docstring is no special case"""',
        '    if isinstance(model, ParallelRFDN) or type(m) is ESA:',
        '        return [model.upsampler[0]]',
        "    return [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and 'esa' in n]",
        "KEEP = ('conv_1', 'fea_conv')",
        "KEY = r'^model\\.1\\.sub\\.(\\d+)\\.(.+)$'",
        "NAME = 'RFDN'",
        "MESSAGE = 'the model has no such layer'",
    ])
    namespace = {}
    exec(source, namespace)
    found = architecture_special_cases(source, namespace, family_modules(), layer_names())
    text = '\n'.join(found)
    assert '1: imports from the model family models.prfdn' in text
    assert '6: refers to the architecture class ParallelRFDN' in text
    assert '6: refers to the architecture class ESA' in text
    assert "8: string 'esa'" in text
    assert "9: string 'conv_1'" in text and "9: string 'fea_conv'" in text
    assert '10: string' in text and "11: string 'RFDN'" in text
    assert not any(f.startswith(('5:', '12:')) for f in found), found   # docstring, message
    assert not any('nn' in f.split('class ')[-1] for f in found if 'class' in f)  # nn.Conv2d is fine


# -- 2. a new architecture needs only its hooks ------------------------------------------------
class ToyGate(nn.Module):
    """x · sigmoid(conv(x)): a spatial gate standing in for ESA. (N,C,H,W) -> (N,C,H,W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv_same(channels, channels, 3)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(x))


class ToyBlock(nn.Module):
    """x + conv2(lrelu(conv1(x))). (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv_same(channels, channels, 3)
        self.conv2 = conv_same(channels, channels, 3)

    def forward(self, x):
        return x + self.conv2(nn.functional.leaky_relu(self.conv1(x), 0.05))


class ToySR(SRModel):
    """head, `up` registered before the body (so the last conv in module order is not the
    output conv), blocks `blocks.0..nb-1`, tail, gate, pixel shuffle.
    (N, 3, H, W) in 0–1 -> (N, 3, sH, sW) in 0–1. Not registered."""

    input_range = 1.0

    def __init__(self, nf: int = 8, nb: int = 3, upscale: int = 2, conv_overrides: dict | None = None):
        super().__init__()
        self.scale, self.num_blocks = upscale, nb
        self.head = conv_same(3, nf, 3)
        self.up = nn.Sequential(conv_same(nf, 3 * upscale ** 2, 3), nn.PixelShuffle(upscale))
        self.blocks = nn.ModuleList([ToyBlock(nf) for _ in range(nb)])
        self.tail = conv_same(nf, nf, 3)
        self.gate = ToyGate(nf)
        self._finish_init(conv_overrides)

    def forward(self, x):
        h = self.head(x)
        y = h
        for block in self.blocks:
            y = block(y)
        return self.up(self.gate(self.tail(y)) + h)

    def fixed_output_layers(self):
        return [self.up[0]]

    def attention_convs(self):
        return [self.gate.conv]

    def block_names(self):
        return [f'blocks.{i}' for i in range(self.num_blocks)]

    @classmethod
    def config_from_state_dict(cls, sd):
        nb = 0
        while f'blocks.{nb}.conv1.weight' in sd:
            nb += 1
        return dict(nf=int(sd['head.weight'].shape[0]), nb=nb, upscale=scale_from_upsampler(sd['up.0.weight']))


def toy(seed=0, **kw):
    torch.manual_seed(seed)
    return ToySR(**kw).eval()


def test_toy_model_is_channel_pruned_through_its_hooks():
    model = prepare_for_pruning(toy())
    x = example_input(model, 12)
    n_before = sum(p.numel() for p in model.parameters())
    prune_step(model, 0.5, 'l1')
    assert sum(p.numel() for p in model.parameters()) < 0.6 * n_before
    assert model.up[0].out_channels == 12                          # 3·s², from fixed_output_layers
    assert model.head.out_channels < 8 and model.head.in_channels == 3
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 3, 24, 24)
    state = model.state_dict()
    rebuilt = ToySR.from_state_dict(state)                         # widths from the tensors
    rebuilt.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), out)
    assert 'up.0' not in maskable_convs(model) and 'tail' in maskable_convs(model)


def test_toy_model_kernel_and_bias_pruning_keep_head_and_gate():
    model = toy()
    assert eligible_convs(model) == ['up.0', 'blocks.0.conv1', 'blocks.0.conv2', 'blocks.1.conv1',
                                     'blocks.1.conv2', 'blocks.2.conv1', 'blocks.2.conv2', 'tail']
    removed = bias_prune(model)
    assert 'head' not in removed and 'gate.conv' not in removed and 'tail' in removed
    assert model.head.bias is not None and model.gate.conv.bias is not None and model.tail.bias is None


def test_toy_model_blocks_are_dropped_through_its_hooks():
    model = toy(nb=3)
    assert num_blocks(model) == 3
    pruned = drop_blocks(model, [2])
    assert type(pruned) is ToySR and pruned.num_blocks == 2
    old, new = model.state_dict(), pruned.state_dict()
    assert torch.equal(new['blocks.1.conv2.weight'], old['blocks.2.conv2.weight'])
    assert torch.equal(new['blocks.0.conv1.bias'], old['blocks.0.conv1.bias'])
    assert all(torch.equal(new[k], old[k]) for k in new if not k.startswith('blocks.'))
    with torch.no_grad():
        assert pruned(torch.rand(1, 3, 10, 10)).shape == (1, 3, 20, 20)
    with pytest.raises(ValueError, match='out of range'):
        drop_blocks(model, [4])


def test_models_without_hooks_get_one_line_errors():
    torch.manual_seed(0)
    branch = BranchRFDN.from_rfdn(RFDN(nf=8, num_modules=2))
    with pytest.raises(TypeError, match='no droppable blocks'):
        drop_blocks(branch, [1])
    with pytest.raises(UserError) as err:
        prepare_for_pruning(branch_to_parallel(branch, grouped=True))
    assert 'grouped' in str(err.value) and '\n' not in str(err.value)
    with pytest.raises(TypeError, match='not a models.SRModel'):
        prepare_for_pruning(nn.Sequential(nn.Conv2d(3, 3, 1)))
