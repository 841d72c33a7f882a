"""The one exception type that user-facing code raises for bad input.

The command line turns a :class:`GencondError` into a single line on stderr and a
non-zero exit; anything else is a bug and keeps its traceback.
"""


class GencondError(Exception):
    """A problem with the user's input: a name, a size, a path or a file."""
