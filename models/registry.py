"""Model registry and the checkpoint -> model builder.

Every architecture registers its class here. A class knows how to recognise its own
state_dict (`recognises`) and how to read its hyper-parameters back from the tensors
(`config_from_state_dict`), so any checkpoint this project writes is rebuilt from its
tensors alone: widths, kernel sizes and bias flags included.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from utils.io.errors import UserError

from .blocks import apply_conv_overrides, conv_overrides_from_state_dict

MODEL_REGISTRY: dict[str, type] = {}


def register_model(cls):
    """Class decorator: makes `cls` buildable by name and recognisable from checkpoints."""
    if cls.__name__ in MODEL_REGISTRY:
        raise KeyError(f'model {cls.__name__} registered twice')
    MODEL_REGISTRY[cls.__name__] = cls
    return cls


class SRModel(nn.Module):
    """Base class of the super-resolution models of this repository.

    forward: (N, 3, H, W) in [0, input_range] -> (N, 3, H·scale, W·scale), same range.
    """

    #: value that white maps to at the input (255 for RFDN/RLFN, 1 for IMDN)
    input_range: float = 255.0
    #: smallest LR height/width the network accepts (ESA's strided pooling needs 15)
    min_input_size: int = 1

    scale: int

    # -- to be provided by subclasses -----------------------------------------------
    @classmethod
    def recognises(cls, state_dict: dict) -> bool:
        raise NotImplementedError

    @classmethod
    def config_from_state_dict(cls, state_dict: dict) -> dict:
        raise NotImplementedError

    # -- common -------------------------------------------------------------------------
    def _finish_init(self, conv_overrides: dict | None) -> None:
        apply_conv_overrides(self, conv_overrides)

    @classmethod
    def from_state_dict(cls, state_dict: dict) -> 'SRModel':
        """Build an instance whose every convolution matches `state_dict` (no loading)."""
        kwargs = cls.config_from_state_dict(state_dict)
        model = cls(**kwargs)
        overrides = conv_overrides_from_state_dict(model, state_dict)
        if overrides:
            model = cls(**kwargs, conv_overrides=overrides)
        return model


def scale_from_upsampler(weight: torch.Tensor, out_channels: int = 3) -> int:
    """Upscale factor of a pixel-shuffle upsampler from its conv weight (out·s², in, k, k)."""
    s = int(round(math.sqrt(weight.shape[0] / out_channels)))
    if s * s * out_channels != weight.shape[0]:
        raise ValueError(f'upsampler has {weight.shape[0]} output channels, not {out_channels}·s²')
    return s


def count_indexed(state_dict: dict, prefix: str, suffix: str) -> int:
    """Number of consecutive i = 1, 2, ... for which f'{prefix}{i}{suffix}' is a key."""
    n = 0
    while f'{prefix}{n + 1}{suffix}' in state_dict:
        n += 1
    return n


def build_model(name: str, **kwargs) -> SRModel:
    """Build a registered model by class name (case-insensitive)."""
    cls = get_model_class(name)
    return cls(**kwargs)


def get_model_class(name: str) -> type:
    lookup = {k.lower(): v for k, v in MODEL_REGISTRY.items()}
    if name.lower() not in lookup:
        raise UserError(f'unknown model "{name}"; known: {", ".join(sorted(MODEL_REGISTRY))}')
    return lookup[name.lower()]


def recognise(state_dict: dict) -> type | None:
    """The registered class whose layout `state_dict` has, or None."""
    matches = [cls for cls in MODEL_REGISTRY.values() if cls.recognises(state_dict)]
    if len(matches) > 1:
        # the most specific class (a subclass) wins over its parents
        matches = [c for c in matches if not any(o is not c and issubclass(o, c) for o in matches)]
    return matches[0] if len(matches) == 1 else None
