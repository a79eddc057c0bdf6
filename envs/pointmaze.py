"""PointMaze: a MuJoCo point mass pushed by 2-D forces through a walled maze to a goal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from wmrobot.envs.base import COMMON_FACTORS, Factor, GoalTask, floor_assets, top_view
from wmrobot.errors import EnvError

# '#' is a wall cell, '.' free space; row 0 is drawn at the top. ``umaze`` and ``medium`` are
# the layouts of D4RL's PointMaze (the medium one an 8 x 8 maze); ``ring`` and ``open`` are
# small ones the walking skeleton plans greedily in.
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
    "medium": (
        "########",
        "#..##..#",
        "#..#...#",
        "##...###",
        "#..#...#",
        "#.#..#.#",
        "#...#..#",
        "########",
    ),
}

CELL = 1.0  # metres per maze cell
RADIUS = 0.15  # agent radius
GOAL_RADIUS = 0.25  # success when the agent's centre is this close to the goal
MAX_SPEED = 10.0  # observation bound; the actuators' terminal speed is gear / damping = 2 m/s


def point_mass_mjcf(half: float, walls: str, gear: float, damping: float, extra: str = "") -> str:
    """A point mass on a floor of half-width ``half`` with the given wall geoms (and bodies),
    framed by a top camera."""
    return f"""
<mujoco model="pointmass">
  <option timestep="0.01"/>
  <visual><headlight ambient=".35 .35 .35" diffuse=".2 .2 .2"/></visual>
  <asset>
    {floor_assets(2 * half)}
    <material name="wall" rgba=".35 .35 .45 1"/>
  </asset>
  <default><geom contype="1" conaffinity="1" condim="1"/></default>
  <worldbody>
    {top_view(half)}
    {walls}
    <site name="goal" pos="0 0 0.01" size="{GOAL_RADIUS} 0.005" type="cylinder" rgba=".2 .8 .2 .6"/>
    <body name="agent" pos="0 0 {RADIUS}">
      <joint name="x" type="slide" axis="1 0 0" damping="{damping}"/>
      <joint name="y" type="slide" axis="0 1 0" damping="{damping}"/>
      <geom name="agent" type="sphere" size="{RADIUS}" mass="1" rgba=".85 .3 .2 1"/>
    </body>
    {extra}
  </worldbody>
  <actuator>
    <motor name="fx" joint="x" gear="{gear}" ctrlrange="-1 1" ctrllimited="true"/>
    <motor name="fy" joint="y" gear="{gear}" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""


class PointMassTask(GoalTask):
    """A point mass driven by 2-D forces to a goal position: what PointMaze and TwoRoom share.

    Observation ``observation`` = (x, y, vx, vy), ``achieved_goal`` = (x, y), ``desired_goal``
    = (gx, gy). Action: 2-D force in [-1, 1]. Success: the centre within ``GOAL_RADIUS`` of the
    goal. Start and goal are points (x, y).
    """

    moving_geoms = ("agent",)
    goal_sites = ("goal",)

    def __init__(
        self,
        half: float,
        gear: float = 5.0,
        damping: float = 2.5,
        min_goal_distance: float = 1.0,
        frame_skip: int = 5,
        **kwargs: Any,
    ) -> None:
        for name, value in (("gear", gear), ("damping", damping)):
            if value <= 0:
                raise EnvError(f"{name}={value} must be > 0")
        self.half, self.view = half, half
        self.gear, self.joint_damping = gear, damping
        self.min_goal_distance = min_goal_distance
        super().__init__(frame_skip=frame_skip, **kwargs)
        self._goal_site = self.model.site("goal").id
        self._qpos, self._qvel = self.data.qpos, self.data.qvel  # views, looked up once

    def _state_space(self) -> spaces.Box:
        h = self.half
        return spaces.Box(
            np.array([-h, -h, -MAX_SPEED, -MAX_SPEED], dtype=np.float32),
            np.array([h, h, MAX_SPEED, MAX_SPEED], dtype=np.float32),
        )

    def _goal_space(self) -> spaces.Box:
        return spaces.Box(-self.half, self.half, shape=(2,), dtype=np.float32)

    def is_free(self, point: np.ndarray) -> bool:
        """Whether the agent fits at ``point``: at least its radius from every wall."""
        raise NotImplementedError

    def sample_position(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def sample_start_goal(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        start = self.sample_position(rng)
        for _ in range(1000):
            goal = self.sample_position(rng)
            if np.linalg.norm(goal - start) >= self.min_goal_distance:
                return start, goal
        raise EnvError(f"min_goal_distance={self.min_goal_distance} is too large for this task")

    def _place(self, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
        for name, point in (("start", start), ("goal", goal)):
            if point.shape != (2,) or not self.is_free(point):
                raise EnvError(
                    f"{name} {point.tolist()} is not a free point of this "
                    f"{type(self).__name__} (it must be {RADIUS} m clear of every wall)"
                )
        self.data.qpos[:] = start
        self.model.site_pos[self._goal_site, :2] = goal
        return goal.astype(np.float32)

    def _pose_at_goal(self) -> None:
        self.data.qpos[:] = self.goal
        self.data.qvel[:] = 0.0

    def _observation(self) -> np.ndarray:
        return np.array((*self._qpos.tolist(), *self._qvel.tolist()), dtype=np.float32)

    def _achieved(self) -> np.ndarray:
        return self._qpos.astype(np.float32)

    def distance(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        diff = np.asarray(achieved_goal, np.float64) - np.asarray(desired_goal, np.float64)
        # Spelled out (not a norm), so one row and a batch of rows round alike, bit for bit.
        return np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1])

    def is_success(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        return self.distance(achieved_goal, desired_goal) < GOAL_RADIUS

    def _evaluate(self, achieved: np.ndarray, desired: np.ndarray) -> tuple[float, bool]:
        # ``distance`` on Python floats: the same operations in the same order, a fifth the time.
        (a0, a1), (d0, d1) = achieved.tolist(), desired.tolist()
        dx, dy = a0 - d0, a1 - d1
        distance = math.sqrt(dx * dx + dy * dy)
        return distance, distance < GOAL_RADIUS

    def goal_observation(self, desired_goal: np.ndarray) -> np.ndarray:
        desired_goal = np.asarray(desired_goal, dtype=np.float32)
        return np.concatenate([desired_goal, np.zeros_like(desired_goal)], axis=-1)


def cell_centre(r: int, c: int, rows: int, cols: int) -> tuple[float, float]:
    # Row 0 is drawn at the top (largest y), so the layout strings read like the rendered image.
    return (c - (cols - 1) / 2) * CELL, ((rows - 1) / 2 - r) * CELL


class PointMazeEnv(PointMassTask):
    """Goal-conditioned point mass in a maze of square cells (``layout``: umaze, medium, ring,
    open). Start and goal are drawn uniformly over the free cells, at least
    ``min_goal_distance`` apart.

    ``layout`` may also be a list of layouts of one size: each episode then takes
    ``layout[int(maze)]``, ``maze`` being a layout factor drawn from ``[0, len(layout))``
    (hold it, ``factors={"maze": 1}``, or let it vary). Every wall of every listed layout is
    in the model; those of other layouts are switched off (no contacts, not drawn).
    """

    def __init__(self, layout: str | Sequence[str] = "ring", **kwargs: Any) -> None:
        names = [layout] if isinstance(layout, str) else list(layout)
        for name in names:
            if name not in LAYOUTS:
                raise EnvError(
                    f"unknown PointMaze layout {name!r}; choose one of {sorted(LAYOUTS)}"
                )
        sizes = {(len(LAYOUTS[n]), len(LAYOUTS[n][0])) for n in names}
        if len(sizes) != 1:
            raise EnvError(f"layouts {names} differ in size; list layouts of one size")
        self.layout_names = names
        ((self.rows, self.cols),) = sizes
        # Every cell that is a wall in some layout, in a fixed order: one geom each.
        self._cells = sorted(
            {
                (r, c)
                for n in names
                for r, line in enumerate(LAYOUTS[n])
                for c, ch in enumerate(line)
                if ch == "#"
            }
        )
        if len(names) > 1:
            self.FACTORS = (
                *COMMON_FACTORS,
                Factor(
                    "maze",
                    "layout",
                    0.0,
                    0.0,
                    float(len(names)),
                    "layout[int(maze)] is this episode's maze",
                ),
            )
        self._use(names[0])
        super().__init__(half=max(self.rows, self.cols) * CELL / 2, **kwargs)
        self._wall_geoms = [self.model.geom(f"wall_{i}").id for i in range(len(self._cells))]

    def _use(self, name: str) -> None:
        self.layout_name, self.layout = name, LAYOUTS[name]
        cells = [(r, c) for r, line in enumerate(self.layout) for c, ch in enumerate(line)]
        self._wall_boxes = np.array(
            [cell_centre(r, c, self.rows, self.cols) for r, c in cells if self.layout[r][c] == "#"]
        )
        self._free = [
            cell_centre(r, c, self.rows, self.cols) for r, c in cells if self.layout[r][c] == "."
        ]

    def _apply_layout(self, values: dict[str, float]) -> None:
        if len(self.layout_names) == 1:
            return
        self._use(self.layout_names[min(int(values["maze"]), len(self.layout_names) - 1)])
        for geom, (r, c) in zip(self._wall_geoms, self._cells, strict=True):
            on = self.layout[r][c] == "#"
            self.model.geom_contype[geom] = self.model.geom_conaffinity[geom] = int(on)
            self.model.geom_rgba[geom, 3] = float(on)

    def _mjcf(self) -> str:
        walls = "".join(
            f'<geom name="wall_{i}" type="box" pos="{x} {y} 0.15" '
            f'size="{CELL / 2} {CELL / 2} 0.15" material="wall"/>'
            for i, (x, y) in enumerate(
                cell_centre(r, c, self.rows, self.cols) for r, c in self._cells
            )
        )
        return point_mass_mjcf(self.half, walls, self.gear, self.joint_damping)

    def sample_position(self, rng: np.random.Generator) -> np.ndarray:
        """A uniformly drawn point of a free cell, at least one agent radius from its edges."""
        x, y = self._free[rng.integers(len(self._free))]
        margin = CELL / 2 - RADIUS
        return np.array([x, y]) + rng.uniform(-margin, margin, size=2)

    def is_free(self, point: np.ndarray) -> bool:
        nearest = np.clip(point, self._wall_boxes - CELL / 2, self._wall_boxes + CELL / 2)
        if (np.linalg.norm(point - nearest, axis=1) < RADIUS - 1e-9).any():
            return False
        return bool(np.all(np.abs(point) <= self.half))
