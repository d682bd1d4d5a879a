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


@pytest.fixture(autouse=True)
def grad_mode_restored():
    """Scripts run in-process (main(argv)) must not leak a global grad mode into later tests."""
    import torch
    yield
    assert torch.is_grad_enabled(), 'a test left autograd switched off'
    torch.set_grad_enabled(True)
