"""TwoRoom: a point mass in two rooms joined by a door in the wall between them, so the straight
line from start to goal is blocked (the Two-Rooms/Wall task of DINO-WM and PLDM, in MuJoCo)."""

from __future__ import annotations

from typing import Any

import numpy as np

from wmrobot.envs.base import COMMON_FACTORS, Factor, square_walls
from wmrobot.envs.pointmaze import RADIUS, PointMassTask, point_mass_mjcf
from wmrobot.errors import EnvError

ROOM = 1.0  # half-width of the floor inside the outer walls, metres
WALL = 0.05  # half-thickness of every wall

FACTORS = (
    *COMMON_FACTORS,
    Factor("door_position", "layout", 0.0, -0.6, 0.6, "height of the door's centre (m)"),
    Factor("door_width", "layout", 0.5, 0.35, 0.9, "width of the door (m)"),
)


class TwoRoomEnv(PointMassTask):
    """Goal-conditioned point mass; the start lies in one room and the goal in the other.

    The wall between the rooms runs along x = 0; the door's position and width are layout
    factors (``factors={"door_position": [-0.5, 0.5]}`` moves it per episode). The two wall
    pieces are mocap bodies, so the door moves without recompiling the model.
    """

    FACTORS = FACTORS

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(half=ROOM + 2 * WALL, **kwargs)
        self._pieces = [self.model.body(n).mocapid[0] for n in ("wall_low", "wall_high")]
        self._door = (-0.25, 0.25)  # the open span of the wall, set per episode

    def _mjcf(self) -> str:
        walls = square_walls(ROOM, WALL, 0.15, 'contype="0"')
        # Each piece is a full room long; the part past the outer wall lies outside the view.
        pieces = "".join(
            f'<body name="wall_{name}" mocap="true" pos="0 {y} 0.15">'
            f'<geom name="wall_{name}" type="box" size="{WALL} {ROOM} 0.15" material="wall" '
            f'contype="0"/></body>'
            for name, y in (("low", -2 * ROOM), ("high", 2 * ROOM))
        )
        return point_mass_mjcf(self.half, walls, self.gear, self.joint_damping, extra=pieces)

    def _apply_layout(self, values: dict[str, float]) -> None:
        centre, width = values["door_position"], values["door_width"]
        low, high = centre - width / 2, centre + width / 2
        self._door = (low, high)
        self.data.mocap_pos[self._pieces[0]] = (0.0, low - ROOM, 0.15)
        self.data.mocap_pos[self._pieces[1]] = (0.0, high + ROOM, 0.15)

    @property
    def door(self) -> tuple[float, float]:
        """The open span (low y, high y) of the wall between the rooms in this episode."""
        return self._door

    def sample_position(self, rng: np.random.Generator, side: float | None = None) -> np.ndarray:
        """A uniformly drawn point of one room (``side`` -1: left, +1: right; None: either)."""
        side = side if side is not None else rng.choice([-1.0, 1.0])
        margin = RADIUS + 0.02
        x = side * rng.uniform(WALL + margin, ROOM - margin)
        return np.array([x, rng.uniform(-ROOM + margin, ROOM - margin)])

    def sample_start_goal(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        side = float(rng.choice([-1.0, 1.0]))
        for _ in range(1000):
            start, goal = self.sample_position(rng, side), self.sample_position(rng, -side)
            if np.linalg.norm(goal - start) >= self.min_goal_distance:
                return start, goal
        raise EnvError(f"min_goal_distance={self.min_goal_distance} is too large for TwoRoom")

    def is_free(self, point: np.ndarray) -> bool:
        x, y = (float(v) for v in point)
        if max(abs(x), abs(y)) > ROOM - RADIUS + 1e-9:
            return False
        if abs(x) >= WALL + RADIUS - 1e-9:
            return True
        # Within reach of the middle wall: only inside the door, clear of its edges.
        low, high = self._door
        return low + RADIUS <= y <= high - RADIUS
