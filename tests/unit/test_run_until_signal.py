"""`run` stops on SIGTERM even when the kernel hands the signal to another thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# The signal goes to a thread that is not the main one (`pthread_kill`), as the kernel may do
# with a process-directed SIGTERM: the C handler runs there, and a main thread asleep in an
# untimed `Event.wait()` is never woken to run the Python handler (seen in e2e: an agent that
# ignored SIGTERM for minutes). The child is given 20 s; the old wait never returned at all.
CHILD = textwrap.dedent(
    """
    import signal, threading, time
    from types import SimpleNamespace
    from reconciler.agent.daemon import Daemon

    stub = SimpleNamespace(_stopped=threading.Event())

    def other() -> None:
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=other, daemon=True).start()
    Daemon.run_until_signal(stub)
    print("stopped")
    """
)


def test_a_sigterm_handed_to_another_thread_stops_the_wait() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"
