"""Mirrors modules/errors.py: report/display print to stderr and keep the last exceptions.

Stand-in addition: every report()/display() also appends ``(message, exception)`` to ``reports``
so tests can assert that a hook's exception was swallowed and reported, as the real host does."""

import sys
import textwrap
import traceback

exception_records = []
reports = []  # stand-in only: (message, exception or None), appended by report()/display()


def format_traceback(tb):
    # mirrors modules/errors.py format_traceback
    return [[f"{frame.filename}, line {frame.lineno}, {frame.name}", frame.line] for frame in traceback.extract_tb(tb)]


def format_exception(e, tb):
    # mirrors modules/errors.py format_exception
    return {"exception": str(e), "traceback": format_traceback(tb)}


def get_exceptions():
    # mirrors modules/errors.py get_exceptions: newest first
    return list(reversed(exception_records))


def record_exception():
    # mirrors modules/errors.py record_exception: keeps the last five, skips a repeat of the last one
    _, e, tb = sys.exc_info()
    if e is None:
        return
    if exception_records and exception_records[-1] == e:
        return
    exception_records.append(format_exception(e, tb))
    if len(exception_records) > 5:
        exception_records.pop(0)


def report(message: str, *, exc_info: bool = False) -> None:
    # mirrors modules/errors.py report: "*** " prefixed lines, then the indented traceback
    record_exception()
    reports.append((message, sys.exc_info()[1] if exc_info else None))
    for line in message.splitlines():
        print("***", line, file=sys.stderr)
    if exc_info:
        print(textwrap.indent(traceback.format_exc(), "    "), file=sys.stderr)
        print("---", file=sys.stderr)


def print_error_explanation(message):
    # mirrors modules/errors.py print_error_explanation
    record_exception()
    lines = message.strip().split("\n")
    width = max(len(line) for line in lines)
    print("=" * width, file=sys.stderr)
    for line in lines:
        print(line, file=sys.stderr)
    print("=" * width, file=sys.stderr)


def display(e: Exception, task, *, full_traceback=False):
    # mirrors modules/errors.py display (without the SD2 config hint)
    record_exception()
    reports.append((f"{task or 'error'}: {type(e).__name__}", e))
    print(f"{task or 'error'}: {type(e).__name__}", file=sys.stderr)
    formatted = traceback.TracebackException.from_exception(e)
    print(*formatted.format(), sep="", file=sys.stderr)


already_displayed = {}


def display_once(e: Exception, task):
    # mirrors modules/errors.py display_once
    record_exception()
    if task in already_displayed:
        return
    display(e, task)
    already_displayed[task] = 1


def run(code, task):
    # mirrors modules/errors.py run
    try:
        code()
    except Exception as e:
        display(e, task)
