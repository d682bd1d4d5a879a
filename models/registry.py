"""Model registry and the checkpoint -> model builder.

Every architecture registers its class here. A class knows how to recognise its own
state_dict (`recognises`) and how to read its hyper-parameters back from the tensors
(`config_from_state_dict`), so any checkpoint this project writes is rebuilt from its
tensors alone: widths, kernel sizes and bias flags included.

`SRModel` also carries the architecture facts the compression code (`utils.compress`)
needs, as hooks with defaults that the families override: which layers keep their output
width, how to make the model traceable for channel pruning, which convs weight, kernel and
bias pruning leave alone, and which blocks block pruning may drop. The compression code
reads only these hooks, never class or layer names.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn

from utils.io.errors import UserError

from .blocks import apply_conv_overrides, conv_overrides_from_state_dict, convs_inside

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
    #: module classes of the spatial-attention units (see `attention_convs`)
    attention_types: tuple = ()

    scale: int

    # -- to be provided by subclasses -----------------------------------------------
    @classmethod
    def recognises(cls, state_dict: dict) -> bool:
        raise NotImplementedError

    @classmethod
    def config_from_state_dict(cls, state_dict: dict) -> dict:
        raise NotImplementedError

    # -- compression hooks (read by utils.compress; defaults suit a plain chain of convs) --
    def fixed_output_layers(self) -> list:
        """Modules whose output channels channel pruning must keep (Torch-Pruning's ignored
        layers). Default: the last Conv2d in module order, taken to be the conv making the
        out·s² channels that the pixel shuffle turns into the (N, out, sH, sW) image."""
        return _convs(self)[-1:]

    def prepare_for_pruning(self) -> 'SRModel':
        """This model made traceable by Torch-Pruning's dependency graph, in place and
        without changing its function; returns `self`. Raises UserError when the model
        cannot be channel-pruned at all. Default: nothing to do."""
        return self

    def pruning_excluded_convs(self) -> list:
        """Convs whose weights unstructured (weight) pruning must leave dense, besides
        `fixed_output_layers()`: e.g. fixed 0/1 selection convs that folding removes afterwards.
        Default: none."""
        return []

    def attention_convs(self) -> list:
        """Convs of spatial-attention units (ESA): those inside modules of `attention_types`.
        Their large receptive field and their biases are their purpose, so kernel pruning and
        bias pruning leave them alone."""
        return convs_inside(self, self.attention_types) if self.attention_types else []

    def kernel_prune_keep(self) -> list:
        """Convs that kernel pruning (k×k -> 1×1) never replaces and bias pruning never
        strips: the first conv in module order (its input is the image, 3 channels) and
        `attention_convs()`."""
        first = _convs(self)[:1]
        return first + [m for m in self.attention_convs() if all(m is not f for f in first)]

    def block_names(self) -> list:
        """Dotted module names of the blocks that block pruning may drop, in forward order.

        Positional: the i-th name (0-based) is where the i-th block lives in a model of the
        same class with fewer blocks (`B1`, `B2`, ...). Default: [] (no droppable blocks).
        """
        return []

    def drop_blocks_state(self, state: dict, keep: list) -> OrderedDict:
        """`state` (this model's state_dict) rewired for the same class with only the
        blocks numbered `keep` (1-based, ascending, not empty).

        Block keep[j]'s tensors move to the place of block j+1 (`block_names()[j]`), those
        of the dropped blocks go, every other tensor is kept; all are cloned. Families whose
        other layers depend on the number of blocks override this and adjust its result.
        """
        names = self.block_names()
        moved = {names[old - 1]: names[new] for new, old in enumerate(keep)}
        out = OrderedDict()
        for key, value in state.items():
            block = next((n for n in names if key.startswith(n + '.')), None)
            if block is None:
                out[key] = value.clone()
            elif block in moved:
                out[moved[block] + key[len(block):]] = value.clone()
        return out

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


def _convs(module: nn.Module) -> list:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def compression_hooks(model: nn.Module) -> SRModel:
    """`model` itself, checked to provide SRModel's compression hooks (TypeError otherwise)."""
    if not isinstance(model, SRModel):
        raise TypeError(f'{type(model).__name__} is not a models.SRModel, so it has no architecture '
                        f'hooks for compression')
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
