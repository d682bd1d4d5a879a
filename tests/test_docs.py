"""Every repository path the README and docs/*.md name exists: a table row that points to a
recipe or a committed log the reader cannot open is a figure without its evidence.

Paths are the words starting with one of the repository's folders; `{a,b}` alternatives are
expanded and `*` globbed. Placeholders (`team01_X.py`, `teamXX_Name.py`) and elided lists
(`branch_stage{1,…,7}`) are not paths and are left out, and so is anything under data/ but
its README: datasets the reader puts there or a command writes there (git ignores them).
"""
import glob
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ['README.md', *sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'docs').glob('*.md'))]
FOLDERS = ('model_zoo', 'options', 'docs', 'models', 'utils', 'data', 'tests')
# a folder name not preceded by a path character (so ../shared/... and $ESR_SHARED/... are not ours)
PATH = re.compile(r'(?<![\w./$-])((?:%s)/[\w./{},*…-]*[\w*}/])' % '|'.join(FOLDERS))
PLACEHOLDER = re.compile(r'team01_X\b|teamXX_|…|^data/(?!README\.md)')


def alternatives(path: str) -> list[str]:
    """'a/{b,c}/d' -> ['a/b/d', 'a/c/d'] (nested and repeated braces too)."""
    brace = re.search(r'\{([^{}]*)\}', path)
    if brace is None:
        return [path]
    return [expanded for alt in brace.group(1).split(',')
            for expanded in alternatives(path[:brace.start()] + alt + path[brace.end():])]


def named_paths(text: str) -> list[str]:
    found = []
    for match in PATH.finditer(text):
        if not PLACEHOLDER.search(match.group(1)):
            found.extend(alternatives(match.group(1)))
    return found


def test_alternatives_and_placeholders():
    assert alternatives('logs/{a,b}/x_{1,2}.csv') == ['logs/a/x_1.csv', 'logs/a/x_2.csv',
                                                      'logs/b/x_1.csv', 'logs/b/x_2.csv']
    text = ('see `model_zoo/logs/a/` and ../shared/model_zoo/b.pth, $ESR_SHARED/docs/c, '
            'models/team01_X.py, model_zoo/logs/branch_stage{1,…,7}/ and options/{x,y}.yaml, '
            'data/README.md, data/train_sub.')
    assert named_paths(text) == ['model_zoo/logs/a/', 'options/x.yaml', 'options/y.yaml', 'data/README.md']


@pytest.mark.parametrize('doc', DOCS)
def test_every_named_path_exists(doc):
    text = (ROOT / doc).read_text(encoding='utf-8')
    missing = sorted({p for p in named_paths(text) if not glob.glob(str(ROOT / p))})
    assert not missing, f'{doc} names paths that do not exist: {missing}'
