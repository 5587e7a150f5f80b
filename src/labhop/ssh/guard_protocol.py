"""What a command says to its guard (`labhop.ssh.guard`) before it closes the guard's pipe.

Its own module so that the command and the guard share it without importing each other.
"""

from __future__ import annotations

# The command cleaned up after itself (a normal exit): the guard has nothing left to do.
# Without it, EOF on the pipe means the command died, and the guard does the cleanup.
GUARD_DONE = "done\n"
