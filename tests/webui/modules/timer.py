"""Mirrors modules/timer.py only as far as ``startup_timer.record`` (a no-op here)."""


class Timer:
    # mirrors modules/timer.py Timer: simplified to recording names only
    def __init__(self):
        self.records = []

    def record(self, category, extra_time=0):
        self.records.append(category)

    def summary(self):
        return ""

    def reset(self):
        self.records.clear()


startup_timer = Timer()
