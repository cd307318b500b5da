"""The one exception type for mistakes a user can fix.

Every ``UserError`` is printed by the CLI as a single line and exits with code 2.
The message names the bad value and says how to fix it.
"""


class UserError(Exception):
    """A problem in the user's input, config or environment, with its fix in the message."""

    exit_code = 2
