"""The measurements behind the skeleton's defaults, side by side in one run.

Activation cost (forward + backward), one world-model training step at two widths and thread
counts, PointMaze render time per frame, and SB3 SAC env steps/s at two network sizes. Run:

    python benchmarks/design_choices.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from wmrobot.envs import PointMazeEnv, make_env
from wmrobot.model import ModelConfig, WorldModel
from wmrobot.train.losses import LossWeights, jepa_loss


def ms_per_call(fn, calls: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1e3 * (time.perf_counter() - start) / calls


def activations() -> None:
    torch.set_num_threads(1)
    x = torch.randn(9216, 128, requires_grad=True)
    print("activation, forward + backward on (9216, 128), 1 thread:")
    for f in (F.mish, F.silu, F.relu):
        print(f"  {f.__name__:<6} {ms_per_call(lambda f=f: f(x).sum().backward(), 20):6.1f} ms")


def training_step() -> None:
    print("world-model training step (batch 256, 5-step windows, state obs):")
    torch.manual_seed(0)
    obs, act = torch.randn(256, 6, 4), torch.rand(256, 5, 2) * 2 - 1
    ag, goal = obs[..., :2], torch.randn(256, 4)
    for hidden in (64, 128):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = WorldModel(4, 2, ModelConfig(16, hidden, 2, 8, 0.99, 0.0, 1.0))
            opt = torch.optim.AdamW(model.parameters())

            def step(model=model, opt=opt) -> None:
                loss, _ = jepa_loss(
                    model, obs, act, ag, goal, goal[:, :2], LossWeights(1, 1, 0.04, 1)
                )
                opt.zero_grad()
                loss.backward()
                opt.step()

            print(f"  width {hidden:>3}, {threads} thread(s): {ms_per_call(step, 30):6.1f} ms")


def rendering() -> None:
    print("PointMaze render, one step + one frame:")
    for size in (64, 128):
        env = PointMazeEnv(render_mode="rgb_array", width=size, height=size)
        env.reset(seed=0)

        def frame(env=env) -> None:
            env.step(env.action_space.sample())
            env.render()

        print(f"  {size}x{size}: {ms_per_call(frame, 50):6.1f} ms")
        env.close()


def sac() -> None:
    from stable_baselines3 import SAC

    torch.set_num_threads(1)
    print("SB3 SAC on PointMaze, 1 thread, one gradient step per env step:")
    for arch, batch in (([256, 256], 256), ([64, 64], 128)):
        model = SAC(
            "MultiInputPolicy",
            make_env("wmrobot/PointMaze-v0"),
            learning_starts=100,
            batch_size=batch,
            policy_kwargs={"net_arch": arch},
            seed=0,
            device="cpu",
        )
        start = time.perf_counter()
        model.learn(1100)  # 100 random steps, then 1000 with a gradient step each
        rate = 1100 / (time.perf_counter() - start)
        print(f"  net {arch}, batch {batch}: {rate:6.0f} env steps/s")


if __name__ == "__main__":
    activations()
    training_step()
    rendering()
    sac()
