"""Errors raised by netpert about the user's input."""


class InputError(ValueError):
    """Something is wrong with the user's input.

    The message names the file or key and says what to do; workflow rules let it
    propagate so the rule's log shows it, and no partial output is left behind.
    """


class ConfigError(InputError):
    """The workflow's config is wrong: the message names the key, what is wrong and where it came
    from. The Snakefile raises it before any job is planned."""
