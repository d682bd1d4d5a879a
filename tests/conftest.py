"""Shared pytest fixtures.

The reference data (benchmark images, checkpoints) lives outside the repo in
the read-only shared folder: $ESR_SHARED, or ../shared next to the repo root.
"""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Plain `pytest` (unlike `python -m pytest`) does not put the repo root on
# sys.path, and the tests import the project's packages from there.
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


@pytest.fixture(scope='module')
def repo_root():
    """Absolute path of the repository root (str)."""
    return REPO_ROOT


@pytest.fixture(scope='module')
def shared_dir():
    """Absolute path of the shared reference-data folder (str).

    Fails (never skips) when the folder is missing: a silently skipped
    reference test would look like a pass.
    """
    path = os.path.abspath(os.environ.get('ESR_SHARED') or os.path.join(REPO_ROOT, '..', 'shared'))
    if not os.path.isdir(path):
        pytest.fail(f"shared data folder not found: {path} (set ESR_SHARED to its location)")
    return path


@pytest.fixture()
def one_thread():
    """One intra-op thread for the duration of a test (tests that run many tiny models are
    faster that way, and do not fight a training job for the cores)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def script_in_process(repo_root):
    """Run a script as `python <script>.py ARGS` from the repository root would, in this
    process, on one thread.

    `script_in_process('prune', '--input', path, ...)` (or 'prune.py') returns a
    `subprocess.CompletedProcess` (returncode, stdout, stderr): the script's `main(argv)` wrapped
    in the same `run_cli` as its `__main__`, so a UserError is exit code 2 and one `error: ...`
    line on stderr. It saves the 2-3 s that a new interpreter spends importing torch;
    tests/test_bad_input.py runs every script once as a real process."""
    import contextlib
    import importlib
    import io
    import subprocess

    import torch

    from utils.io.errors import run_cli

    def run(script, *args):
        argv, name = [str(a) for a in args], script.removesuffix('.py')
        main = importlib.import_module(name).main
        out, err = io.StringIO(), io.StringIO()
        threads, cwd = torch.get_num_threads(), os.getcwd()
        torch.set_num_threads(1)
        os.chdir(repo_root)     # relative defaults resolve as in a run from the repository root
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                run_cli(lambda: main(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            torch.set_num_threads(threads)
            os.chdir(cwd)
        return subprocess.CompletedProcess([f'{name}.py', *argv], code, out.getvalue(), err.getvalue())
    return run


@pytest.fixture(autouse=True)
def grad_mode_restored():
    """Scripts run in-process (main(argv)) must not leak a global grad mode into later tests."""
    import torch
    yield
    assert torch.is_grad_enabled(), 'a test left autograd switched off'
    torch.set_grad_enabled(True)
