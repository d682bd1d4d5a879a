"""NTIRE ESR score of a model against a baseline, from a results.json of test_demo.py.

score_m = exp(2 · m / m_baseline) for m in runtime, FLOPs, params; the total weighs them
0.7 / 0.15 / 0.15. The baseline itself scores e² ≈ 7.389 on each; lower is better.

    python -m utils.metrics.score results.json team01_PRFDN [team01_RLFNKP ...] rfdn_baseline \
        [--runtime_key runtime_256]
"""
from __future__ import annotations

import argparse
import json
import math
import sys

WEIGHTS = {'runtime': 0.7, 'flops': 0.15, 'params': 0.15}


def ntire_score(model: dict, baseline: dict, runtime_key: str = 'runtime_256') -> dict:
    values = {'runtime': (model[runtime_key], baseline[runtime_key]),
              'flops': (model['flops'], baseline['flops']),
              'params': (model['num_parameters'], baseline['num_parameters'])}
    out = {k: math.exp(2.0 * v / b) for k, (v, b) in values.items()}
    out['ratios'] = {k: v / b for k, (v, b) in values.items()}
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
    with open(a.results) as f:
        res = json.load(f)
    for k in (*a.model, a.baseline):
        if k not in res:
            print(f'error: {k} not in {a.results} (has: {", ".join(res)})', file=sys.stderr)
            return 2
    base = ntire_score(res[a.baseline], res[a.baseline], a.runtime_key)
    for model in a.model:
        s = ntire_score(res[model], res[a.baseline], a.runtime_key)
        print(f'{model} vs {a.baseline} ({a.runtime_key}): runtime ×{s["ratios"]["runtime"]:.3f} -> '
              f'{s["runtime"]:.3f}, FLOPs ×{s["ratios"]["flops"]:.3f} -> {s["flops"]:.3f}, params '
              f'×{s["ratios"]["params"]:.3f} -> {s["params"]:.3f}; total {s["total"]:.3f} '
              f'(baseline {base["total"]:.3f}; lower is better)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
