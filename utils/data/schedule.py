"""Patch-size schedules: '64:1000,160:500:4' = 1000 steps of 64² LR patches, then 500 of 160²
with batch 4."""
from __future__ import annotations

import re

from utils.io.errors import UserError

#: what a schedule looks like, for the messages about a malformed one
SCHEDULE_FORMAT = ('PATCH:STEPS[:BATCH][,...] with PATCH >= 8, STEPS >= 1 and BATCH >= 1, '
                   'e.g. 64:1000,160:500')


def parse_patch_schedule(text: str | None, default_patch: int, total_iters: int) -> list:
    """'64:1000,160:500:4' -> [(64, 1000, None), (160, 500, 4)]: (LR patch size, steps, batch).

    A stage's batch is optional (None: the run's batch size); a larger-patch stage with a
    smaller batch keeps the pixels per step, hence the step time, comparable. Without a
    schedule, one stage of `default_patch` for `total_iters`. UserError on a malformed text.
    """
    if not text:
        return [(default_patch, total_iters, None)]
    stages = []
    for part in text.split(','):
        m = re.fullmatch(r'\s*(\d+)\s*:\s*(\d+)\s*(?::\s*(\d+)\s*)?', part)
        if not m or int(m.group(1)) < 8 or int(m.group(2)) < 1 or (m.group(3) and int(m.group(3)) < 1):
            raise UserError(f'bad patch schedule "{text}": expected {SCHEDULE_FORMAT}')
        stages.append((int(m.group(1)), int(m.group(2)), int(m.group(3)) if m.group(3) else None))
    return stages


def stage_at(schedule: list, step: int) -> tuple:
    """The (patch, steps, batch) stage that global step `step` (0-based) falls in.

    Stages may also be given as (patch, steps) pairs (batch None)."""
    found = schedule[-1]
    for stage in schedule:
        if step < stage[1]:
            found = stage
            break
        step -= stage[1]
    return (found[0], found[1], found[2] if len(found) > 2 else None)


def patch_size_at(schedule: list, step: int) -> int:
    return stage_at(schedule, step)[0]
