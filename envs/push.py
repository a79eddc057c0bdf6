"""Push: a round pusher slides a T-shaped block to a target position and angle through contact
(the Push-T task of Diffusion Policy and DINO-WM, in MuJoCo)."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import mujoco
import numpy as np
from gymnasium import spaces

from wmrobot.envs.base import GoalTask, floor_assets, square_walls, top_view
from wmrobot.errors import EnvError

HALF = 0.45  # half-width of the floor inside the walls, metres
# Half-thickness of the walls: thick, so that even the fastest pusher the factors allow cannot
# pass through one in a physics step; only their inner 4 cm lie in the camera's frame.
WALL = 0.1
PUSHER_RADIUS = 0.025
# The T as two boxes (half-sizes), in Push-T's proportions: a 0.2 x 0.05 bar on a 0.05 x 0.15
# stem. The block's frame sits at the T's centre of mass, so it turns about it.
BAR_HALF = (0.1, 0.025)
STEM_HALF = (0.025, 0.075)
_BAR_AREA, _STEM_AREA = 4 * BAR_HALF[0] * BAR_HALF[1], 4 * STEM_HALF[0] * STEM_HALF[1]
_COM = (_BAR_AREA * BAR_HALF[1] - _STEM_AREA * STEM_HALF[1]) / (_BAR_AREA + _STEM_AREA)
BAR_Y = BAR_HALF[1] - _COM  # bar centre, block frame (the bar on top, the stem pointing -y)
STEM_Y = -STEM_HALF[1] - _COM
# (centre y, half x, half y) of the two boxes, block frame.
BOXES = ((BAR_Y, *BAR_HALF), (STEM_Y, *STEM_HALF))
BLOCK_REACH = math.hypot(STEM_HALF[0], STEM_Y - STEM_HALF[1])  # farthest outline point
HEIGHT = 0.02  # half-height of the block; the pusher's centre is at this height too
HOME = (-(HALF - 2 * PUSHER_RADIUS), -(HALF - 2 * PUSHER_RADIUS))  # pusher in the goal image

# Success: the block's centre within POSITION_TOLERANCE of the target's and its heading within
# ANGLE_TOLERANCE (DINO-WM's Push-T counts 20 px of 512 and 20 degrees; these are tighter).
POSITION_TOLERANCE = 0.02  # metres: a tenth of the T's width
ANGLE_TOLERANCE = math.pi / 12  # 15 degrees
# Angle error is the chord |u - u*| between the unit headings (cos, sin), 2 sin(|dθ| / 2): the
# angle within 1 % below 0.5 rad, and plain float arithmetic, so the scalar and the vectorised
# distance agree bit for bit.
CHORD_TOLERANCE = 2 * math.sin(ANGLE_TOLERANCE / 2)
# Metres of distance per unit of chord: turning the T by dθ moves its outline by about
# 0.1 m x dθ, so a turn and a shift that displace the outline alike weigh alike.
ANGLE_WEIGHT = 0.1
MIN_SHIFT = 0.1  # a goal is at least this far from the start, or turned at least MIN_TURN
MIN_TURN = math.pi / 4
# Observation bounds, loose so that they hold under every factor setting (a pusher 5x stronger
# and 5x lighter reaches ~30 m/s and dents a wall for a moment); the nominal pusher's top speed
# is 0.5 m/s.
BOUND = HALF + WALL  # the walls' outer faces
MAX_SPEED = 50.0
MAX_SPIN = 1000.0
_SIGNS = ((-1, -1), (1, -1), (1, 1), (-1, 1))  # a box's corners, counter-clockwise


def block_corners(x: float, y: float, theta: float) -> np.ndarray:
    """The 8 corners of the T's two boxes at pose (x, y, θ), world frame: (8, 2)."""
    local = np.array(
        [(sx * hx, cy + sy * hy) for cy, hx, hy in BOXES for sx, sy in _SIGNS], dtype=np.float64
    )
    c, s = math.cos(theta), math.sin(theta)
    return local @ np.array([[c, s], [-s, c]]) + (x, y)


def clearance(point: np.ndarray, x: float, y: float, theta: float) -> float:
    """Distance from ``point`` to the T at pose (x, y, θ); 0 inside it."""
    c, s = math.cos(theta), math.sin(theta)
    dx, dy = float(point[0]) - x, float(point[1]) - y
    u, v = c * dx + s * dy, -s * dx + c * dy  # block frame
    gaps = []
    for cy, hx, hy in BOXES:
        gx, gy = max(abs(u) - hx, 0.0), max(abs(v - cy) - hy, 0.0)
        gaps.append(math.hypot(gx, gy))
    return min(gaps)


class PushEnv(GoalTask):
    """Goal-conditioned Push-T: push the T-shaped block to the target pose drawn on the floor.

    The pusher is a sphere on x/y slide joints driven by 2-D forces (action in [-1, 1]) against
    viscous damping; the block slides on x/y and turns about its centre of mass against joint
    damping and Coulomb friction (``frictionloss``, scaled by the friction factor with the
    contacts' friction), so it moves only while pushed and stops soon after. Low walls keep
    both inside a 0.9 m square.

    ``observation`` = pusher (x, y, vx, vy) and block (x, y, cos θ, sin θ, vx, vy, ω);
    ``achieved_goal`` = block (x, y, cos θ, sin θ), ``desired_goal`` = target (x, y, cos θ,
    sin θ). Start = (pusher x, y, block x, y, θ); goal = (x, y, θ). Distance = position error
    + ``ANGLE_WEIGHT`` x angle error (chord); success = position error < ``POSITION_TOLERANCE``
    and angle error < ``ANGLE_TOLERANCE``. The goal image and ``goal_observation`` show the
    block resting on the target and the pusher at rest at ``HOME``, a corner that no drawn goal
    reaches.
    """

    moving_geoms = ("pusher", "bar", "stem")
    goal_bodies = ("target",)
    view = HALF + 0.04

    def __init__(self, frame_skip: int = 10, **kwargs: Any) -> None:
        super().__init__(frame_skip=frame_skip, **kwargs)
        self._target = self.model.body("target").mocapid[0]
        self._frictionloss = self.model.dof_frictionloss.copy()
        self._qpos, self._qvel = self.data.qpos, self.data.qvel  # views, looked up once

    def _mjcf(self) -> str:
        walls = square_walls(HALF, WALL, HEIGHT)
        # 0.25 kg of block; the density is per volume of the two boxes.
        density = 0.25 / ((_BAR_AREA + _STEM_AREA) * 2 * HEIGHT)
        boxes = "".join(
            f'<geom name="{{prefix}}{name}" type="box" pos="0 {cy:.6f} {{z}}" '
            f'size="{hx} {hy} {{h}}" {{style}}/>'
            for name, (cy, hx, hy) in zip(("bar", "stem"), BOXES, strict=True)
        )
        block = boxes.format(
            prefix="", z=0, h=HEIGHT, style=f'density="{density:.3f}" rgba=".9 .45 .2 1"'
        )
        target = boxes.format(
            prefix="target_",
            z=0,
            h=0.001,
            style='contype="0" conaffinity="0" rgba=".2 .75 .3 .45" mass="0.001"',
        )
        view = self.view
        return f"""
<mujoco model="push">
  <option timestep="0.005"/>
  <asset>
    {floor_assets(4)}
    <material name="wall" rgba=".35 .35 .45 1"/>
  </asset>
  <default><geom contype="1" conaffinity="1" condim="3" friction="0.5" solref="0.01 1"/></default>
  <worldbody>
    {top_view(view)}
    {walls}
    <body name="target" mocap="true" pos="0 0 0.001">{target}</body>
    <body name="pusher" pos="0 0 {HEIGHT}">
      <joint name="pusher_x" type="slide" axis="1 0 0" damping="2"/>
      <joint name="pusher_y" type="slide" axis="0 1 0" damping="2"/>
      <geom name="pusher" type="sphere" size="{PUSHER_RADIUS}" mass="0.1" rgba=".2 .35 .9 1"/>
    </body>
    <body name="block" pos="0 0 {HEIGHT}">
      <joint name="block_x" type="slide" axis="1 0 0" damping="2" frictionloss="0.2"/>
      <joint name="block_y" type="slide" axis="0 1 0" damping="2" frictionloss="0.2"/>
      <joint name="block_theta" type="hinge" axis="0 0 1" damping="0.01" frictionloss="0.015"/>
      {block}
    </body>
  </worldbody>
  <actuator>
    <motor name="fx" joint="pusher_x" gear="1" ctrlrange="-1 1" ctrllimited="true"/>
    <motor name="fy" joint="pusher_y" gear="1" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""

    def _apply_factors(self, values: dict[str, float]) -> None:
        super()._apply_factors(values)
        # The floor's friction on the block is joint friction here (the block does not touch
        # the floor), so the friction factor scales it with the contacts' friction.
        self.model.dof_frictionloss[:] = self._frictionloss * values["friction"]

    def _state_space(self) -> spaces.Box:
        h, v, w = BOUND, MAX_SPEED, MAX_SPIN
        return spaces.Box(
            np.array([-h, -h, -v, -v, -h, -h, -1, -1, -v, -v, -w], dtype=np.float32),
            np.array([h, h, v, v, h, h, 1, 1, v, v, w], dtype=np.float32),
        )

    def _goal_space(self) -> spaces.Box:
        return spaces.Box(
            np.array([-BOUND, -BOUND, -1, -1], dtype=np.float32),
            np.array([BOUND, BOUND, 1, 1], dtype=np.float32),
        )

    def sample_start_goal(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # Blocks at least a pusher's width clear of the walls, so it can get all round them.
        reach = HALF - BLOCK_REACH - 2 * PUSHER_RADIUS - 0.02
        block = np.array([*rng.uniform(-reach, reach, 2), rng.uniform(-math.pi, math.pi)])
        # Rejection sampling: a free pusher spot and a far enough goal come within a few draws.
        while True:
            pusher = rng.uniform(-HALF + PUSHER_RADIUS, HALF - PUSHER_RADIUS, 2)
            if clearance(pusher, *block) > PUSHER_RADIUS + 0.01:
                break
        while True:
            goal = np.array([*rng.uniform(-reach, reach, 2), rng.uniform(-math.pi, math.pi)])
            turn = abs(math.remainder(goal[2] - block[2], 2 * math.pi))
            if math.dist(goal[:2], block[:2]) >= MIN_SHIFT or turn >= MIN_TURN:
                return np.concatenate([pusher, block]), goal

    def _place(self, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
        for name, value, size in (("start", start, 5), ("goal", goal, 3)):
            if value.shape != (size,) or not np.isfinite(value).all():
                raise EnvError(
                    f"{name} {value.tolist()} must be {size} finite numbers: "
                    + ("(pusher x, y, block x, y, θ)" if size == 5 else "(x, y, θ)")
                )
        for name, pose in (("start", start[2:]), ("goal", goal)):
            if np.abs(block_corners(*pose)).max() > HALF:
                raise EnvError(
                    f"{name} block pose {pose.tolist()} puts the T outside the walls "
                    f"(every corner within {HALF} m of the centre)"
                )
        pusher = start[:2]
        if np.abs(pusher).max() > HALF - PUSHER_RADIUS:
            raise EnvError(
                f"start pusher {pusher.tolist()} is outside the walls (|x|, |y| must be "
                f"<= {HALF - PUSHER_RADIUS})"
            )
        if clearance(pusher, *start[2:]) < PUSHER_RADIUS:
            raise EnvError(
                f"start {start.tolist()} puts the pusher inside the block (its centre must be "
                f"{PUSHER_RADIUS} m clear of the T)"
            )
        self.data.qpos[:] = start
        self.data.mocap_pos[self._target, :2] = goal[:2]
        self.data.mocap_quat[self._target] = (math.cos(goal[2] / 2), 0, 0, math.sin(goal[2] / 2))
        return np.array([goal[0], goal[1], math.cos(goal[2]), math.sin(goal[2])], dtype=np.float32)

    def _pose_at_goal(self) -> None:
        g = self.goal.astype(np.float64)
        self.data.qpos[:] = (*HOME, g[0], g[1], math.atan2(g[3], g[2]))
        self.data.qvel[:] = 0.0

    def _observation(self) -> np.ndarray:
        q, v = self._qpos, self._qvel
        theta = float(q[4])
        obs = np.empty(11, dtype=np.float32)
        obs[0:2] = q[0:2]
        obs[2:4] = v[0:2]
        obs[4:6] = q[2:4]
        obs[6] = math.cos(theta)
        obs[7] = math.sin(theta)
        obs[8:11] = v[2:5]
        return obs

    def _achieved(self) -> np.ndarray:
        q = self._qpos
        theta = float(q[4])
        achieved = np.empty(4, dtype=np.float32)
        achieved[0:2] = q[2:4]
        achieved[2] = math.cos(theta)
        achieved[3] = math.sin(theta)
        return achieved

    def distance(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        d = np.asarray(achieved_goal, np.float64) - np.asarray(desired_goal, np.float64)
        # Spelled out (no norm, no atan2), so one row, a batch and _evaluate agree bit for bit.
        position = np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])
        chord = np.sqrt(d[..., 2] * d[..., 2] + d[..., 3] * d[..., 3])
        return position + ANGLE_WEIGHT * chord

    def is_success(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        d = np.asarray(achieved_goal, np.float64) - np.asarray(desired_goal, np.float64)
        position = np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])
        chord = np.sqrt(d[..., 2] * d[..., 2] + d[..., 3] * d[..., 3])
        return (position < POSITION_TOLERANCE) & (chord < CHORD_TOLERANCE)

    def _evaluate(self, achieved: np.ndarray, desired: np.ndarray) -> tuple[float, bool]:
        # ``distance`` and ``is_success`` on Python floats: the same operations in the same order.
        a0, a1, a2, a3 = achieved.tolist()
        d0, d1, d2, d3 = desired.tolist()
        dx, dy, dc, ds = a0 - d0, a1 - d1, a2 - d2, a3 - d3
        position = math.sqrt(dx * dx + dy * dy)
        chord = math.sqrt(dc * dc + ds * ds)
        success = position < POSITION_TOLERANCE and chord < CHORD_TOLERANCE
        return position + ANGLE_WEIGHT * chord, success

    def goal_observation(self, desired_goal: np.ndarray) -> np.ndarray:
        desired_goal = np.asarray(desired_goal, dtype=np.float32)
        obs = np.zeros((*desired_goal.shape[:-1], 11), dtype=np.float32)
        obs[..., 0:2] = HOME
        obs[..., 4:8] = desired_goal
        return obs


Point = tuple[float, float]
Pose = tuple[float, float, float]


def _rotate(theta: float, u: float, v: float) -> Point:
    c, s = math.cos(theta), math.sin(theta)
    return c * u - s * v, s * u + c * v


def _world(block: Pose, local: Point) -> Point:
    u, v = _rotate(block[2], *local)
    return block[0] + u, block[1] + v


def _hits(a: Point, b: Point, box: tuple[float, float, float, float]) -> bool:
    """Whether the segment a-b passes through the inside of the box (x0, y0, x1, y1)."""
    t0, t1 = 0.0, 1.0
    for k in range(2):
        d = b[k] - a[k]
        lo, hi = box[k], box[k + 2]
        if abs(d) < 1e-12:
            if not lo < a[k] < hi:
                return False
            continue
        e0, e1 = sorted(((lo - a[k]) / d, (hi - a[k]) / d))
        t0, t1 = max(t0, e0), min(t1, e1)
        if t0 >= t1:
            return False
    return True


_BAR_LOW, _BAR_TOP = BAR_Y - BAR_HALF[1], BAR_Y + BAR_HALF[1]
_STEM_LOW = STEM_Y - STEM_HALF[1]
# Candidate contacts: (point, inward normal) on the T's outline, block frame. The points under
# the bar leave the pusher room beside the stem, the ones on the stem room below the bar.
CONTACTS: tuple[tuple[Point, Point], ...] = (
    *(((x, _BAR_TOP), (0.0, -1.0)) for x in (-0.08, -0.04, 0.0, 0.04, 0.08)),
    ((-BAR_HALF[0], BAR_Y), (1.0, 0.0)),
    ((BAR_HALF[0], BAR_Y), (-1.0, 0.0)),
    ((-0.075, _BAR_LOW), (0.0, 1.0)),
    ((0.075, _BAR_LOW), (0.0, 1.0)),
    *(
        ((side * STEM_HALF[0], y), (-side, 0.0))
        for side in (-1.0, 1.0)
        for y in (_STEM_LOW + 0.025, _BAR_LOW - PUSHER_RADIUS - 0.015)
    ),
    ((0.0, _STEM_LOW), (0.0, 1.0)),
)


class PushExpert:
    """Pushes the T to its target in strokes, each chosen by simulating the candidates.

    For every candidate contact on the T's outline (``CONTACTS``) and stroke length, it
    simulates, on a copy of the physics, a push along the inward normal from just off the
    contact, and picks the stroke that cuts the pose error (position error + 0.1 m/rad x angle
    error) the most per step spent walking there and pushing. It walks the pusher round the
    block to the pre-contact point (a shortest path past the corners of the T grown by the
    pusher's radius, never through it), pushes, backs off and chooses again. Near the target
    it also tries half-force strokes, for finer moves. It reads the physics directly
    (privileged), so it works in every observation mode; ``noise`` adds Gaussian noise (in
    units of the action range) to every action.
    """

    GAP = 0.02  # pusher surface to block surface at the pre-contact point, metres
    STROKES = (1, 2, 4, 7, 11, 16)  # stroke lengths tried, in env steps
    OMEGA = 10.0  # approach bandwidth, rad/s: critically damped, settles in ~0.4 s
    SPEED = 0.5  # walking speed past the corners, m/s
    FINE = 0.08  # pose error below which half-force strokes are tried too

    def __init__(self, env: PushEnv, noise: float = 0.0) -> None:
        self.env, self.noise = env, noise
        self._sim = mujoco.MjData(env.model)
        self._branch = mujoco.MjData(env.model)
        self._body = env.model.body("pusher").id
        self.reset(np.random.default_rng())

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._phase, self._left, self._waited, self._stroke = "choose", 0, 0, 0
        self._contact: tuple[Point, Point, float] = ((0.0, 0.0), (0.0, 0.0), 0.0)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        action = self._action()
        if self.noise > 0:
            action = action + self.noise * self._rng.standard_normal(2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _action(self) -> np.ndarray:
        q = self.env.data.qpos
        pusher, block = (float(q[0]), float(q[1])), (float(q[2]), float(q[3]), float(q[4]))
        if self._phase == "push":
            self._left -= 1
            if self._left <= 0:
                self._phase, self._left = "retreat", 2
            _, normal, force = self._contact
            return force * np.array(_rotate(block[2], *normal))
        if self._phase == "retreat":  # off the block before walking round it
            self._left -= 1
            if self._left <= 0:
                self._phase = "choose"
            return -0.5 * np.array(_rotate(block[2], *self._contact[1]))
        if self._phase == "choose":
            chosen = self._choose(pusher, block)
            if chosen is None:  # walls close every way round: to the middle, try again
                return self._track(-np.array(pusher), self.env.data.qvel[:2], final=False)
            self._contact, self._stroke = chosen
            self._phase, self._waited = "approach", 0
        path = self._route(pusher, block, self._standoff(*self._contact[:2]))
        self._waited += 1
        if not path or self._waited > 80:  # the way closed, or stuck on the way: choose again
            self._phase = "choose"
            return np.zeros(2)
        offset = np.array(_world(block, path[0])) - pusher
        vel = self.env.data.qvel[:2]
        if len(path) == 1 and np.linalg.norm(offset) < 0.01 and np.linalg.norm(vel) < 0.1:
            self._phase, self._left = "push", self._stroke
            return self._action()
        return self._track(offset, vel, final=len(path) == 1)

    def _track(self, offset: np.ndarray, vel: np.ndarray, final: bool) -> np.ndarray:
        """The action that walks past a corner at ``SPEED`` or, ``final``, stops on the point,
        with the pusher's mass, damping and gear as this episode's factors made them."""
        model = self.env.model
        mass, damping = model.body_mass[self._body], model.dof_damping[0]
        if final:  # a PD law that cancels the joint damping: critically damped at OMEGA
            force = mass * self.OMEGA**2 * offset - (2 * mass * self.OMEGA - damping) * vel
        else:
            want = self.SPEED * offset / max(float(np.linalg.norm(offset)), 1e-9)
            force = damping * want + 2 * mass * self.OMEGA * (want - vel)
        return force / model.actuator_gear[0, 0]

    def _standoff(self, point: Point, normal: Point) -> Point:
        """The pre-contact point (block frame) of a contact."""
        off = PUSHER_RADIUS + self.GAP
        return point[0] - normal[0] * off, point[1] - normal[1] * off

    def _choose(self, pusher: Point, block: Pose) -> tuple[tuple[Point, Point, float], int] | None:
        """The (contact, force) and stroke length that cut the pose error fastest."""
        env, model, skip = self.env, self.env.model, self.env.frame_skip
        goal = env.goal.astype(np.float64)
        heading = math.atan2(goal[3], goal[2])

        def error(data: mujoco.MjData) -> float:
            turn = abs(math.remainder(float(data.qpos[4]) - heading, 2 * math.pi))
            return math.hypot(data.qpos[2] - goal[0], data.qpos[3] - goal[1]) + 0.1 * turn

        now = error(env.data)
        forces = (1.0, 0.5) if now < self.FINE else (1.0,)
        best, closest = (0.0, None), (math.inf, None)
        for point, normal in CONTACTS:
            local = self._standoff(point, normal)
            start = _world(block, local)
            path = self._route(pusher, block, local)
            if not path or max(abs(start[0]), abs(start[1])) > HALF - PUSHER_RADIUS:
                continue
            corners = [pusher, *(_world(block, p) for p in path)]
            # Steps to walk there at full speed (0.5 m/s nominal), and a few to settle.
            walk = sum(math.dist(a, b) for a, b in pairwise(corners)) / 0.025 + 4
            direction = np.array(_rotate(block[2], *normal))
            for force in forces:
                sim = self._sim
                mujoco.mj_copyData(sim, model, env.data)
                sim.qpos[0:2] = start
                sim.qvel[0:2] = 0.0
                sim.ctrl[:] = force * direction
                done = 0
                for stroke in self.STROKES:
                    mujoco.mj_step(model, sim, nstep=(stroke - done) * skip)
                    done = stroke
                    # Where the block comes to rest once the pusher backs off.
                    mujoco.mj_copyData(self._branch, model, sim)
                    self._branch.ctrl[:] = -0.5 * direction
                    mujoco.mj_step(model, self._branch, nstep=2 * skip)
                    after = error(self._branch)
                    rate = (now - after) / (walk + stroke + 2)
                    if rate > best[0]:
                        best = (rate, ((point, normal, force), stroke))
                    if after < closest[0]:
                        closest = (after, ((point, normal, force), stroke))
        # No stroke helps (rare, near the target): the one that leaves it closest.
        return best[1] if best[1] is not None else closest[1]

    def _route(self, pusher: Point, block: Pose, local: Point) -> list[Point]:
        """Shortest path (block frame, without the start) from the pusher to ``local`` past the
        T grown by the pusher's radius; empty if the walls close every way."""
        x, y, theta = block
        c, s = math.cos(theta), math.sin(theta)
        dx, dy = pusher[0] - x, pusher[1] - y
        start = (c * dx + s * dy, -s * dx + c * dy)
        keep = PUSHER_RADIUS + 0.01
        boxes = [(-hx - keep, cy - hy - keep, hx + keep, cy + hy + keep) for cy, hx, hy in BOXES]
        escape = []
        for _ in range(2):  # still touching the block (after a push): straight out first
            inside = [b for b in boxes if b[0] < start[0] < b[2] and b[1] < start[1] < b[3]]
            if not inside:
                break
            x0, y0, x1, y1 = inside[0]
            u, v = start
            start = min(
                (u - x0, (x0 - 0.002, v)),
                (x1 - u, (x1 + 0.002, v)),
                (v - y0, (u, y0 - 0.002)),
                (y1 - v, (u, y1 + 0.002)),
            )[1]
            escape.append(start)
        # Waypoints: the corners of the T grown a little more than ``keep``, inside the walls.
        wide = PUSHER_RADIUS + 0.02
        nodes = [start, local]
        for cy, hx, hy in BOXES:
            for sx, sy in _SIGNS:
                corner = (sx * (hx + wide), cy + sy * (hy + wide))
                inside = any(b[0] < corner[0] < b[2] and b[1] < corner[1] < b[3] for b in boxes)
                world = _world(block, corner)
                if not inside and max(abs(world[0]), abs(world[1])) < HALF - PUSHER_RADIUS:
                    nodes.append(corner)
        # Dijkstra over the visibility graph (a dozen nodes).
        n = len(nodes)
        dist, prev, done = [math.inf] * n, [-1] * n, [False] * n
        dist[0] = 0.0
        for _ in range(n):
            i = min((k for k in range(n) if not done[k]), key=dist.__getitem__)
            if dist[i] == math.inf or i == 1:
                break
            done[i] = True
            for j in range(n):
                if done[j] or any(_hits(nodes[i], nodes[j], b) for b in boxes):
                    continue
                if dist[i] + math.dist(nodes[i], nodes[j]) < dist[j]:
                    dist[j], prev[j] = dist[i] + math.dist(nodes[i], nodes[j]), i
        if dist[1] == math.inf:
            return []
        path, k = [], 1
        while k > 0:
            path.append(nodes[k])
            k = prev[k]
        return escape + path[::-1]
