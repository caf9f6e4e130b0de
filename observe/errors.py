"""The one exception type users see: its message names the problem and the fix."""


class ObserveError(Exception):
    """Bad input or a broken environment, explained in words a user can act on.

    The CLI prints the message without a traceback and exits with status 2.
    """
