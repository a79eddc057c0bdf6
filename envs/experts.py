"""Scripted experts: controllers that solve a task from its observation, for expert datasets."""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

from wmrobot.envs.pointmaze import CELL, RADIUS, PointMazeEnv, cell_centre
from wmrobot.envs.push import PushEnv, PushExpert
from wmrobot.envs.reacher import ReacherEnv, ReacherExpert
from wmrobot.envs.tworoom import WALL, TwoRoomEnv
from wmrobot.errors import EnvError


class PointMazeExpert:
    """Waypoints through the maze (breadth-first over free cells) tracked by a PD controller.

    It steers at the farthest waypoint of the shortest cell path that the agent can see along a
    wall-free corridor, so it cuts corners where the maze allows and never pushes into a wall.
    ``noise`` adds Gaussian noise (in units of the action range) to every action.
    """

    def __init__(
        self, env: PointMazeEnv, noise: float = 0.0, kp: float = 4.0, kd: float = 1.0
    ) -> None:
        self.env, self.noise, self.kp, self.kd = env, noise, kp, kd
        self.rows, self.cols = len(env.layout), len(env.layout[0])
        self._layout: tuple[str, ...] = ()
        self._rng = np.random.default_rng()

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def _sync(self) -> None:
        if self.env.layout is not self._layout:  # the maze factor may change it per episode
            self._layout = self.env.layout
            self._wall = np.array([[ch == "#" for ch in line] for line in self._layout])
            self._paths: dict[tuple[tuple[int, int], tuple[int, int]], list] = {}

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        pos, vel = obs["observation"][:2].astype(np.float64), obs["observation"][2:4]
        target = self.waypoint(pos, obs["desired_goal"].astype(np.float64))
        action = self.kp * (target - pos) - self.kd * vel
        if self.noise > 0:
            action = action + self.noise * self._rng.standard_normal(2)
        return action.clip(-1.0, 1.0).astype(np.float32)

    def waypoint(self, pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The farthest point of the shortest cell path to ``goal`` visible from ``pos``."""
        self._sync()
        path = [
            *(
                np.array(cell_centre(r, c, self.rows, self.cols))
                for r, c in self._cells(self._cell(pos), self._cell(goal))[1:-1]
            ),
            goal,
        ]
        for point in reversed(path):
            if self._clear(pos, point):
                return point
        return path[0]

    def _cell(self, point: np.ndarray) -> tuple[int, int]:
        c = round(float(point[0]) / CELL + (self.cols - 1) / 2)
        r = round((self.rows - 1) / 2 - float(point[1]) / CELL)
        return min(max(r, 0), self.rows - 1), min(max(c, 0), self.cols - 1)

    def _cells(self, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
        """Shortest 4-connected path of free cells from ``start`` to ``goal`` (both included)."""
        if (start, goal) not in self._paths:
            self._paths[start, goal] = self._search(start, goal)
        return self._paths[start, goal]

    def _search(self, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
        previous: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
        queue = deque([start])
        while queue:
            cell = queue.popleft()
            if cell == goal:
                break
            r, c = cell
            for nxt in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                inside = 0 <= nxt[0] < self.rows and 0 <= nxt[1] < self.cols
                if inside and nxt not in previous and not self._wall[nxt]:
                    previous[nxt] = cell
                    queue.append(nxt)
        if goal not in previous:
            return [start, goal]  # unreachable: head straight for it
        path, cell = [], goal
        while cell is not None:
            path.append(cell)
            cell = previous[cell]
        return path[::-1]

    def _clear(self, a: np.ndarray, b: np.ndarray) -> bool:
        # A corridor slightly wider than the agent, so the PD overshoot does not clip a corner.
        margin = RADIUS + 0.1
        direction = b - a
        length = float(np.linalg.norm(direction))
        normal = np.array([-direction[1], direction[0]]) / max(length, 1e-9)
        t = np.linspace(0.0, 1.0, max(2, int(length / 0.1) + 1))[:, None, None]
        side = np.array([-1.0, 0.0, 1.0])[None, :, None] * margin * normal
        points = (a + t * direction + side).reshape(-1, 2)
        cols = np.rint(points[:, 0] / CELL + (self.cols - 1) / 2).astype(int)
        rows = np.rint((self.rows - 1) / 2 - points[:, 1] / CELL).astype(int)
        inside = (rows >= 0) & (rows < self.rows) & (cols >= 0) & (cols < self.cols)
        if not inside.all():
            return False
        return not self._wall[rows, cols].any()


class TwoRoomExpert:
    """Through the door, tracked by the same PD controller as PointMaze's expert.

    While the straight line to the goal crosses the wall outside the door, it steers at a
    point in front of the door on its own side, then through to a point beyond it.
    """

    def __init__(self, env: TwoRoomEnv, noise: float = 0.0, kp: float = 4.0, kd: float = 1.0):
        self.env, self.noise, self.kp, self.kd = env, noise, kp, kd
        self._rng = np.random.default_rng()

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        pos = self.env.data.qpos[:2].copy()  # privileged: pixel modes have no state vector
        vel = self.env.data.qvel[:2]
        target = self.waypoint(pos, self.env.goal.astype(np.float64))
        action = self.kp * (target - pos) - self.kd * vel
        if self.noise > 0:
            action = action + self.noise * self._rng.standard_normal(2)
        return action.clip(-1.0, 1.0).astype(np.float32)

    def waypoint(self, pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
        if self._clear(pos, goal):
            return goal
        low, high = self.env.door
        centre = (low + high) / 2
        side = np.sign(pos[0]) or 1.0
        beyond = np.array([-side * (WALL + RADIUS + 0.2), centre])
        if self._clear(pos, beyond):
            return beyond
        return np.array([side * (WALL + RADIUS + 0.2), centre])

    def _clear(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether the agent can move straight from ``a`` to ``b`` past the middle wall."""
        if np.sign(a[0]) == np.sign(b[0]):
            return True  # each room is convex
        low, high = self.env.door
        band, margin = WALL + RADIUS + 0.05, RADIUS + 0.05
        dx = b[0] - a[0]
        for x in (-band, band):  # where the path enters and leaves the wall's reach
            t = float(np.clip((x - a[0]) / dx, 0.0, 1.0))
            if not low + margin <= a[1] + t * (b[1] - a[1]) <= high - margin:
                return False
        return True


EXPERTS: dict[type, type] = {
    PointMazeEnv: PointMazeExpert,
    TwoRoomEnv: TwoRoomExpert,
    ReacherEnv: ReacherExpert,
    PushEnv: PushExpert,
}


def make_expert(env: gym.Env, noise: float = 0.0) -> Any:
    """The scripted expert of ``env``'s task (an object with ``reset(rng)`` and ``act(obs)``)."""
    base = env.unwrapped
    if noise < 0:
        raise EnvError(f"expert noise={noise} must be >= 0 (a std in units of the action range)")
    for cls, expert in EXPERTS.items():
        if isinstance(base, cls):
            return expert(base, noise=noise)
    raise EnvError(
        f"{env.spec.id if env.spec else type(base).__name__} has no scripted expert; "
        f"tasks with one: {sorted(c.__name__ for c in EXPERTS)}. Use policy=random, colored or sb3"
    )
