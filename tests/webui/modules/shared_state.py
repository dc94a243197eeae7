"""Mirrors modules/shared_state.py: ``State``, the job/progress/interrupt state."""

import datetime
import logging
import time

from modules import devices, errors, shared

log = logging.getLogger(__name__)


class State:
    # mirrors modules/shared_state.py State (server-command plumbing left out)
    skipped = False
    interrupted = False
    stopping_generation = False
    job = ""
    job_no = 0
    job_count = 0
    processing_has_refined_job_count = False
    job_timestamp = "0"
    sampling_step = 0
    sampling_steps = 0
    current_latent = None
    current_image = None
    current_image_sampling_step = 0
    id_live_preview = 0
    textinfo = None
    time_start = None
    server_start = None

    def __init__(self):
        self.server_start = time.time()

    def skip(self):
        self.skipped = True
        log.info("Received skip request")

    def interrupt(self):
        self.interrupted = True
        log.info("Received interrupt request")

    def stop_generating(self):
        self.stopping_generation = True
        log.info("Received stop generating request")

    def nextjob(self):
        # mirrors State.nextjob: counts the job, resets the step counters
        if shared.opts.live_previews_enable and shared.opts.show_progress_every_n_steps == -1:
            self.do_set_current_image()
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0

    def dict(self):
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": self.stopping_generation,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }

    def begin(self, job: str = "(unknown)"):
        # mirrors State.begin: clears the flags and counters of the previous job
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.processing_has_refined_job_count = False
        self.job_no = 0
        self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.current_latent = None
        self.current_image = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job
        devices.torch_gc()

    def end(self):
        # mirrors State.end
        self.job = ""
        self.job_count = 0
        devices.torch_gc()

    def set_current_image(self):
        # mirrors State.set_current_image: nothing to do while parallel processing is allowed
        if not shared.parallel_processing_allowed:
            return
        if (
            self.sampling_step - self.current_image_sampling_step >= shared.opts.show_progress_every_n_steps
            and shared.opts.live_previews_enable
            and shared.opts.show_progress_every_n_steps != -1
        ):
            self.do_set_current_image()

    def do_set_current_image(self):
        # mirrors State.do_set_current_image: decodes the current latent; failures are recorded only
        if self.current_latent is None:
            return
        import modules.sd_samplers

        try:
            if shared.opts.show_progress_grid:
                self.assign_current_image(modules.sd_samplers.samples_to_image_grid(self.current_latent))
            else:
                self.assign_current_image(modules.sd_samplers.sample_to_image(self.current_latent))
            self.current_image_sampling_step = self.sampling_step
        except Exception:
            errors.record_exception()

    def assign_current_image(self, image):
        self.current_image = image
        self.id_live_preview += 1
