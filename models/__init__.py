"""Architectures of this repository and the checkpoint -> model builder.

    from models import load_model
    model = load_model('model_zoo/team01_PRFDN.pth')   # architecture read from the tensors

`build_model(name, **kwargs)` builds by class name; `MODEL_REGISTRY` lists them all.
"""
from __future__ import annotations

import os

import torch

from utils.io.checkpoint import describe_mismatch, load_strict, read_state_dict
from utils.io.errors import UserError

from . import (  # noqa: F401  (registers the families)
    clb_imdn,  # noqa: F401
    imdn,
    prfdn,
    rfdn,
    rlfn,
)
from .clb_imdn import CLBIMDN
from .imdn import IMDN
from .prfdn import BranchRFDN, ParallelRFDN
from .registry import MODEL_REGISTRY, SRModel, build_model, get_model_class, recognise, register_model
from .rfdn import RFDN
from .rlfn import RLFN, RLFN_NTIRE2022

__all__ = ['MODEL_REGISTRY', 'SRModel', 'build_model', 'get_model_class', 'recognise',
           'register_model', 'model_from_state_dict', 'load_model', 'load_recognised_model', 'RFDN', 'RLFN',
           'RLFN_NTIRE2022', 'IMDN', 'BranchRFDN', 'ParallelRFDN', 'CLBIMDN', 'CONVERSIONS', 'convert_from',
           'UnrecognisedModelError']

# training-time architectures that start from a pre-trained model of another family:
# target class name -> (source class name, classmethod building the target from the source)
CONVERSIONS = {
    'BranchRFDN': ('RFDN', BranchRFDN.from_rfdn),   # PRFDN: branches around RFDN's blocks
    'CLBIMDN': ('IMDN', CLBIMDN.from_imdn),         # CLB: 3×3 + parallel 1×1, same function
}


class UnrecognisedModelError(UserError):
    """A state_dict whose tensor names fit none of the registered architectures."""


def _unrecognised(what: str) -> UnrecognisedModelError:
    return UnrecognisedModelError(f'cannot recognise the architecture of {what}: its tensor names fit none '
                                  f'of this repository\'s models ({", ".join(sorted(MODEL_REGISTRY))})')


def model_from_state_dict(state_dict: dict, name: str | None = None,
                          label: str = 'checkpoint') -> SRModel:
    """Build the architecture that `state_dict` describes and load it strictly.

    `name` forces a registered class; otherwise the class is recognised from the keys
    (UnrecognisedModelError when none fits). Raises UserError (one line) when the class does
    not fit, listing missing/unexpected/mismatched keys.
    """
    if name is not None:
        cls = get_model_class(name)
    else:
        cls = recognise(state_dict)
        if cls is None:
            raise _unrecognised(label)
    try:
        model = cls.from_state_dict(state_dict)
    except (KeyError, ValueError, IndexError, TypeError):
        raise UserError(f'{label} does not fit {cls.__name__}: '
                        f'{describe_mismatch(cls(), state_dict)}') from None
    load_strict(model, state_dict, label)
    _check_runs(model, label)
    return model


def _check_runs(model: SRModel, label: str) -> None:
    """One forward pass on the smallest input: widths that are consistent tensor by tensor
    can still disagree between layers (a hand-edited or corrupt checkpoint)."""
    size = max(getattr(model, 'min_input_size', 1), 4)
    in_channels = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, size, size))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise UserError(f'{label}: the layer widths do not fit together ({first})') from None


def load_model(path: str, name: str | None = None, device: str | torch.device = 'cpu') -> SRModel:
    """Read a checkpoint file and return the model in eval mode on `device`."""
    state_dict = read_state_dict(path)
    model = model_from_state_dict(state_dict, name, label=os.path.basename(path))
    return model.to(device).eval()


def convert_from(target: str, path: str, device: str | torch.device = 'cpu', **options) -> SRModel:
    """Build a `target` model (see CONVERSIONS) from the pre-trained checkpoint at `path`.

    Raises UserError when `target` has no conversion or the checkpoint is not of its
    source family (e.g. an RLFN given for CLBIMDN).
    """
    if target not in CONVERSIONS:
        raise UserError(f'no conversion builds {target}: conversions build '
                        f'{", ".join(sorted(CONVERSIONS))}')
    source, convert = CONVERSIONS[target]
    return convert(load_model(path, source), **options).to(device)


def load_recognised_model(path: str, device='cpu', what: str = 'checkpoint'):
    """`models.load_model` with the architecture recognised from the tensor names; an
    UnrecognisedModelError names the file as `what` (e.g. the caller's option) and `path`.
    Returns the model in eval mode."""
    state = read_state_dict(path)
    if recognise(state) is None:
        raise _unrecognised(f'{what} {path}')
    return model_from_state_dict(state, label=os.path.basename(path)).to(device).eval()
