"""Benchmark of the training-data pipeline on a synthetic set in the LSDIR layout.

    python -m utils.data.benchmark --root /tmp/esr_bench --phases generate startup old prepare wait

Phases (results accumulate in ROOT/results.json; --doc renders them all as a Markdown table):
  generate  N HR images of 1024x768 per --sizes (smooth random fields plus band-limited
            texture: PNGs at about 40% of the raw size, like photographs) with their ×4 LR
            (OpenCV area downscaling: any LR of the right size serves for timing), in
            ROOT/lsdir_N/{HR,X4}/train/NNNNNNN/. At most --distinct different images are
            made; larger sets hard-link to them (decoding costs the same; the OS file cache
            may hold them, so reads are as if from a fast disk).
  startup   `train.py` (RFDN, batch 8, 48² LR patches, 2 workers, 5 steps) per size: seconds
            from launch to the 5th step in log.csv, peak resident memory of any process of
            the run (VmHWM of the trainer and of its DataLoader workers, polled from /proc),
            bytes the run wrote to disk (/proc/PID/io write_bytes) against the size of its
            checkpoints and log.
  old       the same with the loader this package replaced (decode every image at start-up,
            keep all in memory), run from `git archive` of the last commit that has
            utils/data.py, stopped at --mem_cap_gb or --timeout.
  prepare   `python -m utils.data.prepare --lmdb` on the --prepare_size set: time, sizes.
  wait      share of step time spent waiting for data (train.py --profile) for RFDN at batch
            16, 64² patches, 2 workers, from the PNG set and from its prepared LMDB.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np

from utils.data import TrainingSet, find_training_pairs
from utils.io.atomic import atomic_write_bytes, atomic_write_text
from utils.io.checkpoint import check_output_dir, check_output_file
from utils.io.config import read_json_object
from utils.io.errors import UserError, check_option, run_cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HR_SIZE = (768, 1024)


# -- synthetic data -------------------------------------------------------------------------
def synthetic_image(seed: int) -> np.ndarray:
    """768x1024x3 uint8: three octaves of smooth random colour fields plus Gaussian-filtered
    noise texture whose strength varies over the image (flat and detailed regions)."""
    rng = np.random.default_rng(seed)
    h, w = HR_SIZE

    def field(rows, cols, amplitude):
        small = rng.random((rows, cols, 3), dtype=np.float32) * amplitude
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img = field(4, 5, 170) + field(24, 32, 50) + field(96, 128, 25)
    texture = cv2.GaussianBlur(rng.standard_normal((h, w, 3), dtype=np.float32), (5, 5), 0.8) * 10
    img += texture * np.clip(field(6, 8, 1.5) - 0.3, 0, 1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _hr_lr_paths(root: str, i: int) -> tuple:
    folder = f'{(i // 1000 + 1) * 1000:07d}'  # LSDIR: 0001000/ holds images 0 to 999
    return (os.path.join(root, 'HR', 'train', folder, f'{i:07d}.png'),
            os.path.join(root, 'X4', 'train', folder, f'{i:07d}x4.png'))


def _make_distinct(args: tuple) -> None:
    pool_root, i = args
    hr_path, lr_path = _hr_lr_paths(pool_root, i)
    if os.path.isfile(hr_path) and os.path.isfile(lr_path):
        return
    hr = synthetic_image(i)
    lr = cv2.resize(hr, (HR_SIZE[1] // 4, HR_SIZE[0] // 4), interpolation=cv2.INTER_AREA)
    for path, img in ((lr_path, lr), (hr_path, hr)):  # HR last: it marks the pair complete
        ok, encoded = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        atomic_write_bytes(path, encoded.tobytes())


def generate(root: str, n: int, distinct: int, workers: int) -> str:
    """ROOT/lsdir_N in the LSDIR layout (hard links into ROOT/pool). Returns its path."""
    pool_root = os.path.join(root, 'pool')
    count = min(n, distinct)
    # the pool's processes end by SIGTERM: they must not inherit main()'s handler for it
    default_sigterm = (signal.SIGTERM, signal.SIG_DFL)
    with multiprocessing.get_context('fork').Pool(workers, signal.signal, default_sigterm) as pool:
        for _ in pool.imap_unordered(_make_distinct, [(pool_root, i) for i in range(count)], chunksize=8):
            pass
    set_root = os.path.join(root, f'lsdir_{n}')
    for i in range(n):
        for src, dst in zip(_hr_lr_paths(pool_root, i % count), _hr_lr_paths(set_root, i)):
            if not os.path.exists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.link(src, dst)
    return set_root


# -- measuring a process tree ---------------------------------------------------------------
def _children() -> dict:
    """{parent pid: [child pids]} of all processes."""
    tree = {}
    for name in os.listdir('/proc'):
        if name.isdigit():
            try:
                with open(f'/proc/{name}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(name))
    return tree


def _tree(pid: int) -> list:
    tree, todo, found = _children(), [pid], []
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(tree.get(p, []))
    return found


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _write_bytes(pid: int) -> int:
    try:
        with open(f'/proc/{pid}/io') as f:
            return int(re.search(r'^write_bytes:\s*(\d+)', f.read(), re.M).group(1))
    except (OSError, AttributeError):
        return 0


def _folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)


def measure(cmd: list, cwd: str, log_csv: str | None, timeout: float, mem_cap_gb: float,
            stderr_path: str, until_step: int = 5) -> dict:
    """Run `cmd`, polling its process tree every 0.1 s. Returns seconds to log.csv's row of
    `until_step` (None if not reached), total seconds, peak RSS (GB) of any one process (and
    of the launched process, and of its children: DataLoader workers), bytes written by the
    tree, how it ended and its stdout."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'), PYTHONUNBUFFERED='1')
    t0 = time.time()
    with open(stderr_path, 'w') as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                start_new_session=True)
    peak_kb, written, step_at, ended = {}, {}, None, 'finished'
    load = os.getloadavg()[0]
    try:
        while proc.poll() is None:
            for pid in _tree(proc.pid):
                peak_kb[pid] = max(peak_kb.get(pid, 0), _status_kb(pid, 'VmHWM'))
                written[pid] = max(written.get(pid, 0), _write_bytes(pid))
            if step_at is None and log_csv and os.path.isfile(log_csv):
                with open(log_csv) as f:
                    if any(line.split(',')[0] == str(until_step) for line in f):
                        step_at = os.path.getmtime(log_csv) - t0
            now_gb = max((_status_kb(p, 'VmRSS') for p in peak_kb), default=0) / 2 ** 20
            if now_gb > mem_cap_gb or time.time() - t0 > timeout:
                ended = f'stopped at {"the memory cap" if now_gb > mem_cap_gb else "the timeout"}'
                break
            time.sleep(0.1)
    finally:  # stopped, interrupted or terminated: no process of the run outlives the benchmark
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0]
    children_kb = max([v for p, v in peak_kb.items() if p != proc.pid], default=0)
    return {'to_step_s': None if step_at is None else round(step_at, 1),
            'total_s': round(time.time() - t0, 1), 'peak_rss_gb': round(max(peak_kb.values()) / 2 ** 20, 2),
            'peak_main_gb': round(peak_kb.get(proc.pid, 0) / 2 ** 20, 2),
            'peak_children_gb': round(children_kb / 2 ** 20, 2),
            'written_mb': round(sum(written.values()) / 1e6, 1), 'ended': ended,
            'returncode': proc.returncode, 'load_before': round(load, 2), 'stdout': out[-2000:]}


def _train_cmd(python_args: list, data_dir: str, out_dir: str) -> list:
    return [sys.executable, 'train.py', '--model', 'RFDN', '--data_dir', data_dir, '--out_dir', out_dir,
            '--val_hr_dir', 'none', '--log_every', '1', '--save_every', '100000', *python_args]


def old_loader_repo(root: str) -> tuple:
    """(folder, commit) of the newest commit that has utils/data.py (the eager loader),
    unpacked with `git archive` (the working tree is not touched)."""
    commits = subprocess.run(['git', 'rev-list', '--max-count=200', 'HEAD'], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    for commit in commits:
        probe = subprocess.run(['git', 'cat-file', '-e', f'{commit}:utils/data.py'], cwd=REPO)
        if probe.returncode == 0:
            break
    else:
        raise UserError('no commit with utils/data.py in this repository')
    folder = os.path.join(root, 'old_loader')
    marker = os.path.join(folder, '.commit')
    if not (os.path.isfile(marker) and open(marker).read() == commit):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        archive = subprocess.run(['git', 'archive', commit], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(['tar', '-x', '-C', folder], input=archive, check=True)
        with open(marker, 'w') as f:
            f.write(commit)
    return folder, commit


def _cached_count(stderr_path: str) -> str:
    """The old loader's last 'caching training images: k/n' progress, if any."""
    with open(stderr_path, errors='replace') as f:
        found = re.findall(r'caching training images:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)', f.read())
    return f'{found[-1][0]}/{found[-1][1]}' if found else ''


# -- phases ---------------------------------------------------------------------------------
def _log_rows(log_csv: str) -> list:
    import csv
    if not os.path.isfile(log_csv):
        return []
    with open(log_csv) as f:
        return [r for r in csv.DictReader(f) if r.get('loss')]


def decoded_gb(data: str) -> float:
    """What decoding the whole set takes in memory (HR + LR, uint8 RGB), from the index."""
    index = TrainingSet(find_training_pairs([data], 4), 4, 1, progress=False)
    lr_pixels = int(np.prod(index.lr_shapes, axis=1).sum())
    return round(lr_pixels * 3 * (1 + 16) / 1e9, 2)


def run_startup(root: str, n: int, old: bool, args) -> dict:
    """The median (by time to the 5th step) of --repeat runs; 'runs' lists all of them."""
    data = os.path.join(root, f'lsdir_{n}')
    if not os.path.isdir(data):
        raise UserError(f'{data} missing: run the generate phase first')
    cwd, commit = old_loader_repo(root) if old else (REPO, None)
    out_dir = os.path.join(root, 'runs', f'{"old" if old else "new"}_startup_{n}')
    cmd = _train_cmd(['--batch_size', '8', '--patch_size', '48', '--workers', '2', '--iters', '5']
                     + ([] if old else ['--no_progress']), data, out_dir)
    stderr_path = out_dir + '.stderr'
    os.makedirs(os.path.dirname(stderr_path), exist_ok=True)
    runs = []
    for _ in range(1 if old else args.repeat):
        shutil.rmtree(out_dir, ignore_errors=True)
        r = measure(cmd, cwd, os.path.join(out_dir, 'log.csv'), args.timeout, args.mem_cap_gb, stderr_path)
        r['out_dir_mb'] = round(_folder_bytes(out_dir) / 1e6, 1) if os.path.isdir(out_dir) else 0.0
        rows = _log_rows(os.path.join(out_dir, 'log.csv'))
        if r['to_step_s'] is not None and len(rows) >= 5:
            # the log's clock starts with the loop: launch -> 1st step = launch -> 5th - (5th - 1st)
            first_to_fifth = float(rows[4]['time']) - float(rows[0]['time'])
            r['to_first_step_s'] = round(r['to_step_s'] - first_to_fifth, 1)
            r['step_s'] = round(float(np.median([float(x['step_ms']) for x in rows[1:5]])) / 1000, 2)
        r['cached'] = _cached_count(stderr_path) if old else ''
        runs.append(r)
    runs.sort(key=lambda r: (r['to_step_s'] is None, r['to_step_s'] or 0))
    result = dict(runs[len(runs) // 2])
    result['runs'] = [r['to_step_s'] for r in runs]
    result['decoded_gb'] = decoded_gb(data)
    result['cmd'] = ' '.join(cmd[1:])
    result['commit'] = commit
    return result


def run_prepare(root: str, n: int, args) -> dict:
    out = os.path.join(root, f'prepared_{n}')
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, '-m', 'utils.data.prepare', '--data_dir', os.path.join(root, f'lsdir_{n}'),
           '--out', out, '--lmdb', '--workers', '2', '--no_progress']
    result = measure(cmd, REPO, None, args.timeout_prepare, args.mem_cap_gb, out + '.stderr')
    for key, folders in (('png_gb', ('HR', 'X4')), ('lmdb_gb', ('HR.lmdb', 'X4.lmdb'))):
        result[key] = round(sum(_folder_bytes(os.path.join(out, d)) for d in folders) / 1e9, 2)
    result['source_gb'] = round(_folder_bytes(os.path.join(root, f'lsdir_{n}')) / 1e9, 2)
    result['cmd'] = ' '.join(cmd[1:])
    return result


def run_wait(root: str, n: int, source: str, args) -> dict:
    data = (os.path.join(root, f'lsdir_{n}') if source == 'png'
            else os.path.join(root, f'prepared_{n}', 'HR.lmdb'))
    if not os.path.isdir(data):
        raise UserError(f'{data} missing: run the generate / prepare phases first')
    out_dir = os.path.join(root, 'runs', f'wait_{source}_{n}')
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = _train_cmd(['--batch_size', '16', '--patch_size', '64', '--workers', '2', '--iters',
                      str(args.wait_steps), '--profile', '--no_progress'], data, out_dir)
    result = measure(cmd, REPO, None, args.timeout, args.mem_cap_gb, out_dir + '.stderr')
    m = re.search(r'profile: ([\d.]+)% of step time waiting for data '
                  r'\(([\d.]+) s of ([\d.]+) s over (\d+) steps', result['stdout'])
    if not m:
        raise UserError(f'no profile line from train.py (see {out_dir}.stderr)')
    result.update(wait_pct=float(m.group(1)), wait_s=float(m.group(2)), step_total_s=float(m.group(3)),
                  steps=int(m.group(4)), cmd=' '.join(cmd[1:]))
    return result


# -- report ---------------------------------------------------------------------------------
def _shown(cmd: str) -> str:
    """A stored command line as typed: `python train.py ...`."""
    return cmd if cmd.startswith('python') else f'python {cmd}'


def render(results: dict) -> str:
    lines = ['# Training-data pipeline benchmark', '',
             'Produced by `python -m utils.data.benchmark` (utils/data/benchmark.py; its docstring '
             'describes the synthetic LSDIR-layout set and how each figure is measured), on a CPU of '
             f'{results.get("machine", "?")} shared with other jobs: `load` is the 1-minute load average '
             'when a run started. train.py runs with OMP_NUM_THREADS=2. "images (decoded GB)": the set, '
             'and what holding all of it decoded (HR + LR, uint8) takes. "written by the run": '
             '/proc/PID/io write_bytes of the trainer and its workers; the checkpoints and log in '
             '--out_dir account for it, so no decoded image was written. Memory: VmHWM of each process.',
             '']
    startup = results.get('startup', {})
    if startup:
        lines += ['## Start-up: launch to the 5th step (RFDN, batch 8, 48² LR patches, 2 workers)', '',
                  '| loader | images (decoded GB) | to 5th step (s) | runs (s) | to 1st step (s) | step (s) '
                  '| peak RSS, any process (GB) | trainer / workers (GB) | written by the run (MB) '
                  '| of which checkpoints + log (MB) | ended | load |',
                  '|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|']
        for key in sorted(startup, key=lambda k: (k.split('_')[0] != 'new', int(k.split('_')[1]))):
            r = startup[key]
            loader = 'lazy (this package)' if key.startswith('new') else f'eager (commit {r["commit"][:7]})'
            ended = r['ended'] + (f' after {r["total_s"]} s, {r["cached"]} images decoded'
                                  if r['ended'] != 'finished' else '')
            runs = ', '.join(str(t) for t in r.get('runs', [])) if len(r.get('runs', [])) > 1 else ''
            lines.append(f'| {loader} | {int(key.split("_")[1]):,} ({r.get("decoded_gb", "?")}) | '
                         f'{r["to_step_s"] or "—"} | {runs} | {r.get("to_first_step_s", "—")} | '
                         f'{r.get("step_s", "—")} | {r["peak_rss_gb"]} | {r.get("peak_main_gb", "?")} / '
                         f'{r.get("peak_children_gb", "?")} | {r["written_mb"]} | {r["out_dir_mb"]} | '
                         f'{ended} | {r["load_before"]} |')
        lines += ['', 'Commands (from ROOT/runs; the eager loader from its `git archive` folder):', '']
        lines += [f'- `{_shown(startup[k]["cmd"])}`' for k in sorted(startup)]
        lines.append('')
    wait = results.get('wait', {})
    if wait:
        lines += ['## Data wait (RFDN, batch 16, 64² LR patches, 2 workers; target < 5%)', '',
                  '| source | steps | waiting for data | of step time (s) | peak RSS trainer / workers (GB) '
                  '| load |',
                  '|---|---:|---:|---:|---:|---:|']
        for key, r in sorted(wait.items()):
            lines.append(f'| {key} | {r["steps"]} | {r["wait_pct"]}% | {r["wait_s"]} of '
                         f'{r["step_total_s"]} | {r.get("peak_main_gb", "?")} / '
                         f'{r.get("peak_children_gb", "?")} | {r["load_before"]} |')
        lines += ['', 'Commands:', ''] + [f'- `{_shown(r["cmd"])}`' for _, r in sorted(wait.items())] + ['']
    prep = results.get('prepare', {})
    if prep:
        lines += ['## prepare (480² HR sub-images every 240 pixels, PNG level 1, + LMDB, 2 workers)', '',
                  '| images | time (s) | source (GB) | sub-image PNGs (GB) | LMDBs (GB) | peak RSS (GB) '
                  '| load |',
                  '|---:|---:|---:|---:|---:|---:|---:|']
        for key, r in sorted(prep.items()):
            lines.append(f'| {int(key):,} | {r["total_s"]} | {r["source_gb"]} | {r["png_gb"]} | '
                         f'{r["lmdb_gb"]} | {r["peak_rss_gb"]} | {r["load_before"]} |')
        lines += ['', 'Commands:', ''] + [f'- `{_shown(r["cmd"])}`' for _, r in sorted(prep.items())] + ['']
    lines += _target_notes(results)
    if results.get('commands'):
        lines += ['## Benchmark invocations that produced these figures', '',
                  'after the sets were made by `python -m utils.data.benchmark --root /tmp/esr_bench '
                  '--phases generate --sizes 200 2000 20000 --workers 1`:', '']
        lines += [f'- `{c}`' for c in results['commands']] + ['']
    return '\n'.join(lines)


def _target_notes(results: dict) -> list:
    """The targets, met or missed (and by how much), from the figures above."""
    notes = []
    new = results.get('startup', {}).get('new_2000')
    if new and new['to_step_s'] is not None:
        verdict = 'met' if new['to_step_s'] <= 45 else f'missed by {new["to_step_s"] - 45:.1f} s'
        notes.append(f'- 5th step within 45 s at 2,000 images: {new["to_step_s"]} s, {verdict}.')
    peaks = [(k, r['peak_rss_gb']) for k, r in results.get('startup', {}).items() if k.startswith('new')]
    peaks += [(k, r['peak_rss_gb']) for k, r in results.get('wait', {}).items()]
    if peaks:
        worst = max(peaks, key=lambda kv: kv[1])
        verdict = 'met' if worst[1] < 2 else f'missed by {worst[1] - 2:.2f} GB'
        notes.append(f'- Peak RSS of any process under 2 GB (lazy loader, all runs above): largest '
                     f'{worst[1]} GB ({worst[0]}), {verdict}.')
    for key, r in sorted(results.get('wait', {}).items()):
        verdict = 'met' if r['wait_pct'] < 5 else f'missed by {r["wait_pct"] - 5:.1f} points'
        notes.append(f'- Data wait under 5% from {key}: {r["wait_pct"]}%, {verdict}.')
    for key, r in sorted(results.get('startup', {}).items()):
        if key.startswith('old') and r['ended'] != 'finished':
            notes.append(f'- The eager loader on {int(key.split("_")[1]):,} images was {r["ended"]} '
                         f'({r["peak_rss_gb"]} GB) after {r["total_s"]} s, having decoded {r["cached"]} '
                         f'images; it keeps the whole set decoded, {r.get("decoded_gb", "?")} GB.')
    return ['## Targets', ''] + notes + [''] if notes else []


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m utils.data.benchmark', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default='/tmp/esr_bench', help='where the synthetic sets and runs go')
    p.add_argument('--phases', nargs='+', default=['generate', 'startup', 'old', 'prepare', 'wait'],
                   choices=['generate', 'startup', 'old', 'prepare', 'wait'])
    p.add_argument('--sizes', type=int, nargs='+', default=[200, 2000, 20000])
    p.add_argument('--distinct', type=int, default=2000, help='different images at most; more are hard links')
    p.add_argument('--prepare_size', type=int, default=2000, help='the set prepare and wait run on')
    p.add_argument('--wait_steps', type=int, default=30)
    p.add_argument('--repeat', type=int, default=3, help='start-up runs per size (the median is reported)')
    p.add_argument('--timeout', type=float, default=420, help='seconds before a run is stopped')
    p.add_argument('--timeout_prepare', type=float, default=840)
    p.add_argument('--mem_cap_gb', type=float, default=8.0, help='a run is stopped when a process exceeds it')
    p.add_argument('--workers', type=int, default=2, help='processes generating images')
    p.add_argument('--doc', default=None, help='write the Markdown report here (e.g. docs/DATA_BENCHMARK.md)')
    return p.parse_args(argv)


def _terminated(signum, frame):
    raise KeyboardInterrupt  # so that measure() stops its run on SIGTERM too


def read_results(path: str) -> dict:
    """The results of earlier runs ({} if none). A file that is not a JSON object stops the run
    rather than being replaced: it may hold hours of measurements."""
    if not os.path.exists(path):
        return {}
    try:
        return read_json_object(path, 'benchmark results')
    except UserError as exc:
        raise UserError(f'{exc}; repair or remove it') from None


def main(argv=None) -> int:
    args = parse_args(argv)
    for n in args.sizes:
        check_option('--sizes', n, at_least=1)
    for flag in ('distinct', 'prepare_size', 'wait_steps', 'repeat', 'workers'):
        check_option(f'--{flag}', getattr(args, flag), at_least=1)
    for flag in ('timeout', 'timeout_prepare', 'mem_cap_gb'):
        check_option(f'--{flag}', getattr(args, flag), above=0)
    root = os.path.abspath(args.root)
    if os.path.commonpath([root, REPO]) == REPO:
        raise UserError(f'--root {root} is inside the repository: give a folder outside it')
    check_output_dir(root, '--root')
    results_path = os.path.join(root, 'results.json')
    if args.doc:
        check_output_file(args.doc, '--doc', inputs=[results_path])
    results = read_results(results_path)
    signal.signal(signal.SIGTERM, _terminated)  # only now: a refused run leaves the caller's handler
    os.makedirs(root, exist_ok=True)
    results['machine'] = f'{os.cpu_count()} cores'

    def save():
        atomic_write_text(results_path, json.dumps(results, indent=1))
    if 'generate' in args.phases:
        for n in args.sizes:
            t = time.perf_counter()
            folder = generate(root, n, args.distinct, args.workers)
            print(f'generated {folder} in {time.perf_counter() - t:.0f} s')
    for n in args.sizes:
        for phase, old in (('startup', False), ('old', True)):
            if phase in args.phases:
                r = run_startup(root, n, old, args)
                results.setdefault('startup', {})[f'{"old" if old else "new"}_{n}'] = r
                save()
                print(f'{phase} {n}: {r["to_step_s"]} s to step 5, peak RSS {r["peak_rss_gb"]} GB, '
                      f'wrote {r["written_mb"]} MB ({r["out_dir_mb"]} MB in out_dir), {r["ended"]}')
    if 'prepare' in args.phases:
        r = run_prepare(root, args.prepare_size, args)
        results.setdefault('prepare', {})[str(args.prepare_size)] = r
        save()
        print(f'prepare {args.prepare_size}: {r["total_s"]} s, PNG {r["png_gb"]} GB, LMDB {r["lmdb_gb"]} GB')
    if 'wait' in args.phases:
        for source in ('png', 'lmdb'):
            r = run_wait(root, args.prepare_size, source, args)
            results.setdefault('wait', {})[f'{source} ({args.prepare_size:,} images)'] = r
            save()
            print(f'wait {source}: {r["wait_pct"]}% over {r["steps"]} steps')
    command = 'python -m utils.data.benchmark ' + ' '.join(argv if argv is not None else sys.argv[1:])
    if 'generate' not in args.phases or len(args.phases) > 1:
        results.setdefault('commands', [])
        if command not in results['commands']:
            results['commands'].append(command)
    save()
    if args.doc:
        atomic_write_text(args.doc, render(results))
        print(f'wrote {args.doc}')
    return 0


if __name__ == '__main__':
    run_cli(main)
