"""Run recipes as YAML files: `--config FILE` for the scripts, command-line flags override.

A recipe is a flat YAML mapping from option names (the flags without `--`, e.g.
`finetune_iters: 60`) to values; `$ESR_SHARED` in a string value stands for the reference
folder (the `ESR_SHARED` environment variable, default `../shared`).
`parse_with_config` reads it into the parser's defaults, so every flag given on the
command line still wins; `write_resolved_config` writes every option
of a run (recipe and flags merged) as a recipe that `--config` reads back to repeat it.

    python train.py --config options/prfdn/branch_stage1.yaml --iters 50   # recipe, one change
"""
from __future__ import annotations

import argparse
import json
import os

import torch
import yaml

from utils.io.atomic import atomic_write_text
from utils.io.errors import UserError

#: options that describe how a run is invoked, not what it computes: never written to a recipe
NOT_RECORDED = ('config', 'resume', 'no_progress')


class ConfigError(UserError, ValueError):
    """A recipe file that cannot be used (missing, not YAML, unknown option, wrong type);
    a UserError, so the scripts print it as one line."""


def read_yaml(path: str, what: str = 'config file'):
    """The content of a YAML file; ConfigError (one line, naming `what`) if it is missing or
    not YAML."""
    if not os.path.isfile(path):
        raise ConfigError(f'{what} not found: {path}')
    try:
        with open(path, encoding='utf-8') as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as exc:
        where = getattr(exc, 'problem_mark', None)
        line = f' (line {where.line + 1})' if where is not None else ''
        raise ConfigError(f'{path} is not valid YAML{line}') from None
    except UnicodeDecodeError:
        raise ConfigError(f'{path} is not a UTF-8 text file') from None


def read_json_object(path: str, what: str) -> dict:
    """The JSON object (a dict) in the file `path`; UserError (one line, calling the file
    `what`) when it is missing, cannot be read, is not JSON or holds something else."""
    if os.path.isdir(path):
        raise UserError(f'the {what} {path} is a folder, not a file')
    try:
        with open(path, encoding='utf-8') as f:
            found = json.load(f)
    except FileNotFoundError:
        raise UserError(f'{what} not found: {path}') from None
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        why = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0][:160]
        raise UserError(f'cannot read the {what} {path}: {why}') from None
    if not isinstance(found, dict):
        raise UserError(f'the {what} {path} holds no JSON object')
    return found


def read_config(path: str) -> dict:
    """The option mapping of a recipe file. ConfigError if it is missing or not a mapping."""
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f'{path} must be a mapping of option names to values')
    return data


def shared_dir() -> str:
    """The reference folder (checkpoints, benchmark and training images): $ESR_SHARED or ../shared."""
    return os.environ.get('ESR_SHARED') or os.path.join('..', 'shared')


def _expand(value):
    if isinstance(value, str):
        return value.replace('${ESR_SHARED}', shared_dir()).replace('$ESR_SHARED', shared_dir())
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def _check_against_parser(parser: argparse.ArgumentParser, options: dict, path: str) -> dict:
    """Options converted the way argparse would convert them; ConfigError on unknown names."""
    actions = {a.dest: a for a in parser._actions if a.dest != 'help'}
    checked = {}
    for name, value in options.items():
        dest = name.replace('-', '_')
        value = _expand(value)
        if dest not in actions or dest in NOT_RECORDED:
            raise ConfigError(f'{path}: unknown option "{name}"')
        action = actions[dest]
        if value is not None and action.type is not None and not isinstance(value, bool):
            try:
                value = [action.type(v) for v in value] if isinstance(value, list) else action.type(value)
            except (TypeError, ValueError):
                raise ConfigError(f'{path}: option "{name}" has a bad value {value!r}') from None
        if value is not None and action.choices is not None:
            for v in value if isinstance(value, list) else [value]:
                if v not in action.choices:
                    raise ConfigError(f'{path}: option "{name}" must be one of '
                                      f'{", ".join(map(str, action.choices))}, not {v!r}')
        checked[dest] = value
    return checked


def parse_with_config(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """parser.parse_args(argv) with the recipe of `--config FILE` (if given) as defaults.

    Adds `--config` to the parser. Options the recipe sets are no longer required on the
    command line. Raises ConfigError for a bad recipe.
    """
    parser.add_argument('--config', default=None, metavar='FILE',
                        help='YAML recipe of options (flags given on the command line override it)')
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--config', default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        options = _check_against_parser(parser, read_config(known.config), known.config)
        for action in parser._actions:
            if action.dest in options:
                action.required = False
        parser.set_defaults(**options)
    return parser.parse_args(argv)


def resolved_config(args: argparse.Namespace) -> dict:
    """Every option of a run as a recipe mapping (tuples as lists; invocation-only options left out)."""
    out = {}
    for name, value in vars(args).items():
        if name in NOT_RECORDED:
            continue
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def numeric_environment() -> str:
    """One line naming what a run's floating-point results depend on besides its options.

    A CPU convolution sums in an order that depends on the thread count, so the same recipe
    at 1 and 2 threads differs in the last bits of every step, and training compounds that
    (docs/ABLATION.md measures it): the thread count is part of what repeats a run.
    """
    omp = os.environ.get('OMP_NUM_THREADS')
    threads = torch.get_num_threads()
    return (f'torch {torch.__version__}, {threads} CPU thread{"s" if threads != 1 else ""}'
            f' (OMP_NUM_THREADS={omp if omp is not None else "unset"}) in the process that wrote this file')


def write_resolved_config(args: argparse.Namespace, path: str, extra: dict | None = None) -> None:
    """Write the run's options to `path` (atomically) as a recipe `--config` reads back.

    `extra` overrides entries (e.g. the step count an `--epochs` run resolved to). A comment
    line records the torch version and thread count of the writing process (train.py writes
    the file when a run starts or resumes, prune.py when it ends), since repeating a run bit
    for bit needs those too.
    """
    options = resolved_config(args)
    options.update(extra or {})
    text = ('# the resolved options of this run; `--config` with this file repeats it\n'
            f'# {numeric_environment()}\n'
            + yaml.safe_dump(options, sort_keys=True, default_flow_style=False))
    atomic_write_text(path, text)
