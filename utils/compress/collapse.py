"""Collapse a model trained with collapsible linear blocks into its plain inference form.

    from utils.compress.collapse import collapse_model
    imdn = collapse_model(clb_model)     # CLBIMDN -> IMDN, same function, IMDN's keys

The input model is left untouched; the result is a new model in eval mode.
"""
from __future__ import annotations

import copy

import torch.nn as nn

from models.blocks import conv_overrides_from_state_dict
from models.clb_imdn import CLBIMDN, CollapsibleConv, collapse_modules
from models.imdn import IMDN

__all__ = ['collapse_model', 'collapse_modules', 'CollapsibleConv']


def collapse_model(model: nn.Module) -> nn.Module:
    """A new plain model computing `model`'s function with every CollapsibleConv folded.

    A CLBIMDN becomes an `IMDN` of the same in/out channels, nc, nb, upscale and slope,
    whose state_dict loads strictly into that IMDN (pruned widths and kernels are kept
    through conv overrides). Any other module is deep-copied and collapsed in place.
    """
    folded = collapse_modules(copy.deepcopy(model))
    if isinstance(model, CLBIMDN):
        state = folded.state_dict()
        kwargs = model.imdn_config()
        plain = IMDN(**kwargs)
        overrides = conv_overrides_from_state_dict(plain, state)
        if overrides:
            plain = IMDN(**kwargs, conv_overrides=overrides)
        plain.load_state_dict(state, strict=True)
        folded = plain
    return folded.eval()
