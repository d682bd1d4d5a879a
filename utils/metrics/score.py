"""NTIRE ESR score of a model against a baseline, from a results.json of test_demo.py.

score_m = exp(2 · m / m_baseline) for m in runtime, FLOPs, params; the total weighs them
0.7 / 0.15 / 0.15. The baseline itself scores e² ≈ 7.389 on each; lower is better.

    python -m utils.metrics.score results.json team01_PRFDN [team01_RLFNKP ...] rfdn_baseline \
        [--runtime_key runtime_256]
"""
from __future__ import annotations

import argparse
import math

from utils.io.config import read_json_object
from utils.io.errors import UserError, check_option

WEIGHTS = {'runtime': 0.7, 'flops': 0.15, 'params': 0.15}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def score_values(record: dict, label: str, runtime_key: str = 'runtime_256') -> dict:
    """{'runtime', 'flops', 'params'} of the result `label`. UserError unless each is a finite
    number above 0: a zero, negative or NaN measurement is a broken run, and would score as a
    model infinitely fast, faster than nothing, or not at all."""
    if runtime_key not in record:
        runtime_keys = [k for k, v in record.items() if 'runtime' in k and _is_number(v)]
        raise UserError(f'{label} has no {runtime_key}; its runtime keys: {", ".join(runtime_keys) or "none"}')
    values = {}
    for name, key in (('runtime', runtime_key), ('flops', 'flops'), ('params', 'num_parameters')):
        if key not in record:
            raise UserError(f'{label} has no {key}')
        value = record[key]
        if not _is_number(value):
            raise UserError(f'{key} of {label} is a {type(value).__name__}, not a number')
        check_option(f'{key} of {label}', value, above=0)
        values[name] = float(value)
    return values


def ntire_score(model: dict, baseline: dict, runtime_key: str = 'runtime_256',
                labels: tuple = ('model', 'baseline')) -> dict:
    """The NTIRE scores of the result `model` against `baseline` (`labels` name them in errors)."""
    m, b = score_values(model, labels[0], runtime_key), score_values(baseline, labels[1], runtime_key)
    ratios = {k: m[k] / b[k] for k in WEIGHTS}
    for k, ratio in ratios.items():
        if ratio > 300:  # exp(2 · ratio) overflows a float past ~354
            raise UserError(f'{labels[0]} has {ratio:.3g} times the {k} of {labels[1]}: '
                            'too far apart to score (values in different units?)')
    out = {k: math.exp(2.0 * r) for k, r in ratios.items()}
    out['ratios'] = ratios
    out['total'] = sum(WEIGHTS[k] * out[k] for k in WEIGHTS)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('results')
    p.add_argument('model', nargs='+', help='result labels to score (the last positional is the baseline)')
    p.add_argument('baseline')
    p.add_argument('--runtime_key', default='runtime_256',
                   help='runtime_256 (median at 256² LR) or e.g. Set5_ave_runtime')
    a = p.parse_args(argv)
    res = read_json_object(a.results, 'results file')
    for k in (*a.model, a.baseline):
        if k not in res:
            raise UserError(f'{k} not in {a.results} (has: {", ".join(res)})')
        if not isinstance(res[k], dict):
            raise UserError(f'{k} in {a.results} is not a JSON object of values')
    # every score before the first line is printed: a bad record gives no partial table
    base = ntire_score(res[a.baseline], res[a.baseline], a.runtime_key, (a.baseline, a.baseline))
    scores = {m: ntire_score(res[m], res[a.baseline], a.runtime_key, (m, a.baseline)) for m in a.model}
    for model, s in scores.items():
        print(f'{model} vs {a.baseline} ({a.runtime_key}): runtime ×{s["ratios"]["runtime"]:.3f} -> '
              f'{s["runtime"]:.3f}, FLOPs ×{s["ratios"]["flops"]:.3f} -> {s["flops"]:.3f}, params '
              f'×{s["ratios"]["params"]:.3f} -> {s["params"]:.3f}; total {s["total"]:.3f} '
              f'(baseline {base["total"]:.3f}; lower is better)')
    return 0


if __name__ == '__main__':
    from utils.io.errors import run_cli
    run_cli(main)
