"""Mirrors modules/sd_samplers_extra.py: the "Restart" sampler (Restart Sampling for Improving
Generative Processes, 2023) that sd_samplers_kdiffusion lists as a callable funcname.

Heun steps over the given sigmas; with no explicit restart_list and at least 20 steps, the main
schedule is shortened to steps - restart_steps * restart_times Karras sigmas and, once the schedule
reaches sigma ~0.1, the latent is re-noised up to sigma ~2 and the segment 2 -> 0.1 is run again
(restart_steps Karras sigmas, restart_times times). The re-noising draws from
k_diffusion.sampling.torch.randn_like, i.e. the WebUI's TorchHijack (p.rng) during sampling."""

import k_diffusion.sampling
import torch
import tqdm


@torch.no_grad()
def restart_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, restart_list=None):
    # mirrors sd_samplers_extra.restart_sampler. restart_list maps {min_sigma: [restart_steps,
    # restart_times, max_sigma]}; None picks it automatically from the number of steps
    from k_diffusion.sampling import get_sigmas_karras, to_d

    extra_args = {} if extra_args is None else extra_args
    ones = x.new_ones([x.shape[0]])
    counter = 0  # the "i" reported to the callback: one per Heun step, restart segments included

    def heun_step(x, sigma_from, sigma_to, second_order=True):
        nonlocal counter
        denoised = model(x, sigma_from * ones, **extra_args)
        derivative = to_d(x, sigma_from, denoised)
        if callback is not None:
            callback({"x": x, "i": counter, "sigma": sigma_to, "sigma_hat": sigma_from, "denoised": denoised})
        dt = sigma_to - sigma_from
        if sigma_to == 0 or not second_order:
            x = x + derivative * dt  # last step (or first order): Euler
        else:
            x_euler = x + derivative * dt
            denoised_next = model(x_euler, sigma_to * ones, **extra_args)
            derivative_next = to_d(x_euler, sigma_to, denoised_next)
            x = x + (derivative + derivative_next) / 2 * dt
        counter += 1
        return x

    steps = sigmas.shape[0] - 1
    if restart_list is None:
        if steps >= 20:
            restart_steps, restart_times = 9, 1
            if steps >= 36:
                restart_steps, restart_times = steps // 4, 2
            # the main schedule gives up the steps the restart segments will use
            sigmas = get_sigmas_karras(
                steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item(), device=sigmas.device
            )
            restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
        else:
            restart_list = {}

    # sigma keys -> the index of the nearest sigma of the schedule
    restart_at = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}

    segments = []
    for i in range(len(sigmas) - 1):
        segments.append((sigmas[i], sigmas[i + 1]))
        if i + 1 not in restart_at:
            continue
        n_restart, times, sigma_restart_max = restart_at[i + 1]
        low_index = i + 1
        high_index = int(torch.argmin(abs(sigmas - sigma_restart_max), dim=0))
        if high_index >= low_index:
            continue
        sigma_low, sigma_high = sigmas[low_index].item(), sigmas[high_index].item()
        restart_sigmas = get_sigmas_karras(n_restart, sigma_low, sigma_high, device=sigmas.device)[:-1]  # no trailing 0
        for _ in range(times):
            segments.extend(zip(restart_sigmas[:-1], restart_sigmas[1:]))

    previous_sigma = None
    for sigma_from, sigma_to in tqdm.tqdm(segments, disable=disable):
        if previous_sigma is not None and previous_sigma < sigma_from:
            # a restart: add noise to go back up from previous_sigma to sigma_from
            extra = (sigma_from**2 - previous_sigma**2) ** 0.5
            x = x + k_diffusion.sampling.torch.randn_like(x) * s_noise * extra
        elif previous_sigma is None:
            previous_sigma = sigma_from
        x = heun_step(x, sigma_from, sigma_to)
        previous_sigma = sigma_to

    return x
