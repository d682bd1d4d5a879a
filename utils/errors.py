"""Exceptions shared by the project's scripts and library code."""


class UserError(Exception):
    """An error caused by bad user input (a missing folder, an unreadable image, ...).

    Scripts catch it at the top level, print its message as one line and exit
    non-zero instead of showing a traceback: the user has to fix their input,
    not the code.
    """


def run_cli(main, interrupted: str = 'interrupted') -> None:
    """Run a script's `main()` and exit with its code; a UserError becomes one line on
    stderr and exit code 2 (no traceback), Ctrl-C exit code 130 with `interrupted`."""
    import sys
    try:
        sys.exit(main())
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)
