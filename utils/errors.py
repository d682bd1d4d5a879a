"""Exceptions shared by the project's scripts and library code."""


class UserError(Exception):
    """An error caused by bad user input (a missing folder, an unreadable image, ...).

    Scripts catch it at the top level, print its message as one line and exit
    non-zero instead of showing a traceback: the user has to fix their input,
    not the code.
    """
