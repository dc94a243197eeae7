"""Stand-in for modules/timer.py."""


class Timer:
    """timer.py Timer: the real one measures the time between ``record`` calls to print where model
    loading spent it; the stand-in only remembers the names recorded, since it prints no summary."""

    def __init__(self):
        self.records = []

    def record(self, category, extra_time=0):
        self.records.append(category)
