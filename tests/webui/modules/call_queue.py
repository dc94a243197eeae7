"""Mirrors modules/call_queue.py: the wrappers around the generate buttons' functions.

wrap_gradio_gpu_call: state.begin(job=id_task) ... state.end() under the queue lock; wrap_gradio_call:
always resets state.skipped/interrupted/stopping_generation/job_count/job afterwards;
wrap_gradio_call_no_job: an exception is reported and turned into extra_outputs + an error HTML.
Simplified: no progress-task bookkeeping, no memory monitor, no timing HTML. The stand-in also
records the last exception caught by wrap_gradio_call_no_job in ``last_ui_exception``."""

import html
import threading
from functools import wraps

from modules import devices, errors, shared

queue_lock = threading.RLock()
last_ui_exception = None


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)

    return f


def wrap_gradio_gpu_call(func, extra_outputs=None):
    # mirrors call_queue.wrap_gradio_gpu_call
    @wraps(func)
    def f(*args, **kwargs):
        if args and type(args[0]) is str and args[0].startswith("task(") and args[0].endswith(")"):
            id_task = args[0]
        else:
            id_task = None
        with queue_lock:
            shared.state.begin(job=id_task)
            res = func(*args, **kwargs)
            shared.state.end()
        return res

    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
    # mirrors call_queue.wrap_gradio_call
    @wraps(func)
    def f(*args, **kwargs):
        try:
            res = func(*args, **kwargs)
        finally:
            shared.state.skipped = False
            shared.state.interrupted = False
            shared.state.stopping_generation = False
            shared.state.job_count = 0
            shared.state.job = ""
        return res

    return wrap_gradio_call_no_job(f, extra_outputs, add_stats)


def wrap_gradio_call_no_job(func, extra_outputs=None, add_stats=False):
    # mirrors call_queue.wrap_gradio_call_no_job: exceptions become an error message in the last output
    @wraps(func)
    def f(*args, extra_outputs_array=extra_outputs, **kwargs):
        global last_ui_exception
        try:
            res = list(func(*args, **kwargs))
        except Exception as e:
            last_ui_exception = e
            arg_str = f"Arguments: {args} {kwargs}"[:131072]
            errors.report(f"Error completing request\n{arg_str}", exc_info=True)
            if extra_outputs_array is None:
                extra_outputs_array = [None, ""]
            res = extra_outputs_array + [f"<div class='error'>{html.escape(f'{type(e).__name__}: {e}')}</div>"]
        devices.torch_gc()
        return tuple(res)

    return f
