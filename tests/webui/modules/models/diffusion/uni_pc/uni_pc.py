"""Stand-in for the WebUI's modules/models/diffusion/uni_pc/uni_pc.py (Zhao et al., "UniPC: A Unified
Predictor-Corrector Framework for Fast Sampling of Diffusion Models", 2023), reduced to what the WebUI's
"UniPC" sampler reaches: a discrete-time VP noise schedule, data (x0) prediction, the multistep method
with the B(h) variants "bh1" (B(h) = h) and "bh2" (B(h) = e^h - 1), and the "time_uniform",
"time_quadratic" and "logSNR" time spacings.

Left out: the continuous "linear"/"cosine" schedules, noise prediction, thresholding, the singlestep
method, denoise-to-zero and the "vary_coeff" variant (its real code only works for batches of one); a
variant other than bh1/bh2 raises NotImplementedError."""

from __future__ import annotations

import collections

import torch


def _interpolate(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear f(x) through the points (xp, fp), xp increasing, continued beyond both ends along
    the outermost segments (the real interpolate_fn, for one channel)."""
    xp, fp = xp.to(x.device), fp.to(x.device)
    flat = x.reshape(-1).to(xp.dtype)
    right = torch.searchsorted(xp, flat.contiguous()).clamp(1, len(xp) - 1)
    left = right - 1
    slope = (fp[right] - fp[left]) / (xp[right] - xp[left])
    return (fp[left] + (flat - xp[left]) * slope).reshape(x.shape)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """A per-sample scalar [B] shaped to multiply a [B, C, H, W] latent."""
    return values[:, None, None, None]


class NoiseScheduleVP:
    """uni_pc.NoiseScheduleVP for schedule="discrete": the N discrete steps sit at continuous times
    (n + 1) / N, log(alpha_t) is linear between them; sigma_t = sqrt(1 - alpha_t^2) and lambda_t =
    log(alpha_t / sigma_t), half the log-SNR."""

    def __init__(self, schedule="discrete", alphas_cumprod=None):
        if schedule != "discrete":
            raise NotImplementedError("stand-in: only the discrete VP schedule is provided")
        self.log_alpha_array = 0.5 * torch.log(alphas_cumprod)
        self.total_N = len(self.log_alpha_array)
        self.T = 1.0
        self.t_array = torch.linspace(0.0, 1.0, self.total_N + 1)[1:]

    def marginal_log_mean_coeff(self, t):
        return _interpolate(t, self.t_array, self.log_alpha_array)

    def marginal_alpha(self, t):
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t):
        log_alpha = self.marginal_log_mean_coeff(t)
        return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))

    def inverse_lambda(self, lamb):
        """The time whose lambda is ``lamb``: log(alpha) = -log(1 + e^(-2 lambda)) / 2, looked up in the table."""
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lamb), -2.0 * lamb)
        return _interpolate(log_alpha, self.log_alpha_array.flip(0), self.t_array.flip(0))


class UniPC:
    """uni_pc.UniPC, multistep data prediction. Subclasses supply :meth:`model` (the noise prediction at
    continuous time t) and may override :meth:`after_update`, called after every update with the new x
    and the model value it produced (None after the last)."""

    def __init__(self, noise_schedule: NoiseScheduleVP, variant: str = "bh1"):
        if variant not in ("bh1", "bh2"):
            raise NotImplementedError(f"stand-in: UniPC variant {variant!r} is not implemented (only bh1 and bh2)")
        self.noise_schedule = noise_schedule
        self.variant = variant

    def model(self, x, t):
        raise NotImplementedError

    def after_update(self, x, model_x):
        pass

    def data_prediction(self, x, t):
        """x0 = (x - sigma_t * eps) / alpha_t."""
        schedule = self.noise_schedule
        eps = self.model(x, t)
        return (x - _per_sample(schedule.marginal_std(t)) * eps) / _per_sample(schedule.marginal_alpha(t))

    def time_steps(self, skip_type, t_T, t_0, N, device):
        """N + 1 times from t_T down to t_0: uniform in t, in sqrt(t), or in lambda."""
        if skip_type == "time_uniform":
            return torch.linspace(t_T, t_0, N + 1).to(device)
        if skip_type == "time_quadratic":
            return torch.linspace(t_T**0.5, t_0**0.5, N + 1).pow(2).to(device)
        if skip_type == "logSNR":
            schedule = self.noise_schedule
            lambda_T, lambda_0 = (schedule.marginal_lambda(torch.as_tensor(t, device=device)).item() for t in (t_T, t_0))
            return schedule.inverse_lambda(torch.linspace(lambda_T, lambda_0, N + 1).to(device))
        raise ValueError(f"Unsupported skip_type {skip_type}, need to be 'logSNR' or 'time_uniform' or 'time_quadratic'")

    def multistep_update(self, x, history, t, order, use_corrector):
        """One UniPC step from the last time in ``history`` (pairs of time and model value, oldest first) to
        ``t``, using the last ``order`` entries. With h the step in lambda, r_k the earlier entries' lambda
        offsets over h and D_k their divided differences, the predictor is

            x_t = (sigma_t / sigma_s) x - alpha_t (e^-h - 1) m_s - alpha_t B(h) sum_k rho_k D_k

        where rho solves the order conditions R rho = b, R[i, k] = r_k^i, b_i = i! h phi_(i+1)(h) / B(h);
        the corrector (UniC) evaluates the model at the predicted x_t and adds that value's difference as
        one more term, with r = 1. Orders 2 (predictor) and 1 (corrector) use rho = 1/2. Returns the new x
        and the model value at the predicted x_t (None without the corrector)."""
        schedule = self.noise_schedule
        t_last, model_last = history[-1]
        lambda_last = schedule.marginal_lambda(t_last)
        h = schedule.marginal_lambda(t) - lambda_last
        earlier = list(history)[-order:-1][::-1]  # the order - 1 entries before the last, newest first
        ratios = [((schedule.marginal_lambda(t_k) - lambda_last) / h)[0] for t_k, _ in earlier]
        differences = [(model_k - model_last) / ratio for (_, model_k), ratio in zip(earlier, ratios)]

        hh = -h[0]  # data prediction integrates in -lambda
        h_phi = torch.expm1(hh)
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        rhs, phi_k, factorial = [], h_phi / hh - 1, 1
        for i in range(1, order + 1):
            rhs.append(float(phi_k * factorial / b_h))
            factorial *= i + 1
            phi_k = phi_k / hh - 1 / factorial
        b = torch.tensor(rhs, device=x.device)
        r = torch.tensor([*map(float, ratios), 1.0], device=x.device)
        R = torch.stack([r**power for power in range(order)])

        alpha_t = schedule.marginal_alpha(t)
        base = _per_sample(schedule.marginal_std(t) / schedule.marginal_std(t_last)) * x
        base = base - _per_sample(alpha_t * h_phi) * model_last
        scale = _per_sample(alpha_t * b_h)
        x_t = base
        if differences:
            rho = torch.tensor([0.5], device=x.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
            x_t = base - scale * sum(weight * difference for weight, difference in zip(rho, differences))
        if not use_corrector:
            return x_t, None
        model_t = self.data_prediction(x_t, t)
        rho = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(R, b)
        correction = sum(weight * difference for weight, difference in zip(rho[:-1], differences))
        return base - scale * (correction + rho[-1] * (model_t - model_last)), model_t

    @torch.no_grad()
    def sample(self, x, steps, t_start=None, order=3, skip_type="time_uniform", lower_order_final=True):
        """UniPC.sample with method="multistep": one model evaluation at the start time, then ``steps``
        updates whose order climbs from 1 to ``order`` (and, with lower_order_final, falls again over the
        last steps). Every update but the last runs the corrector, whose model value is reused by the
        next update: ``steps`` model evaluations in all."""
        assert steps >= order, "UniPC order must be < sampling steps"
        schedule = self.noise_schedule
        t_end = 1.0 / schedule.total_N
        times = self.time_steps(skip_type, schedule.T if t_start is None else t_start, t_end, steps, x.device)
        batch = x.shape[0]
        t = times[0].expand(batch)
        history = collections.deque([(t, self.data_prediction(x, t))], maxlen=order)
        for step in range(1, steps + 1):
            t = times[step].expand(batch)
            if step < order:  # warming up: as many earlier values as there are
                step_order = step
            else:
                step_order = min(order, steps + 1 - step) if lower_order_final else order
            final = step == steps
            x, model_t = self.multistep_update(x, history, t, step_order, use_corrector=not final)
            self.after_update(x, model_t)
            history.append((t, model_t))
        return x
