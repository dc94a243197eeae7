"""Stand-in for modules/shared_state.py: ``State`` (``shared.state``), the progress of the running job
and the Interrupt / Skip flags the samplers check."""

from __future__ import annotations

import datetime
import time

_AT_REST = {
    "job": "", "job_no": 0, "job_count": 0, "job_timestamp": "0", "processing_has_refined_job_count": False,
    "sampling_step": 0, "sampling_steps": 0, "current_latent": None, "current_image": None,
    "current_image_sampling_step": 0, "id_live_preview": 0, "time_start": None,
    "skipped": False, "interrupted": False, "stopping_generation": False,
}
"""What a State holds when no job ran yet; ``begin`` returns to it for each new job."""


class State:
    """shared_state.py State. ``job_count`` is the number of batches (set by processing), ``job_no`` the
    current one; ``sampling_step`` / ``sampling_steps`` are set by the samplers' step callbacks.
    Interrupt stops the whole job at the next denoiser call, Skip only the current batch.

    Simplified: no live-preview thread or server commands; the live preview image is set only by the
    samplers' own callback (``assign_current_image``)."""

    def __init__(self):
        vars(self).update(_AT_REST)
        self.server_start = time.time()

    def interrupt(self):
        """The Interrupt button."""
        self.interrupted = True

    def skip(self):
        """The Skip button."""
        self.skipped = True

    def begin(self, job: str = "(unknown)"):
        """shared_state.py State.begin: a job starts with every flag and counter back at rest (the job
        count unknown: -1) and a fresh timestamp."""
        vars(self).update(_AT_REST)
        self.job, self.job_count = job, -1
        self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.time_start = time.time()

    def end(self):
        """shared_state.py State.end: no job running any more (the flags stay as they were)."""
        self.job, self.job_count = "", 0

    def nextjob(self):
        """shared_state.py State.nextjob: on to the next batch; its step counters start again."""
        self.job_no += 1
        self.sampling_step = self.current_image_sampling_step = 0

    def assign_current_image(self, image):
        """shared_state.py State.assign_current_image: a new live preview."""
        self.current_image = image
        self.id_live_preview += 1
