"""Mirrors modules/sd_samplers_timesteps_impl.py: the timestep-space samplers DDIM, DDIM CFG++, PLMS
and UniPC. ``model`` is the CFGDenoiserTimesteps; it is called with integer-valued timesteps (UniPC:
continuous model times) and returns the guided noise prediction eps. The schedule comes from
``model.inner_model.inner_model.alphas_cumprod`` (CFGDenoiserTimesteps -> CompVisTimestepsDenoiser
-> shared.sd_model).

Model calls: DDIM / DDIM CFG++ len(timesteps) - 1 (timesteps[0] is never evaluated), PLMS one more
(its first step is a pseudo improved Euler step with two calls), UniPC len(timesteps)."""

import k_diffusion.sampling
import torch
import tqdm

from modules import shared
from modules.models.diffusion.uni_pc import uni_pc
from modules.torch_utils import float64


def _schedule(model, x, timesteps):
    # alphas at each timestep and at the previous one (timestep index 0 -> alphas_cumprod[0])
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    previous = torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))
    alphas_prev = alphas_cumprod[previous].to(float64(x))
    return alphas, alphas_prev, torch.sqrt(1 - alphas)


def _ddim_sigmas(eta, alphas, alphas_prev):
    # DDIM's sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)), in float64 on the CPU;
    # the real code divides a numpy array by the float32 tensor 1 - a_t, which torch evaluates as
    # reciprocal(1 - a_t) * (1 - a_prev): the same rounding here
    alphas = alphas.cpu()
    alphas_prev = alphas_prev.cpu().double()
    return eta * torch.sqrt((1 - alphas).reciprocal() * (1 - alphas_prev) * (1 - alphas / alphas_prev))


def _ddim_loop(model, x, timesteps, extra_args, callback, disable, eta, use_uncond_direction):
    alphas, alphas_prev, sqrt_one_minus_alphas = _schedule(model, x, timesteps)
    sigmas = _ddim_sigmas(eta, alphas, alphas_prev)

    extra_args = {} if extra_args is None else extra_args
    batch_ones = x.new_ones(x.shape[0])
    scalar_ones = x.new_ones((x.shape[0], 1, 1, 1))
    for i in tqdm.trange(len(timesteps) - 1, disable=disable):
        index = len(timesteps) - 1 - i  # from the last timestep down to timesteps[1]

        e_t = model(x, timesteps[index].item() * batch_ones, **extra_args)
        direction_eps = model.last_noise_uncond if use_uncond_direction else e_t

        a_t = alphas[index].item() * scalar_ones
        a_prev = alphas_prev[index].item() * scalar_ones
        sigma_t = sigmas[index].item() * scalar_ones
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * scalar_ones

        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * direction_eps
        noise = sigma_t * k_diffusion.sampling.torch.randn_like(x)  # TorchHijack: p.rng during sampling
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise

        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})

    return x


@torch.no_grad()
def ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    # mirrors sd_samplers_timesteps_impl.ddim
    return _ddim_loop(model, x, timesteps, extra_args, callback, disable, eta, use_uncond_direction=False)


@torch.no_grad()
def ddim_cfgpp(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    # mirrors sd_samplers_timesteps_impl.ddim_cfgpp (CFG++, 2024): the CFG scale is divided by 12.5
    # (set on the CFG denoiser for the rest of this sampler's life) and the direction to x_t uses the
    # unconditional noise prediction (the denoiser keeps it: need_last_noise_uncond)
    model.cond_scale_miltiplier = 1 / 12.5
    model.need_last_noise_uncond = True
    return _ddim_loop(model, x, timesteps, extra_args, callback, disable, eta, use_uncond_direction=True)


@torch.no_grad()
def plms(model, x, timesteps, extra_args=None, callback=None, disable=None):
    # mirrors sd_samplers_timesteps_impl.plms: pseudo linear multistep; the first step is a pseudo
    # improved Euler (2nd order) step with an extra model call at the next timestep, then
    # Adams-Bashforth of order 2, 3, 4 over the previous eps values
    alphas, alphas_prev, sqrt_one_minus_alphas = _schedule(model, x, timesteps)

    extra_args = {} if extra_args is None else extra_args
    batch_ones = x.new_ones([x.shape[0]])
    scalar_ones = x.new_ones((x.shape[0], 1, 1, 1))
    previous_eps = []

    def step_with(e_t, index):
        a_t = alphas[index].item() * scalar_ones
        a_prev = alphas_prev[index].item() * scalar_ones
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * scalar_ones
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t, pred_x0

    for i in tqdm.trange(len(timesteps) - 1, disable=disable):
        index = len(timesteps) - 1 - i
        t_now = timesteps[index].item() * batch_ones
        t_next = timesteps[max(index - 1, 0)].item() * batch_ones

        e_t = model(x, t_now, **extra_args)

        if not previous_eps:
            x_next, _ = step_with(e_t, index)
            e_t_next = model(x_next, t_next, **extra_args)
            e_combined = (e_t + e_t_next) / 2
        elif len(previous_eps) == 1:
            e_combined = (3 * e_t - previous_eps[-1]) / 2
        elif len(previous_eps) == 2:
            e_combined = (23 * e_t - 16 * previous_eps[-1] + 5 * previous_eps[-2]) / 12
        else:
            e_combined = (55 * e_t - 59 * previous_eps[-1] + 37 * previous_eps[-2] - 9 * previous_eps[-3]) / 24

        x_next, pred_x0 = step_with(e_combined, index)

        previous_eps.append(e_t)
        if len(previous_eps) >= 4:
            previous_eps.pop(0)

        x = x_next

        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})

    return x


class UniPCCFG(uni_pc.UniPC):
    # mirrors sd_samplers_timesteps_impl.UniPCCFG: UniPC over the CFG denoiser; the continuous time t
    # becomes the model time (t - 1/N) * 1000; the sampler callback runs after every update with a
    # counter of its own as "i"
    def __init__(self, cfg_model, extra_args, callback, *args, **kwargs):
        super().__init__(None, *args, **kwargs)

        def after_update(x, model_x):
            callback({"x": x, "i": self.index, "sigma": 0, "sigma_hat": 0, "denoised": model_x})
            self.index += 1

        self.cfg_model = cfg_model
        self.extra_args = extra_args
        self.callback = callback
        self.index = 0
        self.after_update = after_update

    def get_model_input_time(self, t_continuous):
        return (t_continuous - 1.0 / self.noise_schedule.total_N) * 1000.0

    def model(self, x, t):
        return self.cfg_model(x, self.get_model_input_time(t), **self.extra_args)


def unipc(model, x, timesteps, extra_args=None, callback=None, disable=None, is_img2img=False):
    # mirrors sd_samplers_timesteps_impl.unipc: len(timesteps) multistep updates with the options
    # uni_pc_variant / uni_pc_skip_type / uni_pc_order / uni_pc_lower_order_final; img2img starts at
    # the continuous time of the last scheduled timestep (plus 1/1000, as the real code does)
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod

    noise_schedule = uni_pc.NoiseScheduleVP("discrete", alphas_cumprod=alphas_cumprod)
    t_start = timesteps[-1] / 1000 + 1 / 1000 if is_img2img else None
    sampler = UniPCCFG(
        model, extra_args, callback, noise_schedule, predict_x0=True, thresholding=False, variant=shared.opts.uni_pc_variant
    )
    return sampler.sample(
        x,
        steps=len(timesteps),
        t_start=t_start,
        skip_type=shared.opts.uni_pc_skip_type,
        method="multistep",
        order=shared.opts.uni_pc_order,
        lower_order_final=shared.opts.uni_pc_lower_order_final,
    )
