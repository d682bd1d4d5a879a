"""The training objective as a set of weighted, named loss terms.

    total = Σ weight_i · term_i

Terms (each a scalar tensor, in 0–1 image units whatever the model's input range):
    pixel    L1 or L2 between the student's output and the HR patch
    distill  output distillation: L1 between the student's and a frozen teacher's outputs;
             or feature distillation: the mean over the student's `distillation_features` of
             the L1 distance to the teacher's (BranchRFDN's branch inputs against RFDN's block
             outputs, as in the PRFDN training)
    features feature distillation as a second term beside output distillation (`feature_weight`
             > 0), which keeps BranchRFDN's branch inputs near RFDN's block outputs while the
             whole model trains on its output

`LossSet.from_config` builds the set from a TrainConfig-like object (`loss`, `pixel_weight`,
`distill`, `distill_weight`, `feature_weight`); the trainer asks the set what it needs (`needs_output`,
`needs_features`, `needs_teacher_output`, `needs_teacher_features`), runs those forwards and
calls the set once per batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.io.errors import UserError

#: pixel losses by name: f(prediction, target) -> mean over every element
PIXEL_LOSSES = {'l1': F.l1_loss, 'l2': F.mse_loss}


class PixelLoss:
    """L1 / L2 between the student output (model range, e.g. 0–255) and HR (0–1)."""
    needs = frozenset({'output'})

    def __init__(self, kind: str, value_range: float):
        self.kind = kind
        self.fn = PIXEL_LOSSES[kind]
        self.value_range = value_range

    def __call__(self, student_out, hr, teacher_out, features, teacher_features) -> torch.Tensor:
        return self.fn(student_out / self.value_range, hr)


class OutputDistillation:
    """L1 between the student's and the teacher's outputs, both in the model range,
    divided by the range (0–1 units)."""
    needs = frozenset({'output', 'teacher_output'})

    def __init__(self, value_range: float):
        self.value_range = value_range

    def __call__(self, student_out, hr, teacher_out, features, teacher_features) -> torch.Tensor:
        return F.l1_loss(student_out, teacher_out) / self.value_range


class FeatureDistillation:
    """Mean over the feature pairs of the L1 distance between the student's and the
    teacher's distillation features. Features live in the model's range (0–255 for RFDN):
    the sum is divided by the range to give 0–1 units."""
    needs = frozenset({'features', 'teacher_features'})

    def __init__(self, value_range: float):
        self.value_range = value_range

    def __call__(self, student_out, hr, teacher_out, features, teacher_features) -> torch.Tensor:
        total = sum(F.l1_loss(f, t) for f, t in zip(features, teacher_features))
        return total / (len(teacher_features) * self.value_range)


#: distillation terms by name ('none' adds no term)
DISTILLATIONS = {'output': OutputDistillation, 'features': FeatureDistillation}


class LossSet:
    """Weighted loss terms; `loss_set(...)` returns {name: detached term, ..., 'total': Σ w·term}
    where only 'total' carries the graph."""

    def __init__(self, terms: list):
        """`terms`: list of (name, weight, term) with `term(student_out, hr, teacher_out,
        features, teacher_features) -> scalar tensor` and `term.needs` (a set of 'output',
        'features', 'teacher_output', 'teacher_features')."""
        if not terms:
            raise UserError('no loss term: the pixel weight is 0 and there is no distillation')
        names = [name for name, _, _ in terms]
        if len(set(names)) != len(names) or 'total' in names:
            raise ValueError(f'loss term names must be unique and not "total": {names}')
        self.terms = list(terms)
        self.needs = frozenset().union(*(term.needs for _, _, term in terms))

    @classmethod
    def from_config(cls, cfg, value_range: float) -> 'LossSet':
        """The terms a TrainConfig asks for: 'pixel' when `cfg.pixel_weight > 0`, 'distill'
        unless `cfg.distill == 'none'`, 'features' when `cfg.feature_weight > 0` (beside output
        distillation or none); `value_range` is the model's input range (255 or 1)."""
        if cfg.loss not in PIXEL_LOSSES:  # an unknown name is an error even at weight 0
            raise UserError(f'unknown pixel loss "{cfg.loss}" ({", ".join(PIXEL_LOSSES)})')
        terms = []
        if cfg.pixel_weight > 0:
            terms.append(('pixel', cfg.pixel_weight, PixelLoss(cfg.loss, value_range)))
        if cfg.distill != 'none':
            if cfg.distill not in DISTILLATIONS:
                raise UserError(f'unknown distillation "{cfg.distill}" '
                                f'(none, {", ".join(DISTILLATIONS)})')
            terms.append(('distill', cfg.distill_weight, DISTILLATIONS[cfg.distill](value_range)))
        if cfg.feature_weight > 0:
            if cfg.distill == 'features':
                raise UserError('feature distillation is already the distillation term: a second '
                                'feature weight would count it twice')
            terms.append(('features', cfg.feature_weight, FeatureDistillation(value_range)))
        return cls(terms)

    @property
    def needs_output(self) -> bool:
        return 'output' in self.needs

    @property
    def needs_features(self) -> bool:
        return 'features' in self.needs

    @property
    def needs_teacher_output(self) -> bool:
        return 'teacher_output' in self.needs

    @property
    def needs_teacher_features(self) -> bool:
        return 'teacher_features' in self.needs

    @property
    def needs_teacher(self) -> bool:
        return self.needs_teacher_output or self.needs_teacher_features

    def __call__(self, student_out: torch.Tensor | None, hr: torch.Tensor,
                 teacher_out: torch.Tensor | None = None, features: list | None = None,
                 teacher_features: list | None = None) -> dict:
        """`student_out`, `teacher_out`: (N, 3, s·h, s·w) in the model range; `hr`: the same
        shape in 0–1; `features`, `teacher_features`: lists of matching tensors."""
        out = {}
        total = 0.0
        for name, weight, term in self.terms:
            value = term(student_out, hr, teacher_out, features, teacher_features)
            out[name] = value.detach()
            total = total + weight * value
        out['total'] = total
        return out
