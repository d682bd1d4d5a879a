"""NTIRE ESR evaluation: PSNR, runtime, FLOPs, params, activations, memory.

    python test_demo.py                       # every checkpoint in model_zoo/ + bicubic
    python test_demo.py --data_dir DIR --save_dir results --model_id 0 [--include_test]
    python test_demo.py --checkpoint my.pth --hr_dir ../shared/benchmark/Set5/HR
    python test_demo.py --entry teamXX_Name.py --checkpoint teamXX.pth [--entry_class NAME]
                        [--entry_args '3, 3, upscale=4'] [--state_key params_ema] [--data_range 1]
    python test_demo.py --entry_list options/ntire2024_entries.yaml   # the published field (+ bicubic)

Datasets: the NTIRE layouts under --data_dir (DIV2K_LSDIR_valid_HR/_LR, or
DIV2K_valid_HR + DIV2K_valid_LR_bicubic/X4), any --hr_dir folders (LR from --lr_dir or made
by MATLAB bicubic), or else the built-in sample set. Writes results.json, results.txt (NTIRE
layout), results.md (markdown table) and results.png (PSNR vs runtime), and the SR images
under --save_dir.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import torch

from models import MODEL_REGISTRY, UnrecognisedModelError, load_model
from models.zoo import MODEL_ZOO
from utils.compress.export import OnnxSR
from utils.data.eval_sets import NoTestSetError, check_set, discover_ntire_sets, folder_set, sample_set
from utils.engine.entries import EntryError, EntrySpec, load_entry, read_entry_list
from utils.engine.evaluate import (
    BicubicUpsampler,
    complexity,
    evaluate,
    preflight,
    results_table,
    set_record,
    write_results,
)
from utils.io.checkpoint import acquire_output_lock, check_output_dir, check_output_file, release_output_lock
from utils.io.errors import UserError, check_device, check_option, run_cli
from utils.metrics.model_summary import count_params, interleaved_runtime, measure_runtime


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the NTIRE command line
    p.add_argument('--data_dir', default='data', help='folder holding the NTIRE dataset folders')
    p.add_argument('--save_dir', default='results', help='SR images go to SAVE_DIR/<model>/<set>/')
    p.add_argument('--model_id', type=int, default=None,
                   help='one model of the zoo table: '
                   + ', '.join(f'{k}={v[0]}' for k, v in MODEL_ZOO.items()))
    p.add_argument('--include_test', action='store_true', help='also run the NTIRE test set')
    p.add_argument('--ssim', action='store_true', help='also compute SSIM on Y')
    # this repository's additions
    p.add_argument('--model', default=None, help=f'architecture name ({", ".join(sorted(MODEL_REGISTRY))}); '
                   'default: recognised from the checkpoint')
    p.add_argument('--checkpoint', default=None, nargs='+', help='checkpoint file(s) to evaluate')
    p.add_argument('--labels', default=None, nargs='+',
                   help='result labels for the --checkpoint files, in order (default: file names)')
    p.add_argument('--model_zoo', default=None,
                   help='folder of checkpoints (default model_zoo/; beside --entry_list only when given)')
    p.add_argument('--entry', default=None, metavar='PY',
                   help='a published entry file (teamXX_Name.py, loaded by path, never copied) evaluated '
                   'with the weights of --checkpoint (one file), the way the organizers load it')
    p.add_argument('--entry_class', default=None,
                   help='the model class of --entry (default: the one model class the file defines)')
    p.add_argument('--entry_args', default=None,
                   help="arguments of the --entry class, Python literals only: "
                   "'3, 3, upscale=4, feature_channels=28'")
    p.add_argument('--state_key', default=None,
                   help='the checkpoint entry holding the --entry weights, e.g. params or params_ema '
                   '(default: the checkpoint itself, or its only params/params_ema)')
    p.add_argument('--data_range', type=float, default=None, choices=(1.0, 255.0),
                   help='input range of the models (what white is: 1 or 255), forced; default: the '
                   'registry family\'s range (entries: 255), switched to the other one if the first image '
                   'shows that one is clearly right')
    p.add_argument('--entry_list', default=None, metavar='YAML',
                   help='published entries to evaluate beside the other models (see '
                   'options/ntire2024_entries.yaml; paths relative to $ESR_SHARED)')
    p.add_argument('--hr_dir', nargs='+', default=None, help='HR folder(s) to evaluate on')
    p.add_argument('--lr_dir', nargs='+', default=None,
                   help='LR folder(s) in the order of --hr_dir, files {name}x{scale}.png; "-" or a '
                   'missing folder at the end: LR made by MATLAB bicubic')
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--fp16', action='store_true', help='half precision (CUDA only)')
    p.add_argument('--tile', type=int, default=None, help='run the LR in tiles of this size')
    p.add_argument('--tile_overlap', type=int, default=32,
                   help='LR pixels that neighbouring tiles share (0 or more; capped at half the --tile)')
    p.add_argument('--results', default='results.json', help='results JSON path (results.txt, .md and '
                   '.png are written beside it)')
    p.add_argument('--no_bicubic', action='store_true', help='leave out the bicubic reference row')
    p.add_argument('--onnx', nargs=2, metavar=('ONNX', 'SOURCE_CKPT'), default=None,
                   help='also evaluate an ONNX export (onnxruntime, CPU); its params/FLOPs are '
                   "counted on SOURCE_CKPT, the checkpoint it was exported from")
    p.add_argument('--no_save', action='store_true', help='do not save SR images')
    p.add_argument('--runtime_rounds', type=int, default=0,
                   help='time the 256² runtime of all models in turns, this many rounds of 3 calls '
                   'each, after the evaluation (0: each model on its own, 5 calls)')
    p.add_argument('--sample_max_side', type=int, default=256,
                   help='centre-crop the built-in sample photographs to this HR size')
    args = p.parse_args(argv)
    args.model_zoo_given = args.model_zoo is not None
    args.model_zoo = args.model_zoo or 'model_zoo'
    return args


def load_checkpoint(path: str, args, device):
    """models.load_model with --model; a checkpoint whose architecture is not recognised from
    its tensors asks for --model."""
    try:
        return load_model(path, args.model, device)
    except UnrecognisedModelError as exc:
        raise UserError(f'{exc}; pass --model NAME') from None


def load_onnx_checked(path: str, source: str, src, scale: int) -> OnnxSR:
    """The ONNX model of --onnx PATH SOURCE, refused unless it holds SOURCE's weights and
    upscales by --scale: its params and FLOPs are reported from SOURCE."""
    import onnx
    if not os.path.isfile(path):
        raise UserError(f'ONNX file not found: {path}')
    try:
        weights = sum(int(torch.Size(t.dims).numel()) for t in onnx.load(path).graph.initializer)
    except Exception as exc:  # onnx raises protobuf's DecodeError and others for a non-ONNX file
        raise UserError(f'{path} is not an ONNX model ({type(exc).__name__})') from None
    if weights != count_params(src):
        raise UserError(f'--onnx {path} holds {weights} weights, but {source} has {count_params(src)} '
                        'parameters: give the checkpoint it was exported from')
    if src.scale != scale:
        raise UserError(f'{source} is a ×{src.scale} model but --scale is {scale}')
    size = max(src.min_input_size, 16)
    try:
        model = OnnxSR(path, src.scale, src.input_range, src.min_input_size)
        out = model(torch.rand(1, 3, size, size) * src.input_range)
    except Exception as exc:  # onnxruntime's errors share no base class
        raise UserError(f'{path} does not run on a 1×3×{size}×{size} input: {str(exc).splitlines()[0]}') from None
    if tuple(out.shape) != (1, 3, size * scale, size * scale):
        raise UserError(f'{path} maps a 1×3×{size}×{size} input to {tuple(out.shape)}, not a ×{scale} output')
    return model


def unique_labels(paths: list) -> list:
    """[(label, path)]: the file stem, or parent/stem where two files share a stem."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    labels = [f'{os.path.basename(os.path.dirname(os.path.abspath(p)))}/{s}' if stems.count(s) > 1 else s
              for p, s in zip(paths, stems)]
    if len(set(labels)) != len(labels):
        raise UserError('two --checkpoint arguments have the same folder and file name')
    return list(zip(labels, paths))


def select_checkpoints(args) -> list:
    """[(label, path)] of the models to evaluate, checked to exist."""
    if args.entry:
        return []  # --checkpoint holds the weights of the --entry
    if args.checkpoint:
        if args.labels is None:
            return unique_labels(args.checkpoint)
        if len(args.labels) != len(args.checkpoint) or len(set(args.labels)) != len(args.labels):
            raise UserError(f'--labels needs {len(args.checkpoint)} distinct names, one per --checkpoint')
        return list(zip(args.labels, args.checkpoint))
    if args.labels is not None:
        raise UserError('--labels names --checkpoint files; give --checkpoint too')
    if args.model_id is not None:
        if args.model_id not in MODEL_ZOO:
            raise UserError(f'unknown --model_id {args.model_id}; known: '
                            + ', '.join(f'{k} ({v[0]})' for k, v in MODEL_ZOO.items()))
        label, names = MODEL_ZOO[args.model_id]
        for name in names:
            path = os.path.join(args.model_zoo, name)
            if os.path.isfile(path):
                return [(label, path)]
        raise UserError(f'--model_id {args.model_id} ({label}): none of {", ".join(names)} '
                        f'in {args.model_zoo}/ (point --model_zoo at the folder that has it)')
    if args.entry_list and not args.model_zoo_given:
        return []  # the listed entries (and --checkpoint files), the model zoo only when asked for
    if not os.path.isdir(args.model_zoo):
        raise UserError(f'model zoo folder not found: {args.model_zoo}')
    paths = sorted(glob.glob(os.path.join(args.model_zoo, '*.pth')) +
                   glob.glob(os.path.join(args.model_zoo, '*.pt')))
    return [(os.path.splitext(os.path.basename(p))[0], p) for p in paths]


def select_entries(args) -> list:
    """[EntrySpec]: --entry (weights from --checkpoint, label from --labels) and --entry_list."""
    specs = []
    if args.entry:
        if not args.checkpoint or len(args.checkpoint) != 1:
            raise UserError('--entry needs exactly one --checkpoint: the weights of the entry')
        if args.labels is not None and len(args.labels) != 1:
            raise UserError('--labels takes one name for the --entry')
        if args.model is not None:
            raise UserError('--model names an architecture of this repository; an --entry brings its '
                            'own class (--entry_class)')
        specs.append(EntrySpec(args.entry, args.checkpoint[0], args.entry_class, args.entry_args,
                               args.state_key, args.data_range, args.labels[0] if args.labels else None))
    elif args.entry_class or args.entry_args or args.state_key:
        raise UserError('--entry_class, --entry_args and --state_key describe an --entry; give --entry too')
    if args.entry_list:
        for spec in read_entry_list(args.entry_list):
            if spec.data_range is None:
                spec.data_range = args.data_range
            specs.append(spec)
    return specs


#: the options of an --entry that fix an EntryError about each field, and how to say so
ENTRY_ADVICE = {'class': 'pass --entry_class NAME', 'args': 'check --entry_args',
                'state_key': 'pass --state_key KEY', 'scale': 'check --scale'}


def load_entry_checked(spec: EntrySpec, listed: bool, args, device):
    """load_entry; an EntryError also says what to change: the options of --entry, or the
    fields of a `listed` entry in --entry_list (the scale is --scale for both)."""
    try:
        return load_entry(spec, args.scale, device)
    except EntryError as exc:
        if not exc.fields:
            raise
        if listed:
            in_list = [f'"{field}"' for field in exc.fields if field != 'scale']
            advice = [f'check {" / ".join(in_list)} of {spec.name} in {args.entry_list}'] if in_list else []
            advice += [ENTRY_ADVICE['scale']] if 'scale' in exc.fields else []
        else:
            advice = [ENTRY_ADVICE[field] for field in exc.fields]
        raise UserError(f'{exc}; {" or ".join(advice)}') from None


def select_sets(args) -> list:
    if args.hr_dir:
        lr_dirs = [None if d == '-' else d for d in (args.lr_dir or [])]
        if len(lr_dirs) > len(args.hr_dir):
            raise UserError('more --lr_dir than --hr_dir folders')
        lr_dirs += [None] * (len(args.hr_dir) - len(lr_dirs))
        return [folder_set(h, l, args.scale) for h, l in zip(args.hr_dir, lr_dirs)]
    sets = []
    if os.path.isdir(args.data_dir):
        try:
            sets = discover_ntire_sets(args.data_dir, args.scale, args.include_test)
        except NoTestSetError as exc:
            raise UserError(f'--include_test: {exc}') from None
    if not sets:
        if args.include_test:
            raise UserError(f'--include_test: no NTIRE data under {args.data_dir}')
        s = sample_set(args.scale, args.sample_max_side)
        print(f'No dataset found under {args.data_dir}/: evaluating on the {s.description}.')
        return [s]
    return sets


def onnx_runtime_256(model) -> float:
    """Median ms of an ONNX model on a 1×3×256×256 LR (CPU), timed as `complexity` times a network."""
    x = torch.rand(1, 3, 256, 256) * model.input_range
    return measure_runtime(model, x, warmup=2, repeats=5)['median_ms']


def runtime_in_turns(models: list, results: dict, rounds: int, device) -> None:
    """Replace each network's `runtime_256` by its median over `rounds` rounds in which every
    network is timed in turn (3 calls each, 1×3×256×256 LR): on a CPU whose speed drifts,
    models timed one after another are compared across different phases of the machine,
    which can move a runtime ratio by 20% or more. Bicubic keeps its own timing."""
    nets = {label: m for label, m in models if label != 'bicubic'}
    inputs = {}
    for label, m in nets.items():
        p = next(iter(m.parameters()), None) if isinstance(m, torch.nn.Module) else None
        dtype = p.dtype if p is not None else torch.float32
        on = device if isinstance(m, torch.nn.Module) else torch.device('cpu')
        inputs[label] = torch.rand(1, 3, 256, 256, device=on, dtype=dtype) * m.input_range
    print(f'timing {len(nets)} models in turns at 256² ({rounds} rounds × 3 calls)')
    for label, t in interleaved_runtime(nets, inputs, rounds=rounds, repeats=3).items():
        results[label]['runtime_256'] = t['median_ms']
        results[label]['runtime_256_times'] = t['times_ms']


def check_output_locations(args) -> None:
    """UserError before any work when --results (and its .txt/.md/.png) or --save_dir cannot be
    written, or when an output file would replace a file this run reads."""
    inputs = list(args.checkpoint or []) + list(args.onnx or []) + [args.entry, args.entry_list]
    if not args.checkpoint and os.path.isdir(args.model_zoo):
        inputs += glob.glob(os.path.join(args.model_zoo, '*.pt*'))
    for folder in (args.hr_dir or []) + [d for d in (args.lr_dir or []) if d != '-']:
        if os.path.isdir(folder):
            inputs += [os.path.join(folder, name) for name in os.listdir(folder)]
    base = os.path.splitext(args.results)[0]
    for path in (args.results, base + '.txt', base + '.md', base + '.png'):
        check_output_file(path, '--results', inputs)
    if not args.no_save:
        check_output_dir(args.save_dir, '--save_dir')


@torch.no_grad()  # evaluation only; leaves the caller's grad mode as it was
def main(argv=None) -> int:
    args = parse_args(argv)
    device = check_device('--device', args.device)
    if args.fp16 and device.type != 'cuda':
        raise UserError('--fp16 needs --device cuda (a CPU runs half-precision convolutions '
                        'through a slow fallback; tests/test_inference.py checks the fp16 path on CPU)')
    if args.tile is not None and args.tile < 16:
        raise UserError('--tile must be at least 16 LR pixels')
    if args.runtime_rounds < 0:
        raise UserError('--runtime_rounds must be 0 or more')
    check_option('--scale', args.scale, at_least=1)
    if args.tile_overlap < 0:
        raise UserError(f'--tile_overlap must be 0 or more LR pixels, got {args.tile_overlap} (a negative '
                        'overlap leaves gaps between the tiles)')
    check_option('--sample_max_side', args.sample_max_side, at_least=1)
    check_output_locations(args)

    # Everything that can fail on bad input is checked before the first model runs.
    sets = select_sets(args)
    for s in sets:
        check_set(s)
    models = []
    entries = select_entries(args)
    for label, path in select_checkpoints(args):
        model = load_checkpoint(path, args, device)
        if model.scale != args.scale:
            if args.checkpoint or args.model_id is not None:
                raise UserError(f'{path} is a ×{model.scale} model but --scale is {args.scale}')
            print(f'skipping {label}: ×{model.scale} model, evaluating ×{args.scale}')
            continue
        if args.data_range is not None:
            model.input_range = args.data_range
        if args.fp16:
            model = model.half()
        models.append((label, model))
    for i, spec in enumerate(entries):
        model = load_entry_checked(spec, not (args.entry and i == 0), args, device)  # --entry comes first
        models.append((spec.name, model.half() if args.fp16 else model))
    onnx_counts = {}
    if args.onnx:
        onnx_path, source = args.onnx
        src = load_checkpoint(source, args, 'cpu')
        label = os.path.splitext(os.path.basename(onnx_path))[0] + ' (onnx)'
        models.append((label, load_onnx_checked(onnx_path, source, src, args.scale)))
        onnx_counts[label] = src
    if not args.no_bicubic:
        models.append(('bicubic', BicubicUpsampler(args.scale)))
    if not models:
        raise UserError(f'no model to evaluate: {args.model_zoo}/ has no checkpoint')
    labels = [label for label, _ in models]
    if len(set(labels)) != len(labels):
        twice = sorted({label for label in labels if labels.count(label) > 1})
        raise UserError(f'two models have the label {", ".join(twice)}: give them distinct --labels / '
                        'entry list labels')
    if labels == ['bicubic']:
        print(f'warning: no model found: {args.model_zoo}/ has no ×{args.scale} checkpoint (*.pth, *.pt); '
              'evaluating the bicubic reference only (give --checkpoint FILE or --model_zoo DIR)',
              file=sys.stderr)
    # from here on this run writes --results: a second run on the same file refuses to start
    acquire_output_lock(args.results, '--results')
    # Every model's first output on the first image, before any evaluation: a NaN/Inf output
    # stops the run before anything is written, and an input range that is clearly wrong is
    # replaced by the other one unless --data_range (or the entry's data_range) forces it.
    warned = {}
    for label, model in models:
        if label != 'bicubic':
            forced = getattr(model, 'range_declared', args.data_range is not None)
            warned[label] = preflight(model, sets[0], device, args.tile, args.tile_overlap, args.fp16,
                                      label, range_forced=forced, range_option='--data_range')

    print(f'device: {device}' + (' (fp16)' if args.fp16 else '') + f'; ×{args.scale}; sets: '
          + ', '.join(f'{s.name} ({len(s)} images)' for s in sets))
    results = {}
    for label, model in models:
        name = getattr(model, 'model_name', type(model).__name__)
        print(f'{label}: {name}')
        record = {'model': name, 'device': str(device)}
        if label != 'bicubic':
            record['input_range'] = model.input_range
        if label in onnx_counts:  # counted on the PyTorch model, timed as ONNX below
            record.update(complexity(onnx_counts[label], runtime_input=None, label=label))
            record['runtime_256'] = onnx_runtime_256(model)
        else:
            record.update(complexity(model, device=device, label=label))
        checked = warned.get(label, {'warnings': [], 'note': None})
        if checked['note']:
            record['input_range_note'] = checked['note']
        given = list(checked['warnings'])
        for i, s in enumerate(sets):
            save = None if args.no_save else os.path.join(args.save_dir, label, s.name)
            res = evaluate(model, s, device, args.tile, args.tile_overlap,
                           args.fp16 and label != 'bicubic', args.ssim, save,
                           label=label, guard=i > 0, range_option='--data_range')
            given += res['warnings']
            record.update(set_record(s.name, res))
            if i == 0 and s.name != 'valid':
                record.update(set_record('valid', res))  # NTIRE key names for the first set
        if given:
            record['warnings'] = given
        results[label] = record

    if args.runtime_rounds:
        runtime_in_turns(models, results, args.runtime_rounds, device)

    names = [s.name for s in sets]
    base = os.path.splitext(args.results)[0]
    write_results(results, names, args.results, base + '.txt', base + '.png', base + '.md')
    release_output_lock(args.results)
    print(results_table(results, names))
    suspect = [label for label, r in results.items() if r.get('warnings')]
    if suspect:
        print(f'warning: the scores of {", ".join(suspect)} are probably wrong (far below bicubic); '
              f'the causes are in the warnings above and under "warnings" in {args.results}')
    print(f'wrote {args.results}, {base}.txt, {base}.md, {base}.png'
          + ('' if args.no_save else f'; SR images under {args.save_dir}/'))
    return 0


if __name__ == '__main__':
    run_cli(main)
