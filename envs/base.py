"""The shared base of wmrobot's goal-conditioned MuJoCo tasks: observation modes, goal images,
factors of variation, physics state and fully seeded resets."""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from wmrobot.envs import physics
from wmrobot.errors import EnvError

OBS_MODES = ("state", "pixels", "state+pixels")


@dataclass(frozen=True)
class Factor:
    """A factor of variation: drawn per episode from a range inside ``[low, high]``.

    ``nominal`` is the value when nothing is asked; every factor is held there by default, so
    a task varies only in what the user opens up.
    """

    name: str
    group: str  # "physical", "visual" or "layout"
    nominal: float
    low: float
    high: float
    doc: str


# Every task has these; a task adds its own (layout) factors after them.
COMMON_FACTORS: tuple[Factor, ...] = (
    Factor("mass", "physical", 1.0, 0.2, 5.0, "scale of every body's mass and inertia"),
    Factor("friction", "physical", 1.0, 0.1, 3.0, "scale of every geom's sliding friction"),
    Factor("damping", "physical", 1.0, 0.1, 5.0, "scale of every joint's damping"),
    Factor("gear", "physical", 1.0, 0.2, 5.0, "scale of every actuator's gain"),
    Factor("light", "visual", 1.0, 0.2, 2.0, "scale of the light's intensity"),
    Factor("hue", "visual", 0.0, -0.5, 0.5, "hue shift of the moving parts (turns of the wheel)"),
    Factor("floor", "visual", 1.0, 0.3, 1.5, "brightness of the floor"),
    Factor("camera_x", "visual", 0.0, -0.15, 0.15, "camera shift along x (fraction of the view)"),
    Factor("camera_y", "visual", 0.0, -0.15, 0.15, "camera shift along y (fraction of the view)"),
)


def parse_factors(
    known: Sequence[Factor], asked: Mapping[str, Any] | None
) -> dict[str, tuple[float, float]]:
    """``{name: (min, max)}`` for every factor: nominal unless ``asked`` gives a value (held
    fixed) or a ``[min, max]`` range (drawn uniformly per episode)."""
    by_name = {f.name: f for f in known}
    ranges = {f.name: (f.nominal, f.nominal) for f in known}
    for name, value in (asked or {}).items():
        if name not in by_name:
            raise EnvError(f"unknown factor {name!r}; this task has {sorted(by_name)}")
        f = by_name[name]
        if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
            value = [value, value]
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise EnvError(
                f"factor {name}={value!r} must be a number or a [min, max] pair"
            ) from None
        if lo > hi:
            raise EnvError(f"factor {name} range [{lo}, {hi}] has min > max; give [min, max]")
        if lo < f.low or hi > f.high:
            raise EnvError(
                f"factor {name}={[lo, hi]} is outside its bounds [{f.low}, {f.high}] ({f.doc})"
            )
        ranges[name] = (lo, hi)
    return ranges


# The scene every task is framed in: the names the base needs ("floor" material, "top" light
# and camera) and a camera that frames a floor of half-width ``view`` (fovy 60: height 1.74 x).
def floor_assets(tiles: float) -> str:
    """The checker texture and the ``floor`` material, ``tiles`` checks along each side."""
    return (
        '<texture name="grid" type="2d" builtin="checker" rgb1=".85 .85 .85" '
        'rgb2=".75 .75 .75" width="64" height="64"/>'
        f'<material name="floor" texture="grid" texrepeat="{tiles:.4f} {tiles:.4f}"/>'
    )


def top_view(view: float) -> str:
    """The overhead light and ``top`` camera, and a floor plane of half-width ``view`` that
    touches nothing."""
    return (
        '<light name="top" pos="0 0 3" dir="0 0 -1" directional="true" castshadow="false"/>'
        f'<camera name="top" pos="0 0 {view * 1.74:.4f}" xyaxes="1 0 0 0 1 0" fovy="60"/>'
        f'<geom name="floor" type="plane" size="{view} {view} 0.1" material="floor" '
        'contype="0" conaffinity="0"/>'
    )


def square_walls(inner: float, thickness: float, height: float, attrs: str = "") -> str:
    """Four box walls of half-thickness ``thickness`` and half-height ``height`` around the
    square ``[-inner, inner]^2`` (``attrs`` is added to each geom)."""
    outer, long = inner + thickness, inner + 2 * thickness
    sides = [(0, outer, long, thickness), (0, -outer, long, thickness)]
    sides += [(outer, 0, thickness, long), (-outer, 0, thickness, long)]
    return "".join(
        f'<geom name="wall_{i}" type="box" pos="{x} {y} {height}" '
        f'size="{sx} {sy} {height}" material="wall" {attrs}/>'
        for i, (x, y, sx, sy) in enumerate(sides)
    )


class GoalTask(gym.Env):
    """A goal-conditioned MuJoCo task as a plain Gymnasium env.

    Observation (a dict, as gymnasium-robotics' goal envs): ``observation`` (the state vector,
    in the ``state`` modes), ``pixels`` and ``goal_pixels`` (``height x width x 3`` uint8 frames
    of the scene and of the goal, in the ``pixels`` modes), ``achieved_goal`` and
    ``desired_goal`` (the goal as a state). Reward: dense, minus a distance to the goal
    (``compute_reward`` is vectorised, for hindsight relabelling). The episode terminates on
    success. ``reset(seed=...)`` draws the factors of variation, the start and the goal from the
    seed alone; ``options={"start": ..., "goal": ..., "factors": {...}}`` pins any of them.
    ``show_goal=False`` leaves the goal marker out of the frames, so that a pixel world model
    sees the goal only in the goal image (the agent drawn at the goal), never as a marker.

    A task subclass sets ``FACTORS``, ``camera`` and ``view`` (the half-width of the scene the
    camera frames, for the camera factors), and implements ``_mjcf``, ``_state_space``,
    ``_goal_space``, ``sample_start_goal``, ``_place``, ``_observation``, ``_achieved``,
    ``distance``, ``is_success`` and ``goal_observation``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    FACTORS: ClassVar[tuple[Factor, ...]] = COMMON_FACTORS
    camera: ClassVar[str] = "top"
    moving_geoms: ClassVar[tuple[str, ...]] = ()  # recoloured by the hue factor
    goal_sites: ClassVar[tuple[str, ...]] = ()  # the goal marker's sites and bodies, which
    goal_bodies: ClassVar[tuple[str, ...]] = ()  # ``show_goal=False`` leaves out of frames
    floor_material: ClassVar[str] = "floor"
    view: ClassVar[float] = 1.0  # half-width of the scene the camera frames, in metres

    def __init__(
        self,
        obs_mode: str = "state",
        width: int = 64,
        height: int = 64,
        frame_skip: int = 5,
        factors: Mapping[str, Any] | None = None,
        terminate_on_success: bool = True,
        render_mode: str | None = None,
        show_goal: bool = True,
    ) -> None:
        if obs_mode not in OBS_MODES:
            raise EnvError(f"unknown obs_mode {obs_mode!r}; choose one of {list(OBS_MODES)}")
        if frame_skip < 1:
            raise EnvError(f"frame_skip must be >= 1, got {frame_skip}")
        for name, size in (("width", width), ("height", height)):
            if not 8 <= size <= 1024:
                raise EnvError(f"{name}={size} must be between 8 and 1024 pixels")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise EnvError(f"render_mode {render_mode!r} is not supported; use 'rgb_array' or None")
        self.obs_mode, self.width, self.height = obs_mode, width, height
        self.frame_skip = frame_skip
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.factor_ranges = parse_factors(self.FACTORS, factors)
        self._factor_bounds = np.array(list(self.factor_ranges.values())).T  # (2, F), for reset
        self.factor_values = {f.name: f.nominal for f in self.FACTORS}
        self.model = mujoco.MjModel.from_xml_string(self._mjcf())
        self.show_goal = bool(show_goal)
        if not self.show_goal:  # transparent: frames show the scene, goal images the goal
            for name in self.goal_sites:
                self.model.site_rgba[self.model.site(name).id, 3] = 0.0
            for name in self.goal_bodies:
                body = self.model.body(name).id
                self.model.geom_rgba[self.model.geom_bodyid == body, 3] = 0.0
        # The offscreen buffer only as large as the frames: software GL pays for every pixel.
        self.model.vis.global_.offwidth = max(width, 1)
        self.model.vis.global_.offheight = max(height, 1)
        # No multisampling: software GL (Mesa on a CPU) pays for every extra sample.
        self.model.vis.quality.offsamples = 0
        self.data = mujoco.MjData(self.model)
        self._ctrl = self.data.ctrl  # a view, looked up once: step() is on the hot path
        self._nominal = {
            k: getattr(self.model, k).copy()
            for k in (
                "body_mass",
                "body_inertia",
                "geom_friction",
                "dof_damping",
                "actuator_gear",
                "light_diffuse",
                "geom_rgba",
                "mat_rgba",
                "cam_pos",
            )
        }
        self._moving = [self.model.geom(n).id for n in self.moving_geoms]
        self._floor = self.model.material(self.floor_material).id
        self._camera = self.model.camera(self.camera).id
        self._renderer: mujoco.Renderer | None = None
        self._goal_frame: np.ndarray | None = None
        self._reset_done = False
        self.goal = np.zeros(self._goal_space().shape, dtype=np.float32)
        self.state = "state" in obs_mode
        self.pixels = "pixels" in obs_mode
        obs: dict[str, spaces.Space] = {}
        if self.state:
            obs["observation"] = self._state_space()
        if self.pixels:
            frame = spaces.Box(0, 255, (height, width, 3), np.uint8)
            obs["pixels"], obs["goal_pixels"] = frame, frame
        obs["achieved_goal"] = obs["desired_goal"] = self._goal_space()
        self.observation_space = spaces.Dict(obs)
        low, high = self.model.actuator_ctrlrange.T.astype(np.float32)
        self.action_space = spaces.Box(low, high, dtype=np.float32)

    # -- what a task implements -------------------------------------------------------------

    def _mjcf(self) -> str:
        raise NotImplementedError

    def _state_space(self) -> spaces.Box:
        raise NotImplementedError

    def _goal_space(self) -> spaces.Box:
        raise NotImplementedError

    def sample_start_goal(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A start configuration and a goal, drawn with ``rng`` (the evaluation sets use it)."""
        raise NotImplementedError

    def _place(self, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Put the system at ``start`` and mark ``goal``; return ``desired_goal`` (float32).
        Raise :class:`EnvError` naming the value when either is not valid."""
        raise NotImplementedError

    def _pose_at_goal(self) -> None:
        """Put the system in the goal configuration (for the goal image)."""
        raise NotImplementedError

    def _observation(self) -> np.ndarray:
        raise NotImplementedError

    def _achieved(self) -> np.ndarray:
        raise NotImplementedError

    def distance(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        """Vectorised distance to the goal, float64 (the dense reward is its negative)."""
        raise NotImplementedError

    def is_success(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def goal_observation(self, desired_goal: np.ndarray) -> np.ndarray:
        """The state observation of resting at ``desired_goal``: (..., G) -> (..., O)."""
        raise NotImplementedError

    def _apply_layout(self, values: dict[str, float]) -> None:
        """Apply the task's own (layout) factors; the common ones are applied by the base."""

    # -- the Gymnasium API ------------------------------------------------------------------

    @property
    def dt(self) -> float:
        return self.model.opt.timestep * self.frame_skip

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"start", "goal", "factors"}
        if unknown:
            raise EnvError(f"unknown reset options {sorted(unknown)}; use start, goal, factors")
        rng = self.np_random
        # Every factor is drawn, held ones too, so holding one does not shift the others.
        drawn = rng.uniform(*self._factor_bounds).tolist()
        values = dict(zip(self.factor_ranges, drawn, strict=True))
        if options.get("factors"):
            pinned = parse_factors(self.FACTORS, options["factors"])
            values.update({n: pinned[n][0] for n in options["factors"]})
        self._apply_factors(values)
        mujoco.mj_resetData(self.model, self.data)
        # After the reset (a mocap layout lives in MjData), before the draw (free space
        # depends on the layout).
        self._apply_layout(values)
        start, goal = self.sample_start_goal(rng)
        start = np.asarray(options.get("start", start), dtype=np.float64)
        goal = np.asarray(options.get("goal", goal), dtype=np.float64)
        self.goal = self._place(start, goal)
        mujoco.mj_forward(self.model, self.data)
        self._goal_frame = self.render_goal() if self.pixels else None
        self._reset_done = True
        obs = self._obs()
        return obs, self._info(obs)

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if not self._reset_done:
            raise ResetNeeded("call env.reset() before env.step()")
        # MuJoCo clamps controls to the actuators' ctrlrange.
        self._ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        obs = self._obs()
        info = self._info(obs)
        return obs, -info["distance"], info["is_success"] and self.terminate_on_success, False, info

    def compute_reward(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any = None
    ) -> np.ndarray:
        """Vectorised dense reward, for hindsight relabelling (as gymnasium-robotics' GoalEnv)."""
        return -self.distance(achieved_goal, desired_goal)

    def get_physics_state(self) -> np.ndarray:
        """The full MuJoCo physics state (``mjSTATE_FULLPHYSICS``), float64."""
        return physics.get_physics_state(self)

    def set_physics_state(self, state: np.ndarray) -> None:
        physics.set_physics_state(self, state)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._render()

    def render_goal(self) -> np.ndarray:
        """A frame of the scene in the goal configuration; the physics is left as it was."""
        saved = self.get_physics_state()
        self._pose_at_goal()
        mujoco.mj_forward(self.model, self.data)
        frame = self._render()
        self.set_physics_state(saved)
        return frame

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- internals --------------------------------------------------------------------------

    def _obs(self) -> dict[str, np.ndarray]:
        if not self.pixels:  # the common case first, as one dict literal: step() is hot
            return {
                "observation": self._observation(),
                "achieved_goal": self._achieved(),
                "desired_goal": self.goal.copy(),
            }
        obs: dict[str, np.ndarray] = {}
        if self.state:
            obs["observation"] = self._observation()
        obs["pixels"] = self._render()
        obs["goal_pixels"] = self._goal_frame.copy()
        obs["achieved_goal"] = self._achieved()
        obs["desired_goal"] = self.goal.copy()
        return obs

    def _info(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        # From the float32 observation, so reward == compute_reward(obs...) exactly.
        distance, success = self._evaluate(obs["achieved_goal"], obs["desired_goal"])
        # The episode's factor values in every info, as Minari's DataCollector wants one shape.
        factors = dict(self.factor_values)
        return {"distance": distance, "is_success": success, "factors": factors}

    def _evaluate(self, achieved: np.ndarray, desired: np.ndarray) -> tuple[float, bool]:
        """Distance and success of one step; a task may override it with a faster scalar
        version that gives the same bits as ``distance`` and ``is_success``."""
        return float(self.distance(achieved, desired)), bool(self.is_success(achieved, desired))

    def _render(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.height, self.width)
            flags = self._renderer.scene.flags
            # Shadows and reflections cost most of a software-GL frame and carry no state.
            for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX"):
                flags[getattr(mujoco.mjtRndFlag, flag)] = 0
        # mj_step leaves body poses at the start of its last substep; recompute them (and
        # only them: the dynamics' own buffers stay untouched) so a frame shows the state.
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render()

    def _apply_factors(self, values: dict[str, float]) -> None:
        if values == self.factor_values:
            return  # the model already holds them (the common case: factors held fixed)
        m, n = self.model, self._nominal
        m.body_mass[:] = n["body_mass"] * values["mass"]
        m.body_inertia[:] = n["body_inertia"] * values["mass"]
        m.geom_friction[:, 0] = n["geom_friction"][:, 0] * values["friction"]
        m.dof_damping[:] = n["dof_damping"] * values["damping"]
        m.actuator_gear[:, 0] = n["actuator_gear"][:, 0] * values["gear"]
        m.light_diffuse[:] = n["light_diffuse"] * values["light"]
        for g in self._moving:
            h, s, v = colorsys.rgb_to_hsv(*n["geom_rgba"][g, :3])
            m.geom_rgba[g, :3] = colorsys.hsv_to_rgb((h + values["hue"]) % 1.0, s, v)
        m.mat_rgba[self._floor, :3] = np.clip(
            n["mat_rgba"][self._floor, :3] * values["floor"], 0, 1
        )
        shift = 2 * self.view * np.array([values["camera_x"], values["camera_y"], 0.0])
        m.cam_pos[self._camera] = n["cam_pos"][self._camera] + shift
        if values["mass"] != self.factor_values["mass"]:
            mujoco.mj_setConst(m, self.data)  # masses feed the constraint solver's constants
        self.factor_values = values
