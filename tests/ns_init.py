"""PID 1 of a namespace host (`tests/namespace_hosts.py`): starts the host's command, passes it
SIGTERM and SIGINT, reaps every process orphaned to it, and exits with the command's status.

    python -m tests.ns_init COMMAND [ARG...]

What `docker run --init` gives a container: without it the command itself is PID 1, and the
processes orphaned in the namespace would stay zombies, which no real host leaves.
"""

import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    command = subprocess.Popen(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: command.send_signal(received))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == command.pid:
            return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
