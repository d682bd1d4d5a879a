"""utils.data.benchmark: its arguments are checked before any phase runs or anything is written
(the phases themselves take minutes and are not run here)."""
import pytest
from refusals import user_error

from utils.data import benchmark


@pytest.fixture(autouse=True)
def no_phase_may_run(monkeypatch):
    """Every case here must stop at the checks: a phase that starts fails the test at once."""
    def refuse(*_):
        raise AssertionError('a benchmark phase ran before the arguments were checked')
    for phase in ('generate', 'run_startup', 'run_prepare', 'run_wait'):
        monkeypatch.setattr(benchmark, phase, refuse)


def refusal(argv) -> str:
    return user_error(benchmark.main, argv)


@pytest.mark.parametrize('option, value, wanted', [
    ('--sizes', -3, 'at least 1'), ('--sizes', 0, 'at least 1'), ('--distinct', 0, 'at least 1'),
    ('--workers', 0, 'at least 1'), ('--repeat', 0, 'at least 1'), ('--prepare_size', 0, 'at least 1'),
    ('--wait_steps', 0, 'at least 1'), ('--timeout', 0, 'above 0'), ('--timeout_prepare', -1, 'above 0'),
    ('--mem_cap_gb', 0, 'above 0'),
])
def test_out_of_range_options_are_refused(tmp_path, option, value, wanted):
    root = tmp_path / 'bench'
    message = refusal(['--root', root, '--phases', 'generate', 'startup', option, value])
    assert message == f'{option} must be {wanted}, got {value}'
    assert not root.exists()


def test_a_root_that_is_a_file_is_refused(tmp_path):
    root = tmp_path / 'afile'
    root.write_text('a file, not a folder')
    assert refusal(['--root', root, '--phases', 'generate']) == f'--root {root} is a file, not a folder'
    assert root.read_text() == 'a file, not a folder'


def test_a_corrupt_results_file_is_refused_and_kept(tmp_path):
    results = tmp_path / 'results.json'
    results.write_text('{bad')
    message = refusal(['--root', tmp_path, '--phases', 'generate'])
    assert message.startswith(f'cannot read the benchmark results {results}: ')
    assert message.endswith('repair or remove it')
    results.write_text('[1, 2]')
    assert refusal(['--root', tmp_path, '--phases', 'generate']) == \
        f'the benchmark results {results} holds no JSON object; repair or remove it'
    assert results.read_text() == '[1, 2]'


def test_an_unwritable_doc_is_refused_before_the_run(tmp_path):
    blocker = tmp_path / 'afile'
    blocker.write_text('a file, not a folder')
    root = tmp_path / 'bench'
    message = refusal(['--root', root, '--phases', 'generate', '--doc', blocker / 'x.md'])
    assert message == f'--doc {blocker / "x.md"} cannot be written: {blocker} is a file, not a folder'
    assert not root.exists()


def test_a_doc_over_the_results_file_is_refused(tmp_path):
    results = tmp_path / 'results.json'
    results.write_text('{"startup": {}}')
    message = refusal(['--root', tmp_path, '--phases', 'generate', '--doc', results])
    assert message == f'--doc {results} is the input {results}: refusing to overwrite it'
    assert results.read_text() == '{"startup": {}}'
