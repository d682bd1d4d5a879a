"""Exceptions shared by the project's scripts and library code."""


class UserError(Exception):
    """An error caused by bad user input (a missing folder, an unreadable image, ...).

    Scripts catch it at the top level, print its message as one line and exit
    non-zero instead of showing a traceback: the user has to fix their input,
    not the code.
    """


def run_cli(main, interrupted: str = 'interrupted') -> None:
    """Run a script's `main()` and exit with its code; a UserError becomes one line on
    stderr and exit code 2 (no traceback), Ctrl-C exit code 130 with `interrupted`.

    Standard output is line-buffered: under `nohup ... > run.log` it would otherwise reach the
    log in 8 KB blocks, an hour or more late for a training run's progress lines."""
    import sys
    if hasattr(sys.stdout, 'reconfigure'):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        sys.exit(main())
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)


def check_option(flag: str, value, *, at_least=None, above=None, below=None, at_most=None) -> None:
    """Raise UserError `{flag} must be <range>, got {value}` unless `value` is a finite number
    within the given bounds (`at_least`/`at_most` inclusive, `above`/`below` exclusive).
    None is accepted (an option left unset)."""
    import math
    if value is None:
        return
    ok = math.isfinite(value)
    ok = ok and (at_least is None or value >= at_least) and (above is None or value > above)
    ok = ok and (at_most is None or value <= at_most) and (below is None or value < below)
    if ok:
        return
    low = (f'[{at_least:g}' if at_least is not None else f'({above:g}' if above is not None else None)
    high = (f'{at_most:g}]' if at_most is not None else f'{below:g})' if below is not None else None)
    if low and high:
        wanted = f'in {low}, {high}'
    elif at_least is not None:
        wanted = f'at least {at_least:g}'
    elif above is not None:
        wanted = f'above {above:g}'
    elif at_most is not None:
        wanted = f'at most {at_most:g}'
    else:
        wanted = f'below {below:g}'
    raise UserError(f'{flag} must be {wanted}, got {value:g}')


def check_device(flag: str, value: str):
    """The torch.device `value` names; UserError unless it is the CPU or an available CUDA device."""
    import torch
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise UserError(f'{flag} {value} is not a device: give cpu, cuda or cuda:N') from None
    if device.type not in ('cpu', 'cuda'):
        raise UserError(f'{flag} {value}: this project runs on cpu or cuda only')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f'{flag} {value} asked for, but no CUDA device is available')
    if device.type == 'cuda' and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f'{flag} {value}: there are only {torch.cuda.device_count()} CUDA devices')
    return device
