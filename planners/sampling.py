"""The loop shared by the sampling planners (CEM, iCEM, MPPI): sample, score, refit to elites."""

from __future__ import annotations

import torch

from wmrobot.planners.base import Planner
from wmrobot.planners.noise import draw_noise


class SamplingPlanner(Planner):
    """Iterates: candidates = clip(mean + std * noise, low, high) with candidate 0 the mean
    itself; score them; the ``elites`` lowest costs (stable sort) refit mean and std.

    All noise of a decision comes from one :func:`draw_noise` call (colored if ``beta > 0``);
    iteration i uses the first ``populations()[i]`` samples of its slice. A batch row whose
    candidates are all non-finite keeps its mean and std for that iteration, so a model that
    returns only NaN leaves the warm start unchanged. Subclasses define ``refit`` and may add
    candidates (``extra``), watch the scored ones (``observe``) and choose the ``result``.
    """

    def populations(self) -> list[int]:
        """How many noise samples each iteration draws."""
        return [self.cfg.samples] * self.cfg.iterations

    @torch.no_grad()
    def plan(
        self, z0: torch.Tensor, goal_z: torch.Tensor, init_mean: torch.Tensor | None = None
    ) -> torch.Tensor:
        cfg, low, high = self.cfg, self.low, self.high
        batch, a_dim = z0.shape[0], low.shape[0]
        mean = self.initial_mean(batch, init_mean)
        std = torch.full_like(mean, cfg.init_std)
        sizes = self.populations()
        noise = draw_noise(self.rng, len(sizes), batch, max(sizes), cfg.horizon, a_dim, cfg.beta)
        noise = torch.from_numpy(noise).to(low.device)
        prior = self.policy_candidates(z0)
        self.begin(mean, init_mean is not None)
        for i, n in enumerate(sizes):
            candidates = (mean[:, None] + std[:, None] * noise[i, :, :n]).clamp(low, high)
            candidates[:, 0] = mean.clamp(low, high)
            candidates = self.extra(candidates, i)
            if prior is not None:
                candidates = torch.cat([candidates, prior], dim=1)
            cost = self.finite_costs(self.objective(z0, goal_z, candidates))  # (B, N)
            order = cost.argsort(dim=1, stable=True)[:, : cfg.elites]  # (B, K)
            elite_cost = cost.gather(1, order)
            elites = candidates.gather(1, order[..., None, None].expand(-1, -1, *mean.shape[1:]))
            new_mean, new_std = self.refit(mean, std, elites, elite_cost)
            live = torch.isfinite(elite_cost[:, 0])[:, None, None]
            mean = torch.where(live, new_mean, mean)
            std = torch.where(live, new_std, std)
            self.observe(elites, elite_cost)
        return self.result(mean).clamp(low, high)

    def policy_candidates(self, z0: torch.Tensor) -> torch.Tensor | None:
        """``policy_samples`` sequences (B, P, H, A) of the model's policy prior, sampled and
        rolled out through the model (TD-MPC2): scored at every iteration beside the
        Gaussian's samples, so a good policy seeds the elites. None for a goal task."""
        dyn, p = self.dynamics, self.cfg.policy_samples
        if p == 0 or getattr(dyn, "task", "goal") != "reward":
            return None
        gen = torch.Generator(device=z0.device).manual_seed(int(self.rng.integers(2**62)))
        z, actions = z0.repeat_interleave(p, 0), []
        for _ in range(self.cfg.horizon):
            a = dyn.policy_action(z, gen)
            actions.append(a)
            z = dyn.predict(z, a)
        return torch.stack(actions, dim=1).view(z0.shape[0], p, self.cfg.horizon, -1)

    def refit(
        self, mean: torch.Tensor, std: torch.Tensor, elites: torch.Tensor, elite_cost: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New (mean, std) (B, H, A) from the elites (B, K, H, A), sorted by cost (B, K)."""
        raise NotImplementedError

    def begin(self, mean: torch.Tensor, warm: bool) -> None:
        """A decision starts from ``mean`` (B, H, A); ``warm`` if it is a warm start."""

    def extra(self, candidates: torch.Tensor, iteration: int) -> torch.Tensor:
        """Candidates (B, N, H, A) -> with any others to score appended (B, N', H, A)."""
        return candidates

    def observe(self, elites: torch.Tensor, elite_cost: torch.Tensor) -> None:
        """The elites of an iteration (B, K, H, A) and their costs (B, K), best first."""

    def result(self, mean: torch.Tensor) -> torch.Tensor:
        """The returned plan, given the final mean (B, H, A)."""
        return mean


def weighted_moments(
    elites: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (B, H, A) of elites (B, K, H, A) under weights (B, K) summing to 1."""
    w = weights[..., None, None]
    mean = (w * elites).sum(1)
    std = (w * (elites - mean[:, None]).pow(2)).sum(1).sqrt()
    return mean, std
