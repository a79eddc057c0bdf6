"""PointMaze: a MuJoCo point mass pushed by 2-D forces through a small walled maze to a goal."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from wmrobot.envs import physics
from wmrobot.errors import EnvError

# '#' is a wall cell, '.' free space. The layouts are small on purpose: the walking skeleton plans
# greedily in latent space, and the U-maze (whose goals hide behind a wall) waits for the critic.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "ring": (
        "#####",
        "#...#",
        "#.#.#",
        "#...#",
        "#####",
    ),
    "open": (
        "#####",
        "#...#",
        "#...#",
        "#...#",
        "#####",
    ),
    "umaze": (
        "#####",
        "#...#",
        "###.#",
        "#...#",
        "#####",
    ),
}

CELL = 1.0  # metres per maze cell
RADIUS = 0.15  # agent radius
GOAL_RADIUS = 0.25  # success when the agent's centre is this close to the goal
MAX_SPEED = 10.0  # observation bound; the actuators' terminal speed is gear / damping = 2 m/s


def _mjcf(
    layout: tuple[str, ...], gear: float, damping: float, camera_height: float, image: int
) -> str:
    rows, cols = len(layout), len(layout[0])
    walls = []
    for r, line in enumerate(layout):
        for c, ch in enumerate(line):
            if ch == "#":
                x, y = _cell_centre(r, c, rows, cols)
                walls.append(
                    f'<geom name="wall_{r}_{c}" type="box" pos="{x} {y} 0.15" '
                    f'size="{CELL / 2} {CELL / 2} 0.15" material="wall"/>'
                )
    half = max(rows, cols) * CELL / 2
    return f"""
<mujoco model="pointmaze">
  <option timestep="0.01"/>
  <visual><global offwidth="{image}" offheight="{image}"/></visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".85 .85 .85" rgb2=".75 .75 .75"
             width="64" height="64"/>
    <material name="floor" texture="grid" texrepeat="{rows} {cols}"/>
    <material name="wall" rgba=".35 .35 .45 1"/>
  </asset>
  <default><geom contype="1" conaffinity="1" condim="1"/></default>
  <worldbody>
    <light pos="0 0 4" dir="0 0 -1" directional="true" castshadow="false"/>
    <camera name="top" pos="0 0 {camera_height}" xyaxes="1 0 0 0 1 0" fovy="60"/>
    <geom name="floor" type="plane" size="{half} {half} 0.1" material="floor"
          contype="0" conaffinity="0"/>
    {"".join(walls)}
    <site name="goal" pos="0 0 0.01" size="{GOAL_RADIUS} 0.005" type="cylinder" rgba=".2 .8 .2 .6"/>
    <body name="agent" pos="0 0 {RADIUS}">
      <joint name="x" type="slide" axis="1 0 0" damping="{damping}"/>
      <joint name="y" type="slide" axis="0 1 0" damping="{damping}"/>
      <geom name="agent" type="sphere" size="{RADIUS}" mass="1" rgba=".85 .3 .2 1"/>
    </body>
  </worldbody>
  <actuator>
    <motor name="fx" joint="x" gear="{gear}" ctrlrange="-1 1" ctrllimited="true"/>
    <motor name="fy" joint="y" gear="{gear}" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""


def _cell_centre(r: int, c: int, rows: int, cols: int) -> tuple[float, float]:
    # Row 0 is drawn at the top (largest y), so the layout strings read like the rendered image.
    return (c - (cols - 1) / 2) * CELL, ((rows - 1) / 2 - r) * CELL


class PointMazeEnv(gym.Env):
    """Goal-conditioned point mass in a maze.

    Observation (a dict, as gymnasium-robotics' goal envs): ``observation`` = (x, y, vx, vy),
    ``achieved_goal`` = (x, y), ``desired_goal`` = (gx, gy). Action: 2-D force in [-1, 1].
    Reward: minus the distance to the goal. The episode terminates on success
    (distance < ``GOAL_RADIUS``). ``reset(options={"start": (x, y), "goal": (gx, gy)})`` pins
    either; otherwise both are drawn from the free cells with the reset seed.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        layout: str = "ring",
        frame_skip: int = 5,
        gear: float = 5.0,
        damping: float = 2.5,
        min_goal_distance: float = 1.0,
        render_mode: str | None = None,
        width: int = 128,
        height: int = 128,
    ) -> None:
        if layout not in LAYOUTS:
            raise EnvError(f"unknown PointMaze layout {layout!r}; choose one of {sorted(LAYOUTS)}")
        if frame_skip < 1:
            raise EnvError(f"frame_skip must be >= 1, got {frame_skip}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise EnvError(f"render_mode {render_mode!r} is not supported; use 'rgb_array' or None")
        self.layout_name = layout
        self.layout = LAYOUTS[layout]
        self.frame_skip = frame_skip
        self.min_goal_distance = min_goal_distance
        self.render_mode = render_mode
        self.width, self.height = width, height
        rows, cols = len(self.layout), len(self.layout[0])
        self.model = mujoco.MjModel.from_xml_string(
            _mjcf(
                self.layout,
                gear,
                damping,
                camera_height=max(rows, cols) * CELL * 0.87,
                # The offscreen buffer only as large as the frames asked for: software GL
                # (Mesa on a CPU) pays for every pixel of it.
                image=max(width, height),
            )
        )
        self.data = mujoco.MjData(self.model)
        self._goal_site = self.model.site("goal").id
        self._free = [
            _cell_centre(r, c, rows, cols)
            for r, line in enumerate(self.layout)
            for c, ch in enumerate(line)
            if ch == "."
        ]
        self._renderer: mujoco.Renderer | None = None
        self.goal = np.zeros(2)
        half = max(rows, cols) * CELL / 2
        pos = spaces.Box(-half, half, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(
                    np.array([-half, -half, -MAX_SPEED, -MAX_SPEED], dtype=np.float32),
                    np.array([half, half, MAX_SPEED, MAX_SPEED], dtype=np.float32),
                ),
                "achieved_goal": pos,
                "desired_goal": pos,
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    @property
    def dt(self) -> float:
        return self.model.opt.timestep * self.frame_skip

    def sample_position(self, rng: np.random.Generator) -> np.ndarray:
        """A uniformly drawn point of a free cell, at least one agent radius from its edges."""
        x, y = self._free[rng.integers(len(self._free))]
        margin = CELL / 2 - RADIUS
        return np.array([x, y]) + rng.uniform(-margin, margin, size=2)

    def sample_start_goal(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        start = self.sample_position(rng)
        for _ in range(1000):
            goal = self.sample_position(rng)
            if np.linalg.norm(goal - start) >= self.min_goal_distance:
                return start, goal
        raise EnvError(f"min_goal_distance={self.min_goal_distance} is too large for this maze")

    def is_free(self, point: np.ndarray) -> bool:
        """Whether the agent fits at ``point``: at least its radius from every wall."""
        rows, cols = len(self.layout), len(self.layout[0])
        for r, line in enumerate(self.layout):
            for c, ch in enumerate(line):
                if ch != "#":
                    continue
                centre = np.array(_cell_centre(r, c, rows, cols))
                nearest = np.clip(point, centre - CELL / 2, centre + CELL / 2)
                if np.linalg.norm(point - nearest) < RADIUS - 1e-9:
                    return False
        half = max(rows, cols) * CELL / 2
        return bool(np.all(np.abs(point) <= half))

    def goal_observation(self, desired_goal: np.ndarray) -> np.ndarray:
        """The observation of resting at ``desired_goal``: (..., 2) -> (..., 4)."""
        desired_goal = np.asarray(desired_goal, dtype=np.float32)
        return np.concatenate([desired_goal, np.zeros_like(desired_goal)], axis=-1)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        start, goal = self.sample_start_goal(self.np_random)
        start = np.asarray(options.get("start", start), dtype=np.float64)
        goal = np.asarray(options.get("goal", goal), dtype=np.float64)
        for name, point in (("start", start), ("goal", goal)):
            if point.shape != (2,) or not self.is_free(point):
                raise EnvError(
                    f"{name} {point.tolist()} is not a free point of layout "
                    f"{self.layout_name!r} (it must be {RADIUS} m clear of every wall)"
                )
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = start
        self.goal = goal
        self.model.site_pos[self._goal_site, :2] = goal
        mujoco.mj_forward(self.model, self.data)
        obs = self._obs()
        return obs, self._info(obs)

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        self.data.ctrl[:] = np.clip(action, -1.0, 1.0)
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        obs = self._obs()
        info = self._info(obs)
        reward = self.compute_reward(obs["achieved_goal"], obs["desired_goal"])
        return obs, float(reward), bool(info["is_success"]), False, info

    def compute_reward(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any = None
    ) -> np.ndarray:
        """Vectorised reward, for hindsight relabelling (as gymnasium-robotics' GoalEnv)."""
        return -np.linalg.norm(np.asarray(achieved_goal) - desired_goal, axis=-1)

    def get_physics_state(self) -> np.ndarray:
        """The full MuJoCo physics state (``mjSTATE_FULLPHYSICS``), float64."""
        return physics.get_physics_state(self)

    def set_physics_state(self, state: np.ndarray) -> None:
        physics.set_physics_state(self, state)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.height, self.width)
        self._renderer.update_scene(self.data, camera="top")
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _obs(self) -> dict[str, np.ndarray]:
        pos, vel = self.data.qpos[:2], self.data.qvel[:2]
        return {
            "observation": np.concatenate([pos, vel]).astype(np.float32),
            "achieved_goal": pos.astype(np.float32),
            "desired_goal": self.goal.astype(np.float32),
        }

    def _info(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        # From the float32 observation, so reward == compute_reward(obs...) exactly (SB3's check).
        distance = float(-self.compute_reward(obs["achieved_goal"], obs["desired_goal"]))
        return {"distance": distance, "is_success": distance < GOAL_RADIUS}
