"""Every command line the README, the docs and the committed run scripts (`model_zoo/logs/**/*.sh`)
give parses with the script it names: an option renamed or removed in the code, or misspelt in a
doc, fails here instead of on a reader's run.

Commands are taken from the run scripts and the docs' fenced shell blocks (continuation lines
joined) and inline code spans, from `python SCRIPT.py …`, `python -m MODULE …` or
`torchrun … train.py …` up to the first redirection, pipe or `#` comment. The script's
`main(argv)` runs only up to its argument parsing: `argparse.ArgumentParser.parse_args` is
wrapped so that it parses, then stops the script. A recipe given with `--config` is read and
checked against the parser on the way, as in a real run.

Left out: a script named without arguments (a mention, not a command), command lines with
elisions or placeholders (`…`, `...`, `[--option N]`, `(a | b)`), ones passing a shell
variable as a whole argument (`$T`, set to several options elsewhere in the block), and ones
whose recipe path holds a loop variable (`--config options/…_stage$stage.yaml`).
"""
import argparse
import contextlib
import importlib
import io
import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ['README.md', 'data/README.md',
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'docs').glob('*.md'))]
RUN_SCRIPTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'model_zoo').rglob('*.sh'))
ENDS = {'>', '>>', '&', '|', '&&', '||', ';', '2>&1'}
ELIDED = re.compile(r'…|\.\.\.|^\[|\]$|^\(|\)$|^\$\w+$')


def command_texts(text: str, shell_script: bool = False) -> list[str]:
    """The lines of a shell script, or of a doc's fenced blocks and its inline code spans
    (`\\` continuations joined)."""
    blocks = [text] if shell_script else re.findall(r'```[a-z]*\n(.*?)```', text, flags=re.S)
    lines = [line.strip() for block in blocks for line in re.sub(r'\\\n\s*', ' ', block).splitlines()]
    if not shell_script:
        prose = re.sub(r'```.*?```', '', text, flags=re.S)
        lines += [span.replace('\n', ' ') for span in re.findall(r'`([^`]+)`', prose)]
    return lines


def script_command(line: str) -> tuple[str, list[str]] | None:
    """('train', [...]) or ('utils.metrics.score', [...]) for a command line, else None."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:          # an unbalanced quote: prose, not a command
        return None
    for i, token in enumerate(tokens):
        if token in ('python', 'python3'):
            rest = tokens[i + 1:]
            break
        if token == 'torchrun':     # its own options first, then the script
            rest = [t for t in tokens[i + 1:] if t.endswith('.py')][:1]
            rest = tokens[tokens.index(rest[0]):] if rest else []
            break
    else:
        return None
    if len(rest) >= 2 and rest[0] == '-m':
        module, args = rest[1], rest[2:]
    elif rest and rest[0].endswith('.py') and (ROOT / rest[0]).is_file():
        module, args = rest[0][:-3].replace('/', '.'), rest[1:]
    else:
        return None
    if module.split('.')[0] not in ('train', 'test_demo', 'prune', 'reparam', 'utils'):
        return None             # pytest and other tools
    end = next((k for k, a in enumerate(args) if a in ENDS or a.startswith(('>', '2>'))), len(args))
    return module, args[:end]


def recipe_from_a_variable(argv: list[str]) -> bool:
    return any(a == '--config' and '$' in value for a, value in zip(argv, argv[1:]))


def documented_commands() -> list:
    found = []
    for doc in DOCS + RUN_SCRIPTS:
        text = (ROOT / doc).read_text(encoding='utf-8')
        for line in command_texts(text, shell_script=doc.endswith('.sh')):
            command = script_command(line)
            if command and command[1] and not any(ELIDED.search(a) for a in command[1]) \
                    and not recipe_from_a_variable(command[1]):
                found.append(pytest.param(*command, id=f'{doc}: {command[0]} {" ".join(command[1])}'[:150]))
    return found


class Parsed(Exception):
    """Raised by the wrapped parse_args once the command line has parsed."""


def parse_error(module: str, argv: list[str], monkeypatch) -> str | None:
    """None if `argv` parses with `module`'s command line (recipe included), else the error."""
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse_args(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', parse_then_stop)
    monkeypatch.chdir(ROOT)     # relative recipe paths, as in a run from the repository root
    main = importlib.import_module(module).main
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main(list(argv))
    except Parsed:
        return None
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1]
    except Exception as exc:    # e.g. a recipe with an unknown option
        return f'{type(exc).__name__}: {exc}'
    return 'the script ran past its argument parsing'


def test_the_check_finds_commands_and_rejects_an_unknown_option(monkeypatch):
    line = ('OMP_NUM_THREADS=1 python prune.py --input a.pth --out_dir /tmp/x --steps 2 '
            '# a comment --not_an_option')
    assert script_command(line) == ('prune', ['--input', 'a.pth', '--out_dir', '/tmp/x', '--steps', '2'])
    assert script_command('python -m utils.metrics.score r.json a b > out.txt') == (
        'utils.metrics.score', ['r.json', 'a', 'b'])
    assert script_command('torchrun --nproc_per_node 2 train.py --config c.yaml') == (
        'train', ['--config', 'c.yaml'])
    assert script_command('python -m pytest -k slow') is None
    assert parse_error('prune', ['--input', 'a.pth', '--out_dir', '/tmp/x'], monkeypatch) is None
    assert 'unrecognized arguments: --no_such_option' in parse_error(
        'prune', ['--input', 'a.pth', '--out_dir', '/tmp/x', '--no_such_option'], monkeypatch)
    assert 'invalid int value' in parse_error(
        'prune', ['--input', 'a.pth', '--out_dir', '/tmp/x', '--steps', 'two'], monkeypatch)


def test_the_docs_and_run_scripts_give_commands():
    commands = documented_commands()
    assert len(commands) > 100
    assert any(c.id.startswith('model_zoo/logs/') for c in commands)


@pytest.mark.parametrize('module, argv', documented_commands())
def test_documented_command_parses(module, argv, monkeypatch):
    error = parse_error(module, argv, monkeypatch)
    assert error is None, f'python {module} {" ".join(argv)}: {error}'
