"""Reacher: a two-link planar arm driven by joint torques to a target position or pose."""

from __future__ import annotations

import math
from typing import Any

import mujoco
import numpy as np
from gymnasium import spaces

from wmrobot.envs.base import GoalTask, floor_assets, top_view
from wmrobot.errors import EnvError

UPPER, FORE = 0.12, 0.10  # link lengths (m): shoulder to elbow, elbow to fingertip
REACH = UPPER + FORE
VIEW = 0.26  # half-width of the framed floor: the reach, the links' thickness and a margin
ELBOW_LIMIT = 2.8  # |elbow angle| (rad) the joint allows, so the forearm never folds onto the arm
GOAL_ELBOW = (0.3, 2.6)  # |elbow angle| range of drawn goals: off the stretched singularity
POSITION_TOLERANCE = 0.02  # success: the fingertip this close (m) to the target, 9% of the reach
POSE_TOLERANCE = 0.1  # success: both joint angles this close (rad) to the target pose
MIN_GOAL_DISTANCE = 0.05  # drawn goals put the fingertip at least this far (m) from its start
# Motor gains (N m per unit of action) and joint damping (N m s/rad), shoulder and elbow: terminal
# speeds gear / damping of 6 and 10 rad/s, time constants inertia / damping of 0.1 to 0.25 s.
GEAR = (0.06, 0.02)
DAMPING = (0.01, 0.002)
# Observation bound on joint speeds (rad/s), 5x the nominal terminal speeds; the gear and damping
# factors can raise those fifty-fold, so the observation is clipped here (the physics is not).
MAX_SPEED = 50.0
TARGETS = ("position", "pose")
# Success for a pose: per joint, the chord between the unit (cos, sin) vectors is 2 sin(err / 2),
# so comparing its square keeps the test to + and * (bit-identical scalar and vectorised paths).
_POSE_CHORD2 = (2.0 * math.sin(POSE_TOLERANCE / 2.0)) ** 2


def fingertip(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Fingertip (x, y) of joint angles ``q1``, ``q2`` (...,) -> (..., 2), float64."""
    return np.stack(
        [
            UPPER * np.cos(q1) + FORE * np.cos(q1 + q2),
            UPPER * np.sin(q1) + FORE * np.sin(q1 + q2),
        ],
        axis=-1,
    )


def inverse_kinematics(point: np.ndarray, elbow: float = 1.0) -> np.ndarray:
    """Joint angles (q1, q2) that put the fingertip at ``point`` (..., 2) -> (..., 2).

    ``elbow`` picks the branch: the sign of q2 (positive: the forearm bends counter-clockwise).
    A point out of reach gets the nearest reachable configuration on its ray from the shoulder.
    """
    point = np.asarray(point, dtype=np.float64)
    x, y = point[..., 0], point[..., 1]
    cos_q2 = (x * x + y * y - UPPER**2 - FORE**2) / (2 * UPPER * FORE)
    q2 = np.copysign(np.arccos(np.clip(cos_q2, math.cos(ELBOW_LIMIT), 1.0)), elbow)
    q1 = np.arctan2(y, x) - np.arctan2(FORE * np.sin(q2), UPPER + FORE * np.cos(q2))
    return np.stack([q1, q2], axis=-1)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


class ReacherEnv(GoalTask):
    """Goal-conditioned two-link planar arm, seen from above, with a torque motor per joint.

    ``target="position"``: the goal is a fingertip position (x, y); success when the fingertip
    is within ``POSITION_TOLERANCE`` of it. ``target="pose"``: the goal is the arm's pose as
    (cos q1, sin q1, cos q2, sin q2); success when both joint angles are within
    ``POSE_TOLERANCE``, and the distance is the norm of the (cos, sin) difference (the joint
    error in radians, for small errors).

    Observation ``observation`` = (cos q1, sin q1, cos q2, sin q2, qd1, qd2, fingertip x, y),
    speeds clipped to ``MAX_SPEED``. Action: the two joint torques in [-1, 1], held for
    ``frame_skip`` physics steps of 5 ms (0.04 s by default). Start and goal are joint angles
    (q1, q2); the shoulder turns freely, the elbow within ``ELBOW_LIMIT``. Drawn goals bend the
    elbow counter-clockwise (q2 > 0) for ``position``, the branch that ``goal_observation``'s
    inverse kinematics takes, so the goal image and the goal observation show the same arm;
    either way for ``pose``. A green disc of radius ``POSITION_TOLERANCE`` marks the goal's
    fingertip position.
    """

    moving_geoms = ("upper", "fore", "hand")
    goal_sites = ("target",)
    view = VIEW

    def __init__(self, target: str = "position", frame_skip: int = 8, **kwargs: Any) -> None:
        if target not in TARGETS:
            raise EnvError(f"unknown Reacher target {target!r}; choose one of {list(TARGETS)}")
        self.target = target
        self._pose = target == "pose"  # read every step
        super().__init__(frame_skip=frame_skip, **kwargs)
        self._target_site = self.model.site("target").id
        # Views into MjData, looked up once: step() reads them every call.
        self._qpos, self._qvel = self.data.qpos, self.data.qvel
        self._goal_q = np.zeros(2)

    def _mjcf(self) -> str:
        # 5 ms physics steps resolve the elbow limit (a soft constraint with MuJoCo's default
        # 20 ms time constant) over four steps. Nothing touches: no contacts to detect.
        (g1, g2), (d1, d2) = GEAR, DAMPING
        return f"""
<mujoco model="reacher">
  <compiler angle="radian"/>
  <option timestep="0.005" gravity="0 0 0"><flag contact="disable"/></option>
  <asset>{floor_assets(2 * VIEW / 0.1)}</asset>
  <default><geom contype="0" conaffinity="0"/></default>
  <worldbody>
    {top_view(VIEW)}
    <geom name="base" type="cylinder" size="0.022 0.01" pos="0 0 0.01" rgba=".3 .3 .35 1"/>
    <site name="target" pos="0 0 0.002" type="cylinder" size="{POSITION_TOLERANCE} 0.002"
          rgba=".2 .8 .2 .8"/>
    <body name="upper" pos="0 0 0.02">
      <joint name="shoulder" type="hinge" axis="0 0 1" damping="{d1}"/>
      <geom name="upper" type="capsule" fromto="0 0 0 {UPPER} 0 0" size="0.012" mass="0.1"
            rgba=".85 .3 .2 1"/>
      <body name="fore" pos="{UPPER} 0 0">
        <joint name="elbow" type="hinge" axis="0 0 1" damping="{d2}" limited="true"
               range="{-ELBOW_LIMIT} {ELBOW_LIMIT}"/>
        <geom name="fore" type="capsule" fromto="0 0 0 {FORE} 0 0" size="0.01" mass="0.05"
              rgba=".85 .3 .2 1"/>
        <geom name="hand" type="sphere" pos="{FORE} 0 0" size="0.014" mass="0.01"
              rgba=".95 .75 .1 1"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor name="shoulder" joint="shoulder" gear="{g1}" ctrlrange="-1 1" ctrllimited="true"/>
    <motor name="elbow" joint="elbow" gear="{g2}" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""

    def _state_space(self) -> spaces.Box:
        # A float64 fingertip coordinate may pass REACH by an ulp; the bound leaves room for it.
        high = np.array([1, 1, 1, 1, MAX_SPEED, MAX_SPEED, REACH + 1e-3, REACH + 1e-3])
        return spaces.Box(-high.astype(np.float32), high.astype(np.float32))

    def _goal_space(self) -> spaces.Box:
        if self.target == "pose":
            return spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        return spaces.Box(-REACH - 1e-3, REACH + 1e-3, shape=(2,), dtype=np.float32)

    def sample_start_goal(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        start = np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-GOAL_ELBOW[1], GOAL_ELBOW[1])])
        for _ in range(1000):
            elbow = 1.0 if self.target == "position" else rng.choice([-1.0, 1.0])
            goal = np.array([rng.uniform(-np.pi, np.pi), elbow * rng.uniform(*GOAL_ELBOW)])
            if np.linalg.norm(fingertip(*goal) - fingertip(*start)) >= MIN_GOAL_DISTANCE:
                return start, goal
        raise EnvError("could not draw a Reacher goal away from the start")  # not reached

    def _place(self, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
        for name, q in (("start", start), ("goal", goal)):
            if q.shape != (2,) or not np.isfinite(q).all() or abs(q[1]) > ELBOW_LIMIT:
                raise EnvError(
                    f"{name} {q.tolist()} is not a Reacher configuration: give joint angles "
                    f"(q1, q2) in radians with |q2| <= {ELBOW_LIMIT} (the elbow's limit)"
                )
        self.data.qpos[:] = start
        self._goal_q = goal.copy()
        self.model.site_pos[self._target_site, :2] = fingertip(*goal)
        if self.target == "pose":
            q1, q2 = goal
            return np.array([np.cos(q1), np.sin(q1), np.cos(q2), np.sin(q2)], dtype=np.float32)
        return fingertip(*goal).astype(np.float32)

    def _pose_at_goal(self) -> None:
        self.data.qpos[:] = self._goal_q
        self.data.qvel[:] = 0.0

    def _observation(self) -> np.ndarray:
        # Python floats and math: for eight numbers, a fraction of the cost of numpy calls.
        q1, q2 = self._qpos.tolist()
        v1, v2 = self._qvel.tolist()
        if abs(v1) > MAX_SPEED or abs(v2) > MAX_SPEED:
            v1, v2 = (min(max(v, -MAX_SPEED), MAX_SPEED) for v in (v1, v2))
        c1, s1 = math.cos(q1), math.sin(q1)
        x, y = UPPER * c1 + FORE * math.cos(q1 + q2), UPPER * s1 + FORE * math.sin(q1 + q2)
        return np.array((c1, s1, math.cos(q2), math.sin(q2), v1, v2, x, y), dtype=np.float32)

    def _achieved(self) -> np.ndarray:
        # From qpos, not site_xpos: after mj_step the kinematics lag the state by one substep.
        q1, q2 = self._qpos.tolist()
        if self._pose:
            values = (math.cos(q1), math.sin(q1), math.cos(q2), math.sin(q2))
        else:
            values = (
                UPPER * math.cos(q1) + FORE * math.cos(q1 + q2),
                UPPER * math.sin(q1) + FORE * math.sin(q1 + q2),
            )
        return np.array(values, dtype=np.float32)

    def distance(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        diff = np.asarray(achieved_goal, np.float64) - np.asarray(desired_goal, np.float64)
        # Spelled out (not a norm), so one row and a batch of rows round alike, bit for bit.
        square = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]
        if self.target == "pose":
            square = square + (diff[..., 2] * diff[..., 2] + diff[..., 3] * diff[..., 3])
        return np.sqrt(square)

    def is_success(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        if self.target == "position":
            return self.distance(achieved_goal, desired_goal) < POSITION_TOLERANCE
        diff = np.asarray(achieved_goal, np.float64) - np.asarray(desired_goal, np.float64)
        shoulder = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]
        elbow = diff[..., 2] * diff[..., 2] + diff[..., 3] * diff[..., 3]
        return (shoulder < _POSE_CHORD2) & (elbow < _POSE_CHORD2)

    def _evaluate(self, achieved: np.ndarray, desired: np.ndarray) -> tuple[float, bool]:
        # ``distance`` and ``is_success`` on Python floats: the same operations in the same order.
        a, d = achieved.tolist(), desired.tolist()
        d0, d1 = a[0] - d[0], a[1] - d[1]
        square = d0 * d0 + d1 * d1
        if not self._pose:
            distance = math.sqrt(square)
            return distance, distance < POSITION_TOLERANCE
        d2, d3 = a[2] - d[2], a[3] - d[3]
        elbow = d2 * d2 + d3 * d3
        return math.sqrt(square + elbow), square < _POSE_CHORD2 and elbow < _POSE_CHORD2

    def goal_observation(self, desired_goal: np.ndarray) -> np.ndarray:
        desired_goal = np.asarray(desired_goal, dtype=np.float64)
        if self.target == "pose":
            q1 = np.arctan2(desired_goal[..., 1], desired_goal[..., 0])
            q2 = np.arctan2(desired_goal[..., 3], desired_goal[..., 2])
        else:
            q1, q2 = np.moveaxis(inverse_kinematics(desired_goal), -1, 0)
        zero = np.zeros_like(q1)
        parts = [np.cos(q1), np.sin(q1), np.cos(q2), np.sin(q2), zero, zero]
        return np.concatenate([np.stack(parts, -1), fingertip(q1, q2)], -1).astype(np.float32)


class ReacherPoseEnv(ReacherEnv):
    """Reacher whose goal is a pose of the whole arm (``wmrobot/ReacherPose-v0``)."""

    def __init__(self, target: str = "pose", **kwargs: Any) -> None:
        super().__init__(target=target, **kwargs)


class ReacherExpert:
    """Inverse kinematics to goal joint angles, tracked by a computed-torque PD controller.

    The PD law gives joint accelerations (``kp`` in 1/s^2, ``kd`` in 1/s: critically damped at
    10 rad/s); the arm's mass matrix, Coriolis forces, damping and motor gains turn them into
    actions, so the same gains hold whatever the physical factors. For a position goal it
    takes the elbow branch on the side the elbow already bends, so the arm never swings its
    elbow through the stretched pose. It reads the state from ``env.model`` and ``env.data``
    (a scripted expert may use privileged state), so it runs in every observation mode.
    ``noise`` adds Gaussian noise (in units of the action range) to every action.
    """

    def __init__(
        self, env: ReacherEnv, noise: float = 0.0, kp: float = 100.0, kd: float = 20.0
    ) -> None:
        self.env, self.noise, self.kp, self.kd = env, noise, kp, kd
        self._rng = np.random.default_rng()
        self._torque = np.empty(2)

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        model, data = self.env.model, self.env.data
        q1, q2 = data.qpos.tolist()
        goal = obs["desired_goal"].astype(np.float64)
        if self.env.target == "pose":
            g1, g2 = math.atan2(goal[1], goal[0]), math.atan2(goal[3], goal[2])
        else:
            g1, g2 = inverse_kinematics(goal, elbow=1.0 if q2 >= 0 else -1.0).tolist()
        # The shoulder turns freely: the short way round. The elbow's limit stops it wrapping.
        error = np.array([_wrap(g1 - q1), g2 - q2])
        accel = self.kp * error - self.kd * data.qvel
        mujoco.mj_mulM(model, data, self._torque, accel)
        torque = self._torque + data.qfrc_bias + model.dof_damping * data.qvel
        action = torque / model.actuator_gear[:, 0]
        if self.noise > 0:
            action = action + self.noise * self._rng.standard_normal(2)
        return action.clip(-1.0, 1.0).astype(np.float32)
