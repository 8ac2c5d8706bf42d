"""Run a function in a forked child process: a native crash or a SIGKILL ends the child, not
pytest, and the child starts in milliseconds (no second import of torch)."""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Callable
from typing import Any


def _child_main(conn, target: Callable, args: tuple) -> None:
    # A forked child must not enter OpenMP pools the parent created (libgomp is not
    # fork-safe): one thread for torch, faiss, scikit-learn and BLAS.
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    try:
        result = ("ok", target(*args))
    except BaseException as exc:  # reported to the parent, which asserts on it
        result = ("error", type(exc).__name__, str(exc), traceback.format_exc())
    conn.send(result)
    conn.close()
    os._exit(0)  # skip atexit handlers and finalizers inherited from pytest


def run_in_child(target: Callable, *args, timeout: float = 60.0) -> tuple[int | None, Any]:
    """``(exit code, what the child reported)`` of ``target(*args)`` run in a forked child.

    The report is ``("ok", return value)`` or ``("error", type name, message, traceback)``;
    ``None`` when the child died before reporting (the exit code is then ``-signal``).
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child_main, args=(sender, target, args))
    process.start()
    sender.close()
    report = None
    try:
        if receiver.poll(timeout):
            report = receiver.recv()
    except EOFError:  # the child died without reporting
        pass
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
    receiver.close()
    return process.exitcode, report
