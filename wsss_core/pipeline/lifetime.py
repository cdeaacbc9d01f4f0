"""Every process a run starts ends with it.

`stop_on_signals()` turns SIGINT and SIGTERM into `Interrupted` in the main
thread, so `with` blocks (the image pool's included) clean up on the way out.
`init_worker(parent)` runs first in every pool worker: the worker leaves
SIGINT to the parent and exits as soon as the parent is gone (SIGKILL,
crash, a Ray actor cancelled by Tune): PR_SET_PDEATHSIG on Linux, a watchdog
thread polling the parent's pid everywhere. With its workers gone, the
multiprocessing resource tracker sees its pipe close and exits too.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL = 1.0  # seconds between the watchdog's parent checks
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run received SIGINT or SIGTERM; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside the block SIGINT/SIGTERM raise Interrupted (once: a second signal
    gets the previous handler); handlers are restored on exit. A no-op outside
    the main thread (e.g. in a Ray Tune trial), where Python cannot catch signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def interrupt(signum: int, frame: object) -> None:
        restore()
        raise Interrupted(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, interrupt)
    try:
        yield
    finally:
        restore()


def init_worker(parent: int) -> None:
    """Pool-worker initializer: ignore SIGINT (the parent stops the pool) and
    exit when process `parent` dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="wsss-parent-watchdog", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL)
    os._exit(1)
