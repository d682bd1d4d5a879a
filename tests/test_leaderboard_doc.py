"""The README leaderboard and docs/score.txt say what docs/leaderboard_x4.json (the run they come
from) holds: a table edited by hand, or left behind by a new run, fails here."""
import json
import re

import pytest

from utils.metrics import score


@pytest.fixture(scope='module')
def board(repo_root):
    with open(f'{repo_root}/docs/leaderboard_x4.json') as f:
        return json.load(f)


def readme_leaderboard(repo_root) -> list[list[str]]:
    """The cells of the README's leaderboard table, a row a model, in order."""
    with open(f'{repo_root}/README.md', encoding='utf-8') as f:
        text = f.read()
    section = text[text.index('## Leaderboard'):]
    section = section[:section.index('\n## ', 1)]
    rows = [line for line in section.splitlines() if line.startswith('| ')]
    assert rows[0].startswith('| model |'), rows[0]
    return [[cell.strip() for cell in row.strip('|').split('|')] for row in rows[1:]]


def expected_cells(record: dict, rfdn_ms: float) -> list[str]:
    return [f"{record['Set5_ave_psnr_y']:.2f} / {record['Set5_ave_psnr']:.2f}",
            f"{record['Set14_ave_psnr_y']:.2f} / {record['Set14_ave_psnr']:.2f}",
            f"{record['runtime_256']:.0f}", f"{record['runtime_256'] / rfdn_ms:.3f}",
            f"{record['num_parameters']:.3f}", f"{record['flops']:.2f} / {record['flops_fvcore']:.2f}"]


def test_readme_leaderboard_is_the_committed_run(repo_root, board):
    rows = readme_leaderboard(repo_root)
    assert len(rows) == len(board), 'one row a model of docs/leaderboard_x4.json'
    rfdn_ms = board['rfdn_baseline']['runtime_256']
    for row, (key, record) in zip(rows, board.items()):
        assert row[1:] == expected_cells(record, rfdn_ms), (key, row[0])
    shipped = [row[0] for row in rows if 'this repository' in row[0]]
    assert all(re.search(r'`team01_\w+`', label) for label in shipped) and len(shipped) == 5


def test_score_file_is_the_committed_run(repo_root, capsys):
    with open(f'{repo_root}/docs/score.txt', encoding='utf-8') as f:
        committed = f.read()
    labels = [line.split(' vs ')[0] for line in committed.splitlines()]
    assert labels and all(line.split(' vs ')[1].startswith('rfdn_baseline') for line in committed.splitlines())
    assert score.main([f'{repo_root}/docs/leaderboard_x4.json', *labels, 'rfdn_baseline']) == 0
    assert capsys.readouterr().out == committed
