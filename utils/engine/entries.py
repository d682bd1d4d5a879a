"""Published NTIRE entries evaluated as they are: one model file and one checkpoint.

    from utils.engine.entries import EntrySpec, load_entry
    model = load_entry(EntrySpec('../shared/ntire2024/models/team38_SPAN.py',
                                 '../shared/ntire2024/model_zoo/team38_span_ch28_slim.pth',
                                 args='3, 3, upscale=4, feature_channels=28', data_range=1), scale=4)

Organizers add an entry with `from models.teamXX_Name import Name; model = Name(...);
model.load_state_dict(torch.load(ckpt), strict=True)`. Here the file is imported by its path
under a unique module name (nothing is copied; two entries may define blocks of the same
name), its model class is found by the rule of `find_model_class`, built with literal
arguments (`parse_entry_args`), and loaded strictly — or, where that fails, with
strict=False and the missing / unexpected keys counted and reported. Entries written for a
GPU call `.cuda()` while they are imported and built; without CUDA those calls are no-ops
for that time (`cuda_calls_ignored`).

`load_entry` returns an `EntryModel`: the entry's network plus what the evaluator needs to
know, `input_range` (what white is at the input: 1 or 255), `scale`, `model_name`.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn

from utils.io.config import read_yaml, shared_dir
from utils.io.errors import UserError

#: weight wrappers of BasicSR-style checkpoints ({'params': state_dict, ...})
STATE_WRAPPERS = ('params', 'params_ema')

#: the fields of one entry in an entry list (a YAML file)
ENTRY_LIST_FIELDS = ('label', 'entry', 'checkpoint', 'class', 'args', 'state_key', 'data_range')

#: LR side of the input that checks an entry builds and upsamples by the scale
PROBE_SIZE = 32


class EntryError(UserError):
    """A UserError that the entry's description can fix. `fields` names what to check: the
    entry-list fields 'class', 'args', 'state_key' (EntrySpec's class_name, args, state_key)
    and 'scale' (the scale asked for), so that a caller can name its own option for each."""

    def __init__(self, message: str, fields: tuple = ()):
        super().__init__(message)
        self.fields = tuple(fields)


@dataclass
class EntrySpec:
    """One published entry: its model file, checkpoint and how the official harness builds it.

    `data_range` is what white is at the input (1.0 or 255.0); None: not declared (255 is
    used, and the evaluator's first-image check may find that the other range is right).
    """
    path: str
    checkpoint: str
    class_name: str | None = None
    args: str | None = None          # e.g. "3, 3, upscale=4, feature_channels=28"
    state_key: str | None = None     # e.g. 'params_ema'
    data_range: float | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        """The result label: `label`, or the entry file's stem (e.g. team38_SPAN)."""
        return self.label or os.path.splitext(os.path.basename(self.path))[0]


class EntryModel(nn.Module):
    """A published entry's network, with the attributes the evaluator reads.

    forward: (N, 3, H, W) in [0, input_range] -> (N, 3, H·scale, W·scale), same range.
    """

    min_input_size = 1

    def __init__(self, net: nn.Module, model_name: str, scale: int, input_range: float,
                 range_declared: bool):
        super().__init__()
        self.net = net
        self.model_name = model_name
        self.scale = scale
        self.input_range = float(input_range)
        self.range_declared = range_declared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# -- the CUDA calls of published entries ------------------------------------------------------

@contextlib.contextmanager
def cuda_calls_ignored():
    """Within the block, `Module.cuda()` and `Tensor.cuda()` return their object unchanged
    when no CUDA device is present (entries call them in `__init__`; SPAN even runs a
    forward pass there). Restored on exit; with CUDA present nothing is changed."""
    if torch.cuda.is_available():
        yield False
        return
    module_cuda = nn.Module.cuda
    tensor_had_own = 'cuda' in torch.Tensor.__dict__
    tensor_cuda = torch.Tensor.__dict__.get('cuda')
    nn.Module.cuda = lambda self, device=None: self
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield True
    finally:
        nn.Module.cuda = module_cuda
        if tensor_had_own:
            torch.Tensor.cuda = tensor_cuda
        else:
            del torch.Tensor.cuda


# -- importing the file and finding its model class -----------------------------------------

def _module_name(path: str) -> str:
    """A module name of its own for every file: the stem plus a hash of the absolute path."""
    stem = re.sub(r'\W', '_', os.path.splitext(os.path.basename(path))[0])
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
    return f'_esr_entry_{stem}_{digest}'


def import_entry(path: str):
    """Import the model file at `path` as a module (UserError if it cannot be imported).

    The file's folder is not put on sys.path: an entry imports torch (and the standard
    library) only, as the organizers' rules ask.
    """
    if not os.path.isfile(path):
        raise UserError(f'entry file not found: {path}')
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f'{path} is not a Python file')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with cuda_calls_ignored():
            spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # whatever the file's top level raises, sys.exit too
        del sys.modules[name]
        raise UserError(f'cannot import entry {path}: {type(exc).__name__}: {_first_line(exc)}'
                        ' (an entry file must import only torch and the standard library)') from None
    return module


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ''


def _top_level_references(tree: ast.Module) -> tuple[dict, dict, list]:
    """({top-level name: names its definition refers to}, {top-level name: every name and
    attribute name in its code}, [top-level class names]).

    Classes, functions and plain assignments at module level count; code under
    `if __name__ == '__main__':` (a test harness in many entries) does not."""
    refs, words, classes = {}, {}, []

    def names_in(node):
        return ({n.id for n in ast.walk(node) if isinstance(n, ast.Name)},
                {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)})

    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names, attrs = names_in(node)
            refs[node.name] = names - {node.name}
            words[node.name] = names | attrs
            if isinstance(node, ast.ClassDef):
                classes.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            names, attrs = names_in(node.value)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        refs.setdefault(n.id, set()).update(names - {n.id})
                        words.setdefault(n.id, set()).update(names | attrs)
    return refs, words, classes


def _reachable(name: str, refs: dict) -> set:
    """Every top-level name that `name` uses, directly or through other top-level names."""
    seen, stack = set(), list(refs.get(name, ()))
    while stack:
        ref = stack.pop()
        if ref in seen or ref == name or ref not in refs:
            continue
        seen.add(ref)
        stack.extend(refs[ref])
    return seen


def _classes_used_by(name: str, refs: dict, classes: list) -> set:
    """The file's classes that `name` uses: directly (instantiation, base class, annotation)
    or through the file's own functions and module-level names (not through other classes:
    what those use, they use themselves)."""
    used, stack, seen = set(), list(refs.get(name, ())), {name}
    while stack:
        ref = stack.pop()
        if ref in seen or ref not in refs:
            continue
        seen.add(ref)
        if ref in classes:
            used.add(ref)
        else:
            stack.extend(refs[ref])
    return used


#: operations that enlarge a feature map: an SR model's class reaches one of them
UPSAMPLING_OPS = {'PixelShuffle', 'pixel_shuffle', 'interpolate', 'Upsample', 'ConvTranspose2d',
                  'conv_transpose2d'}


def _entry_model_name(path: str) -> str:
    """'team38_SPAN.py' -> 'span': the model name of the organizers' teamXX_Name.py file names."""
    stem = re.sub(r'^team\d+_', '', os.path.splitext(os.path.basename(path))[0], flags=re.I)
    return re.sub(r'[^a-z0-9]', '', stem.lower())


def model_class_candidates(module, source: str, path: str = '') -> list:
    """Names of the model classes that the rule of `find_model_class` leaves (sorted)."""
    refs, words, classes = _top_level_references(ast.parse(source))
    models = [c for c in classes
              if isinstance(getattr(module, c, None), type) and issubclass(getattr(module, c), nn.Module)
              and getattr(module, c).__module__ == module.__name__]
    uses = {c: _classes_used_by(c, refs, classes) for c in classes}
    top = [c for c in models if not any(c in uses[o] for o in classes if o != c)]

    def narrow(keep):
        kept = [c for c in top if keep(c)]
        return kept or top

    if len(top) > 1:  # helpers left unused in the file use none of its other classes
        top = narrow(lambda c: uses[c])
    if len(top) > 1:  # blocks left unused do not upsample; the model does
        top = narrow(lambda c: any(UPSAMPLING_OPS & words.get(n, set())
                                   for n in _reachable(c, refs) | {c}))
    if len(top) > 1 and path:  # the organizers name files teamXX_<model>.py
        wanted = _entry_model_name(path)

        def named_like_file(c):
            name = re.sub(r'[^a-z0-9]', '', c.lower())
            return bool(name) and (name.startswith(wanted) or wanted.startswith(name))
        top = narrow(named_like_file)
    return sorted(top)


def find_model_class(module, path: str, class_name: str | None = None) -> type:
    """The entry's model class.

    Rule: the nn.Module subclass defined in the file that no other class of the file uses —
    neither directly (instantiation, base class) nor through the file's functions and
    module-level names. Where several remain (blocks left unused in the file), these are
    dropped in turn, as long as one is left: classes that use none of the file's other
    classes; classes whose code (with what it uses) never upsamples (PixelShuffle,
    interpolate, ...); classes not named like the file (`teamXX_<Name>.py`). Anything but
    one class left: EntryError about the 'class', listing the candidates.
    `class_name` picks the class by name instead.
    """
    if class_name is not None:
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            known = model_class_candidates(module, _read_source(path), path)
            raise EntryError(f'{path} defines no nn.Module class {class_name}'
                             + (f' (model classes: {", ".join(known)})' if known else ''), ('class',))
        return cls
    candidates = model_class_candidates(module, _read_source(path), path)
    if len(candidates) == 1:
        return getattr(module, candidates[0])
    if not candidates:
        raise EntryError(f'{path} defines no nn.Module class', ('class',))
    raise EntryError(f'{path} defines several model classes ({", ".join(candidates)})', ('class',))


def _read_source(path: str) -> str:
    with open(path, encoding='utf-8') as f:
        return f.read()


# -- arguments -----------------------------------------------------------------------------

def parse_entry_args(text: str | None) -> tuple[tuple, dict]:
    """`'3, 3, upscale=4, feature_channels=28'` -> ((3, 3), {'upscale': 4, 'feature_channels': 28}).

    Python literals only (numbers, strings, booleans, None, tuples, lists, dicts): the text
    is parsed with `ast`, never evaluated. EntryError about the 'args' on anything else.
    """
    if text is None or not text.strip():
        return (), {}
    try:
        call = ast.parse(f'f({text})', mode='eval').body
    except SyntaxError:
        raise EntryError(f'the entry arguments are not an argument list: {text!r} '
                         "(write them as in Python, e.g. '3, 3, upscale=4')", ('args',)) from None
    if not isinstance(call, ast.Call) or not (isinstance(call.func, ast.Name) and call.func.id == 'f'):
        raise EntryError(f'the entry arguments are not an argument list: {text!r}', ('args',))
    args, kwargs = [], {}
    try:
        for node in call.args:
            if isinstance(node, ast.Starred):
                raise ValueError('*')
            args.append(ast.literal_eval(node))
        for kw in call.keywords:
            if kw.arg is None:
                raise ValueError('**')
            kwargs[kw.arg] = ast.literal_eval(kw.value)
    except ValueError:
        raise EntryError(f'the entry arguments take Python literals only (numbers, strings, True/False/None, '
                         f'tuples, lists): {text!r}', ('args',)) from None
    return tuple(args), kwargs


def _call_text(cls: type, args: tuple, kwargs: dict) -> str:
    parts = [repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()]
    return f'{cls.__name__}({", ".join(parts)})'


# -- weights ---------------------------------------------------------------------------------

def read_entry_state(path: str, state_key: str | None = None) -> tuple[dict, str | None]:
    """(state_dict, wrapper key used or None) of an entry's checkpoint, read on the CPU with
    weights_only=True.

    `state_key` names the wrapper ('params', 'params_ema'); without it a checkpoint holding
    exactly one of 'params' / 'params_ema' (and no tensors of its own) is unwrapped, and one
    holding both is an EntryError about the 'state_key'.
    """
    if not os.path.isfile(path):
        raise UserError(f'checkpoint not found: {path}')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # corrupt, not a torch file, pickled objects
        raise UserError(f'cannot read checkpoint {path}: {_first_line(exc)}') from None
    if not isinstance(obj, dict):
        raise UserError(f'checkpoint {path} holds no state_dict')
    used = None
    if state_key is not None:
        if not isinstance(obj.get(state_key), dict):
            keys = [k for k, v in obj.items() if isinstance(v, dict)]
            raise EntryError(f'checkpoint {path} has no "{state_key}" weights'
                             + (f' (it has: {", ".join(keys)})' if keys else ' (it is a plain state_dict)'),
                             ('state_key',))
        obj, used = obj[state_key], state_key
    elif not any(torch.is_tensor(v) for v in obj.values()):
        wrappers = [k for k in STATE_WRAPPERS if isinstance(obj.get(k), dict)]
        if len(wrappers) > 1:
            raise EntryError(f'checkpoint {path} holds both "params" and "params_ema" weights',
                             ('state_key',))
        if wrappers:
            obj, used = obj[wrappers[0]], wrappers[0]
    state = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    if not state:
        raise EntryError(f'checkpoint {path} holds no tensors' + ('' if state_key else ' at its top level'),
                         () if state_key else ('state_key',))
    if all(k.startswith('module.') for k in state):  # saved from DataParallel
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state, used


def load_entry_state(net: nn.Module, state: dict, label: str) -> tuple[list, list]:
    """Load `state` into `net`: strictly, or else with strict=False (as the official harness
    does for some entries). Returns (missing keys, unexpected keys), both empty after a
    strict load. UserError when a tensor's shape differs or no key matches at all."""
    own = net.state_dict()
    mismatched = [f'{k} {tuple(v.shape)} vs {tuple(own[k].shape)}'
                  for k, v in state.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        more = f' (+{len(mismatched) - 3} more)' if len(mismatched) > 3 else ''
        raise EntryError(f'{label}: {len(mismatched)} checkpoint tensors do not fit {type(net).__name__}: '
                         f'{", ".join(mismatched[:3])}{more}', ('class', 'args'))
    if not any(k in own for k in state):
        raise UserError(f'{label}: none of the checkpoint\'s {len(state)} keys is a key of '
                        f'{type(net).__name__} (checkpoint: {", ".join(list(state)[:3])}; '
                        f'model: {", ".join(list(own)[:3])})')
    try:
        net.load_state_dict(state, strict=True)
        return [], []
    except RuntimeError:
        result = net.load_state_dict(state, strict=False)
        return list(result.missing_keys), list(result.unexpected_keys)


# -- putting it together ---------------------------------------------------------------------

#: constructor arguments whose value `infer_entry_args` knows: the image channels, the scale,
#: and the feature width (the output channels of the checkpoint's first convolution on RGB)
CHANNEL_ARGS = re.compile(r'^(num_)?(in|out)(put)?_?(ch|chans|channels|nc|planes)$|^n_colors$')
SCALE_ARGS = frozenset({'upscale', 'scale', 'upscale_factor', 'upscaling_factor', 'up_scale', 'sr_scale'})
WIDTH_ARGS = frozenset({'feature_channels', 'num_feat', 'num_features', 'nf', 'n_feats', 'n_feat', 'dim',
                        'embed_dim', 'channels', 'num_channels', 'feat_channels'})


def _first_conv_width(state: dict) -> tuple[str, int] | None:
    """(key, output channels) of the first 4-D weight in `state` that reads 3 channels."""
    for key, t in state.items():
        if key.endswith('weight') and t.dim() == 4 and t.shape[1] == 3:
            return key, int(t.shape[0])
    return None


def infer_entry_args(cls: type, state: dict, scale: int) -> tuple[dict, str] | None:
    """Constructor keywords for `cls` read from its signature and the checkpoint, or None.

    Image channel arguments (`num_in_ch`, `in_channels`, ...) get 3, scale arguments
    (`upscale`, `upscaling_factor`, ...) `scale`, a width argument (`feature_channels`, `dim`,
    `nf`, ...) the output channels of the checkpoint's first convolution on the RGB image;
    every other argument keeps its default. None when a required argument is none of these.
    Returns (keywords, where the width came from)."""
    import inspect
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    width = _first_conv_width(state)
    kwargs, source = {}, ''
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            return None
        if CHANNEL_ARGS.match(name):
            kwargs[name] = 3
        elif name in SCALE_ARGS:
            kwargs[name] = scale
        elif name in WIDTH_ARGS and width is not None:
            kwargs[name] = width[1]
            source = f'{name} from {width[0]}'
        elif p.default is p.empty:
            return None
    return kwargs, source


def _build(cls: type, args: tuple, kwargs: dict, label: str) -> nn.Module:
    try:
        with cuda_calls_ignored():
            return cls(*args, **kwargs)
    except Exception as exc:  # the entry's constructor may raise anything
        raise EntryError(f'{label}: cannot build {_call_text(cls, args, kwargs)}: {type(exc).__name__}: '
                         f'{_first_line(exc)}', ('args',)) from None


def _fits(net: nn.Module, state: dict) -> bool:
    """Every key of `state` is a key of `net` with the same shape, and vice versa."""
    own = net.state_dict()
    return set(own) == set(state) and all(own[k].shape == v.shape for k, v in state.items())


def load_entry(spec: EntrySpec, scale: int, device: str | torch.device = 'cpu', log=print) -> EntryModel:
    """Build, load and check one published entry; returns it in eval mode on `device`.

    Without `spec.args` the class is built with no arguments; if that fails or its tensors
    do not fit the checkpoint, with `infer_entry_args` (kept only if the checkpoint then
    loads strictly). `log` gets one line for what is not the official default: inferred
    arguments, an unwrapped 'params' / 'params_ema', a strict=False load with its missing /
    unexpected key counts. Raises UserError (one line) on every failure: file, class,
    arguments, weights, or an output that is not `scale` times the input on a 1×3×32×32 probe;
    an EntryError naming the fields to check where the entry's description can fix it.
    """
    label = spec.name
    module = import_entry(spec.path)
    cls = find_model_class(module, spec.path, spec.class_name)
    state, used = read_entry_state(spec.checkpoint, spec.state_key)
    if used and spec.state_key is None:
        log(f'{label}: weights read from the checkpoint\'s "{used}" entry')
    args, kwargs = parse_entry_args(spec.args)
    if spec.args is None:
        try:
            net, problem = _build(cls, args, kwargs, label), None
        except UserError as exc:
            net, problem = None, exc
        inferred = None if net is not None and _fits(net, state) else infer_entry_args(cls, state, scale)
        if inferred and inferred[0]:
            try:
                candidate = _build(cls, (), inferred[0], label)
            except UserError:
                candidate = None
            if candidate is not None and _fits(candidate, state):
                net, kwargs = candidate, inferred[0]
                log(f'{label}: built as {_call_text(cls, (), kwargs)} (no arguments given: channels 3, '
                    f'scale {scale}' + (f', {inferred[1]}' if inferred[1] else '') + ')')
        if net is None:
            raise problem
    else:
        net = _build(cls, args, kwargs, label)
    call = _call_text(cls, args, kwargs)
    missing, unexpected = load_entry_state(net, state, label)
    if missing or unexpected:
        example = ', '.join((missing + unexpected)[:3])
        log(f'{label}: strict loading failed; loaded with strict=False: {len(missing)} missing, '
            f'{len(unexpected)} unexpected keys (e.g. {example})')
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    range_declared = spec.data_range is not None
    model = EntryModel(net, cls.__name__, scale, spec.data_range if range_declared else 255.0,
                       range_declared).to(device).eval()
    _check_scale(model, label, call, device)
    return model


def _check_scale(model: EntryModel, label: str, call: str, device) -> None:
    """One forward pass on a small input: the output must be `scale` times the input."""
    x = torch.rand(1, 3, PROBE_SIZE, PROBE_SIZE, device=device) * model.input_range
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as exc:  # the entry's forward may raise anything
        raise UserError(f'{label}: {call} fails on a 1×3×{PROBE_SIZE}×{PROBE_SIZE} input: '
                        f'{type(exc).__name__}: {_first_line(exc)}') from None
    want = (PROBE_SIZE * model.scale, PROBE_SIZE * model.scale)
    if not torch.is_tensor(y) or y.dim() != 4 or y.shape[1] != 3 or tuple(y.shape[-2:]) != want:
        got = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
        raise EntryError(f'{label}: {call} maps 1×3×{PROBE_SIZE}×{PROBE_SIZE} to {got}, not ×{model.scale}',
                         ('args', 'scale'))


def read_entry_list(path: str) -> list:
    """[EntrySpec] from a YAML file: `entries:` a list of mappings with the fields
    label, entry, checkpoint (paths relative to $ESR_SHARED unless absolute), class, args,
    state_key, data_range (1 or 255). UserError naming the file and entry on any problem."""
    data = read_yaml(path, 'entry list')
    items = data.get('entries') if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise UserError(f'{path}: expected a mapping with a non-empty list "entries"')
    root = shared_dir()
    specs, labels = [], set()
    for i, item in enumerate(items, 1):
        where = f'{path}: entry {i}'
        if not isinstance(item, dict):
            raise UserError(f'{where} is not a mapping')
        unknown = sorted(set(item) - set(ENTRY_LIST_FIELDS))
        if unknown:
            raise UserError(f'{where}: unknown field(s) {", ".join(unknown)} '
                            f'(fields: {", ".join(ENTRY_LIST_FIELDS)})')
        for field in ('entry', 'checkpoint'):
            if not isinstance(item.get(field), str) or not item[field]:
                raise UserError(f'{where}: "{field}" (a path) is required')
        data_range = item.get('data_range')
        if data_range is not None and (isinstance(data_range, bool) or data_range not in (1, 255)):
            raise UserError(f'{where}: data_range must be 1 or 255, not {data_range!r}')
        for field in ('label', 'class', 'args', 'state_key'):
            if item.get(field) is not None and not isinstance(item[field], str):
                raise UserError(f'{where}: "{field}" must be a string')
        spec = EntrySpec(path=os.path.join(root, item['entry']),
                         checkpoint=os.path.join(root, item['checkpoint']),
                         class_name=item.get('class'), args=item.get('args'),
                         state_key=item.get('state_key'),
                         data_range=None if data_range is None else float(data_range),
                         label=item.get('label'))
        if spec.name in labels:
            raise UserError(f'{where}: label {spec.name} is used twice')
        labels.add(spec.name)
        specs.append(spec)
    return specs
