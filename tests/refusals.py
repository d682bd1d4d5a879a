"""What the bad-input tests check of a refusal: one line, and nothing changed on disk."""
import pytest

from utils.io.errors import UserError


def user_error(main, argv, match=None) -> str:
    """Run a script's or tool's `main(argv)` in-process; the one-line UserError message it
    stops with (matching the regex `match`, when given)."""
    with pytest.raises(UserError, match=match) as info:
        main([str(a) for a in argv])
    message = str(info.value)
    assert '\n' not in message
    return message


def snapshot(folder) -> dict:
    """{relative path: bytes} of every file under the Path `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob('*') if p.is_file()}
