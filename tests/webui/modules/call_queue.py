"""Stand-in for modules/call_queue.py of the WebUI: the wrappers the UI puts around the functions
its buttons call.

What the real wrappers do and this one keeps: work that touches the model runs under one queue
lock; a generate call is a job on ``shared.state`` (begin/end) and leaves the interrupt/skip flags
and job counters cleared however it ends; an exception never reaches gradio: the console gets
"Error completing request" with the arguments and the traceback (``errors.report``), and the UI's
last output becomes an error box ``<div class='error'>Type: message</div>``.
Left out: the progress-task queue of modules/progress.py, the memory monitor and the "Time taken"
footer. The lock is a re-entrant lock instead of the real FIFO lock.
Stand-in addition: ``last_ui_exception``, the exception the last wrapped call turned into an error
box, which the harness re-raises."""

from __future__ import annotations

import html
import threading
from functools import wraps
from typing import Any, Callable

from modules import devices, errors, shared

queue_lock = threading.RLock()
last_ui_exception: Exception | None = None

_ARGUMENT_TEXT_LIMIT = 131072
"""The real wrapper prints at most this many characters of the arguments."""


def wrap_queued_call(func: Callable) -> Callable:
    """call_queue.wrap_queued_call: ``func`` runs holding the queue lock."""

    def locked(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)

    return locked


def wrap_gradio_gpu_call(func: Callable, extra_outputs: list | None = None) -> Callable:
    """call_queue.wrap_gradio_gpu_call: the generate buttons' wrapper. Under the queue lock,
    ``shared.state`` holds a job named after the task id (a first argument ``"task(...)"``)
    while ``func`` runs; then everything wrap_gradio_call does."""

    @wraps(func)
    def as_job(*args, **kwargs):
        first = args[0] if args else None
        task_id = first if isinstance(first, str) and first.startswith("task(") and first.endswith(")") else None
        with queue_lock:
            shared.state.begin(job=task_id)
            result = func(*args, **kwargs)
            shared.state.end()
        return result

    return wrap_gradio_call(as_job, extra_outputs=extra_outputs)


def wrap_gradio_call(func: Callable, extra_outputs: list | None = None) -> Callable:
    """call_queue.wrap_gradio_call: clears the state's flags and counters after ``func``, even when
    it raised, and turns an exception into the error box (see the module docstring)."""

    @wraps(func)
    def with_state_reset(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        finally:
            state = shared.state
            state.skipped = state.interrupted = state.stopping_generation = False
            state.job_count, state.job = 0, ""

    return _shown_in_ui(with_state_reset, extra_outputs)


def _shown_in_ui(func: Callable, extra_outputs: list | None) -> Callable:
    """call_queue.wrap_gradio_call_no_job: the outputs as a tuple, or on an exception the report
    and ``extra_outputs`` (default ``[None, ""]``) followed by the error box."""

    @wraps(func)
    def caught(*args, extra_outputs_array: list | None = extra_outputs, **kwargs) -> tuple[Any, ...]:
        global last_ui_exception
        try:
            outputs = list(func(*args, **kwargs))
        except Exception as error:
            last_ui_exception = error
            arguments = f"Arguments: {args} {kwargs}"[:_ARGUMENT_TEXT_LIMIT]
            errors.report(f"Error completing request\n{arguments}", exc_info=True)
            error_box = f"<div class='error'>{html.escape(f'{type(error).__name__}: {error}')}</div>"
            outputs = [*(extra_outputs_array if extra_outputs_array is not None else [None, ""]), error_box]
        devices.torch_gc()
        return tuple(outputs)

    return caught
