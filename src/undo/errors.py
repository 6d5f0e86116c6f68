"""Errors a user can cause. The CLI prints them as one line, never a traceback."""


class UserError(Exception):
    """Bad config, data row, model name or endpoint: the message names the key, file or line."""
