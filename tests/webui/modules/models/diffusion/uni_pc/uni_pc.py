"""Mirrors modules/models/diffusion/uni_pc/uni_pc.py (UniPC: a unified predictor-corrector framework
for fast sampling of diffusion models), the parts the WebUI's "UniPC" sampler uses:

- NoiseScheduleVP for a discrete-time model (from betas or alphas_cumprod): t_n = (n + 1) / N,
  log(alpha_t) piecewise-linear in t, sigma_t = sqrt(1 - alpha_t^2), lambda_t = log(alpha_t / sigma_t);
- UniPC with the multistep method, the B(h) variants ("bh1": B(h) = h, "bh2": B(h) = e^h - 1) and
  "vary_coeff", data (x0) or noise prediction, optional thresholding, the "time_uniform",
  "time_quadratic" and "logSNR" time-step spacings;
- interpolate_fn and expand_dims.

Not provided (the WebUI's sampler list does not reach them): the continuous "linear"/"cosine" VP
schedules, model_wrapper, the singlestep method (the real sample() raises NotImplementedError for it
too) and the legacy sampler.py UniPCSampler."""

import torch
import tqdm


class NoiseScheduleVP:
    # mirrors uni_pc.NoiseScheduleVP (schedule="discrete" only)
    def __init__(self, schedule="discrete", betas=None, alphas_cumprod=None, continuous_beta_0=0.1, continuous_beta_1=20.0):
        if schedule not in ("discrete", "linear", "cosine"):
            raise ValueError(
                f"Unsupported noise schedule {schedule}. The schedule needs to be 'discrete' or 'linear' or 'cosine'"
            )
        if schedule != "discrete":
            raise NotImplementedError("stand-in: only the discrete VP schedule is provided")

        self.schedule = schedule
        if betas is not None:
            log_alphas = 0.5 * torch.log(1 - betas).cumsum(dim=0)
        else:
            assert alphas_cumprod is not None
            log_alphas = 0.5 * torch.log(alphas_cumprod)
        self.total_N = len(log_alphas)
        self.T = 1.0
        # discrete step n sits at continuous time (n + 1) / N
        self.t_array = torch.linspace(0.0, 1.0, self.total_N + 1)[1:].reshape((1, -1))
        self.log_alpha_array = log_alphas.reshape((1, -1))

    def marginal_log_mean_coeff(self, t):
        # log(alpha_t), linearly interpolated between the discrete steps
        return interpolate_fn(t.reshape((-1, 1)), self.t_array.to(t.device), self.log_alpha_array.to(t.device)).reshape(-1)

    def marginal_alpha(self, t):
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t):
        # half log-SNR: log(alpha_t) - log(sigma_t)
        log_alpha = self.marginal_log_mean_coeff(t)
        log_sigma = 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))
        return log_alpha - log_sigma

    def inverse_lambda(self, lamb):
        # the t whose half log-SNR is lamb: log(alpha) = -log(1 + e^(-2 lambda)) / 2, then t from the table
        log_alpha = -0.5 * torch.logaddexp(torch.zeros((1,)).to(lamb.device), -2.0 * lamb)
        t = interpolate_fn(
            log_alpha.reshape((-1, 1)),
            torch.flip(self.log_alpha_array.to(lamb.device), [1]),
            torch.flip(self.t_array.to(lamb.device), [1]),
        )
        return t.reshape((-1,))


class UniPC:
    # mirrors uni_pc.UniPC
    def __init__(
        self,
        model_fn,
        noise_schedule,
        predict_x0=True,
        thresholding=False,
        max_val=1.0,
        variant="bh1",
        condition=None,
        unconditional_condition=None,
        before_sample=None,
        after_sample=None,
        after_update=None,
    ):
        self.model_fn_ = model_fn
        self.noise_schedule = noise_schedule
        self.variant = variant
        self.predict_x0 = predict_x0
        self.thresholding = thresholding
        self.max_val = max_val
        self.condition = condition
        self.unconditional_condition = unconditional_condition
        self.before_sample = before_sample
        self.after_sample = after_sample
        self.after_update = after_update

    def model(self, x, t):
        # the raw model call with the before/after hooks (the WebUI's UniPCCFG replaces this method)
        cond, uncond = self.condition, self.unconditional_condition
        if self.before_sample is not None:
            x, t, cond, uncond = self.before_sample(x, t, cond, uncond)
        res = self.model_fn_(x, t, cond, uncond)
        if self.after_sample is not None:
            x, t, cond, uncond, res = self.after_sample(x, t, cond, uncond, res)
        if isinstance(res, tuple):  # (None, pred_x0)
            res = res[1]
        return res

    def noise_prediction_fn(self, x, t):
        return self.model(x, t)

    def data_prediction_fn(self, x, t):
        # x0 = (x - sigma_t * eps) / alpha_t, optionally with Imagen's dynamic thresholding (p = 0.995)
        noise = self.noise_prediction_fn(x, t)
        dims = x.dim()
        alpha_t, sigma_t = self.noise_schedule.marginal_alpha(t), self.noise_schedule.marginal_std(t)
        x0 = (x - expand_dims(sigma_t, dims) * noise) / expand_dims(alpha_t, dims)
        if self.thresholding:
            s = torch.quantile(torch.abs(x0).reshape((x0.shape[0], -1)), 0.995, dim=1)
            s = expand_dims(torch.maximum(s, self.max_val * torch.ones_like(s).to(s.device)), dims)
            x0 = torch.clamp(x0, -s, s) / s
        return x0

    def model_fn(self, x, t):
        return self.data_prediction_fn(x, t) if self.predict_x0 else self.noise_prediction_fn(x, t)

    def get_time_steps(self, skip_type, t_T, t_0, N, device):
        # N + 1 times from t_T down to t_0
        if skip_type == "logSNR":
            lambda_T = self.noise_schedule.marginal_lambda(torch.tensor(t_T).to(device))
            lambda_0 = self.noise_schedule.marginal_lambda(torch.tensor(t_0).to(device))
            log_snr = torch.linspace(lambda_T.cpu().item(), lambda_0.cpu().item(), N + 1).to(device)
            return self.noise_schedule.inverse_lambda(log_snr)
        if skip_type == "time_uniform":
            return torch.linspace(t_T, t_0, N + 1).to(device)
        if skip_type == "time_quadratic":
            return torch.linspace(t_T**0.5, t_0**0.5, N + 1).pow(2).to(device)
        raise ValueError(f"Unsupported skip_type {skip_type}, need to be 'logSNR' or 'time_uniform' or 'time_quadratic'")

    def denoise_to_zero_fn(self, x, s):
        return self.data_prediction_fn(x, s)

    def multistep_uni_pc_update(self, x, model_prev_list, t_prev_list, t, order, **kwargs):
        if len(t.shape) == 0:
            t = t.view(-1)
        if "bh" in self.variant:
            return self.multistep_uni_pc_bh_update(x, model_prev_list, t_prev_list, t, order, **kwargs)
        assert self.variant == "vary_coeff"
        return self.multistep_uni_pc_vary_update(x, model_prev_list, t_prev_list, t, order, **kwargs)

    def _previous_differences(self, model_prev_list, t_prev_list, h, order, first_element):
        # r_k = (lambda_{prev k} - lambda_{prev 0}) / h and D1_k = (m_{prev k} - m_{prev 0}) / r_k for the
        # order - 1 earlier model values; first_element: r_k is taken from the first batch entry (B(h))
        ns = self.noise_schedule
        lambda_prev_0 = ns.marginal_lambda(t_prev_list[-1])
        model_prev_0 = model_prev_list[-1]
        rks, D1s = [], []
        for i in range(1, order):
            rk = (ns.marginal_lambda(t_prev_list[-(i + 1)]) - lambda_prev_0) / h
            if first_element:
                rk = rk[0]
            rks.append(rk)
            D1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
        rks.append(1.0)
        return rks, D1s

    def multistep_uni_pc_vary_update(self, x, model_prev_list, t_prev_list, t, order, use_corrector=True):
        # UniPC with varying coefficients: predictor/corrector weights from the inverse of the matrix
        # C[i, k] = r_i^k / (k + 1)!; the step scalars are not broadcast over the batch (as in the real code)
        ns = self.noise_schedule
        assert order <= len(model_prev_list)

        t_prev_0 = t_prev_list[-1]
        model_prev_0 = model_prev_list[-1]
        h = ns.marginal_lambda(t) - ns.marginal_lambda(t_prev_0)
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        log_alpha_prev_0, log_alpha_t = ns.marginal_log_mean_coeff(t_prev_0), ns.marginal_log_mean_coeff(t)
        alpha_t = torch.exp(log_alpha_t)

        rks, D1s = self._previous_differences(model_prev_list, t_prev_list, h, order, first_element=False)
        rks = torch.tensor(rks, device=x.device)
        K = len(rks)

        columns = []
        column = torch.ones_like(rks)
        for k in range(1, K + 1):
            columns.append(column)
            column = column * rks / (k + 1)
        C = torch.stack(columns, dim=1)

        if len(D1s) > 0:
            D1s = torch.stack(D1s, dim=1)  # (B, K - 1, C, H, W)
            A_p = torch.linalg.inv(C[:-1, :-1])
        if use_corrector:
            A_c = torch.linalg.inv(C)

        hh = -h if self.predict_x0 else h
        h_phi_1 = torch.expm1(hh)
        # h * phi_k(h) for k = 1 .. K + 1
        h_phi_ks = []
        h_phi_k = h_phi_1
        factorial = 1
        for k in range(1, K + 2):
            h_phi_ks.append(h_phi_k)
            h_phi_k = h_phi_k / hh - 1 / factorial
            factorial *= k + 1

        if self.predict_x0:
            scale_x, coeff = sigma_t / sigma_prev_0, alpha_t
        else:
            scale_x, coeff = torch.exp(log_alpha_t - log_alpha_prev_0), sigma_t

        x_base = scale_x * x - coeff * h_phi_1 * model_prev_0
        x_t = x_base
        if len(D1s) > 0:
            for k in range(K - 1):
                x_t = x_t - coeff * h_phi_ks[k + 1] * torch.einsum("bkchw,k->bchw", D1s, A_p[k])

        model_t = None
        if use_corrector:
            model_t = self.model_fn(x_t, t)
            D1_t = model_t - model_prev_0
            x_t = x_base
            k = 0
            for k in range(K - 1):
                x_t = x_t - coeff * h_phi_ks[k + 1] * torch.einsum("bkchw,k->bchw", D1s, A_c[k][:-1])
            # (the real code weights D1_t with the last row index the loop reached)
            x_t = x_t - coeff * h_phi_ks[K] * (D1_t * A_c[k][-1])
        return x_t, model_t

    def multistep_uni_pc_bh_update(self, x, model_prev_list, t_prev_list, t, order, x_t=None, use_corrector=True):
        # UniPC with B(h): rho coefficients solve R rho = b with R[i, k] = r_k^i and
        # b_i = h phi_{i+1}(h) i! / B(h); order 2 predictor and order 1 corrector use rho = 0.5
        ns = self.noise_schedule
        assert order <= len(model_prev_list)
        dims = x.dim()

        t_prev_0 = t_prev_list[-1]
        model_prev_0 = model_prev_list[-1]
        h = ns.marginal_lambda(t) - ns.marginal_lambda(t_prev_0)
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        log_alpha_prev_0, log_alpha_t = ns.marginal_log_mean_coeff(t_prev_0), ns.marginal_log_mean_coeff(t)
        alpha_t = torch.exp(log_alpha_t)

        rks, D1s = self._previous_differences(model_prev_list, t_prev_list, h, order, first_element=True)
        rks = torch.tensor(rks, device=x.device)

        hh = -h[0] if self.predict_x0 else h[0]
        h_phi_1 = torch.expm1(hh)  # h * phi_1(h) = e^h - 1
        h_phi_k = h_phi_1 / hh - 1
        if self.variant == "bh1":
            B_h = hh
        elif self.variant == "bh2":
            B_h = torch.expm1(hh)
        else:
            raise NotImplementedError()

        rows, b = [], []
        factorial = 1
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial / B_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        R = torch.stack(rows)
        b = torch.tensor(b, device=x.device)

        use_predictor = len(D1s) > 0 and x_t is None
        if len(D1s) > 0:
            D1s = torch.stack(D1s, dim=1)  # (B, K, C, H, W)
            if x_t is None:
                rhos_p = torch.tensor([0.5], device=b.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        else:
            D1s = None
        if use_corrector:
            rhos_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(R, b)

        if self.predict_x0:
            scale_x, coeff = sigma_t / sigma_prev_0, alpha_t
        else:
            scale_x, coeff = torch.exp(log_alpha_t - log_alpha_prev_0), sigma_t

        x_base = expand_dims(scale_x, dims) * x - expand_dims(coeff * h_phi_1, dims) * model_prev_0
        if x_t is None:
            predicted = torch.einsum("k,bkchw->bchw", rhos_p, D1s) if use_predictor else 0
            x_t = x_base - expand_dims(coeff * B_h, dims) * predicted

        model_t = None
        if use_corrector:
            model_t = self.model_fn(x_t, t)
            corrected = torch.einsum("k,bkchw->bchw", rhos_c[:-1], D1s) if D1s is not None else 0
            D1_t = model_t - model_prev_0
            x_t = x_base - expand_dims(coeff * B_h, dims) * (corrected + rhos_c[-1] * D1_t)
        return x_t, model_t

    def sample(
        self,
        x,
        steps=20,
        t_start=None,
        t_end=None,
        order=3,
        skip_type="time_uniform",
        method="singlestep",
        lower_order_final=True,
        denoise_to_zero=False,
        solver_type="dpm_solver",
        atol=0.0078,
        rtol=0.05,
        corrector=False,
    ):
        # mirrors UniPC.sample (multistep): one model call at t_T, then order - 1 warm-up updates of
        # increasing order, then updates of `order` (lower near the end with lower_order_final); every
        # update but the last runs the corrector, whose model value is reused as the next step's
        # (steps model calls in all); after_update(x, model_x) after each update
        t_0 = 1.0 / self.noise_schedule.total_N if t_end is None else t_end
        t_T = self.noise_schedule.T if t_start is None else t_start
        device = x.device
        if method != "multistep":
            raise NotImplementedError()

        assert steps >= order, "UniPC order must be < sampling steps"
        timesteps = self.get_time_steps(skip_type=skip_type, t_T=t_T, t_0=t_0, N=steps, device=device)
        assert timesteps.shape[0] - 1 == steps
        with torch.no_grad():
            vec_t = timesteps[0].expand(x.shape[0])
            model_prev_list = [self.model_fn(x, vec_t)]
            t_prev_list = [vec_t]
            with tqdm.tqdm(total=steps) as pbar:
                for init_order in range(1, order):
                    vec_t = timesteps[init_order].expand(x.shape[0])
                    x, model_x = self.multistep_uni_pc_update(
                        x, model_prev_list, t_prev_list, vec_t, init_order, use_corrector=True
                    )
                    if model_x is None:
                        model_x = self.model_fn(x, vec_t)
                    if self.after_update is not None:
                        self.after_update(x, model_x)
                    model_prev_list.append(model_x)
                    t_prev_list.append(vec_t)
                    pbar.update()

                for step in range(order, steps + 1):
                    vec_t = timesteps[step].expand(x.shape[0])
                    step_order = min(order, steps + 1 - step) if lower_order_final else order
                    use_corrector = step != steps  # no corrector (no model call) at the last step
                    x, model_x = self.multistep_uni_pc_update(
                        x, model_prev_list, t_prev_list, vec_t, step_order, use_corrector=use_corrector
                    )
                    if self.after_update is not None:
                        self.after_update(x, model_x)
                    # shift the history window by one
                    for i in range(order - 1):
                        t_prev_list[i] = t_prev_list[i + 1]
                        model_prev_list[i] = model_prev_list[i + 1]
                    t_prev_list[-1] = vec_t
                    if step < steps:
                        if model_x is None:
                            model_x = self.model_fn(x, vec_t)
                        model_prev_list[-1] = model_x
                    pbar.update()

        if denoise_to_zero:
            x = self.denoise_to_zero_fn(x, torch.ones((x.shape[0],)).to(device) * t_0)
        return x


def interpolate_fn(x, xp, yp):
    # mirrors uni_pc.interpolate_fn: the piecewise-linear function through the keypoints (xp, yp),
    # extended beyond the first/last keypoint by the outermost segments. x: [N, C]; xp, yp: [C, K]
    # with xp increasing along K; returns [N, C]
    K = xp.shape[1]
    queries = x.transpose(0, 1).contiguous()  # [C, N]
    right = torch.searchsorted(xp.contiguous(), queries).clamp(1, K - 1)
    left = right - 1
    x_left, x_right = torch.gather(xp, 1, left), torch.gather(xp, 1, right)
    y_left, y_right = torch.gather(yp, 1, left), torch.gather(yp, 1, right)
    result = y_left + (queries - x_left) * (y_right - y_left) / (x_right - x_left)
    return result.transpose(0, 1)


def expand_dims(v, dims):
    # [N] -> [N, 1, ..., 1] with `dims` dimensions
    return v[(...,) + (None,) * (dims - 1)]
