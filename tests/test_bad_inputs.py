"""Every command's bad inputs, in one table: each exits 2 with one line on stderr that names the
bad value, and leaves every file as it was (paths, sizes and sha256 before and after).

The contract checked: stderr holds exactly one line, ``wmrobot <command>: error: ...``, and no
traceback. A Hydra app (collect, train, plan, distill, demo, eval model) may log its progress
lines on stdout before it stops; every other command prints nothing on stdout. ``wmrobot``,
``wmrobot data`` and ``wmrobot eval`` with no arguments print their usage and exit 0, as
``--help`` does: not bad input, so not in the table.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
import zarr

from wmrobot.cli import JOBS, main
from wmrobot.datasets import collect

# Settings that keep a case quick if the command, wrongly, goes on to do the work.
TINY_TRAIN = [
    "model.train.steps=2",
    "model.train.batch_size=8",
    "model.train.critic.finetune=0",
    "model.train.tensorboard=false",
]
TINY_PLANNER = [
    "planner.backend=torch",  # numba's JIT alone takes half a minute
    "planner.samples=8",
    "planner.elites=2",
    "planner.iterations=1",
    "planner.horizon=3",
]
TINY_EVAL = ["env.eval.pairs=1", "env.eval.budget=2", "seeds=[0]", "video=false"]
TINY_ACTOR = ["actor.states=16", "actor.rounds=0", "actor.steps=2", "actor.batch_size=8"]


class Payload:
    """A pickle that, once loaded, writes a marker file: proof that loading ran its code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The inputs the table names ({key} in its arguments), built once under one folder."""
    root = tmp_path_factory.mktemp("bad_inputs")
    p = {name: root / name for name in ("a.zarr", "a2.zarr", "c.zarr", "b.zarr", "ck", "agent")}
    maze = "wmrobot/PointMaze-v0"
    collect(str(p["a.zarr"]), maze, {"layout": "ring"}, episodes=3, seed=0, progress=False)
    collect(str(p["a2.zarr"]), maze, {"layout": "ring"}, episodes=2, seed=1, progress=False)
    # the same observations and actions as a.zarr's, in another maze: only its env tells
    collect(str(p["c.zarr"]), maze, {"layout": "open"}, episodes=2, seed=0, progress=False)
    collect(str(p["b.zarr"]), "wmrobot/Reacher-v0", {}, episodes=2, seed=0, progress=False)
    build = root / "build"  # where the fixture's own run folders go
    build.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(build)
        made = main(["train", f"dataset={p['a.zarr']}", f"out={p['ck']}", *TINY_TRAIN])
        assert made == 0
        made = main(
            ["distill", f"checkpoint={p['ck']}", f"out={p['agent']}", *TINY_PLANNER, *TINY_ACTOR]
        )
        assert made == 0
    shutil.rmtree(build)

    (root / "notes.txt").write_text("not a dataset\n")
    (root / "empty").mkdir()
    junk = root / "junk"  # a folder that claims to be zarr and is not
    junk.mkdir()
    (junk / "zarr.json").write_text("{ this is not json")
    (junk / "data.bin").write_bytes(os.urandom(64))
    plain = root / "plain"  # a folder of someone else's files
    plain.mkdir()
    (plain / "README").write_text("holiday photos\n")
    group = zarr.open_group(root / "other.zarr", mode="w")  # zarr, not a wmrobot dataset
    group.create_array("x", shape=(4,), dtype="f4")[:] = 1.0
    nometa = root / "nometa.zarr"  # a dataset whose meta/episode_ends was deleted
    shutil.copytree(p["a.zarr"], nometa)
    shutil.rmtree(nometa / "meta" / "episode_ends")

    evil = root / "evil"  # a checkpoint folder whose tensors are a malicious pickle
    shutil.copytree(p["ck"], evil)
    marker = root / "PWNED"
    for name in ("model.pt", "train_state.pt"):
        torch.save({"state": Payload(marker)}, evil / name)

    paths = {k.split(".")[0]: str(v) for k, v in p.items()}
    for name in ("notes.txt", "empty", "junk", "plain", "other.zarr", "nometa.zarr", "evil"):
        paths[name.split(".")[0]] = str(root / name)
    return {**paths, "root": str(root), "marker": str(marker)}


def snapshot(**roots: str | Path) -> dict[str, tuple[int, str] | str]:
    """Every folder and file under each root, as ``name/relative path``: a file as (size,
    sha256), a folder as "dir"."""
    tree: dict[str, tuple[int, str] | str] = {}
    for name, root in roots.items():
        for path in sorted(Path(root).rglob("*")):
            key = f"{name}/{path.relative_to(root)}"
            if path.is_dir():
                tree[key] = "dir"
            else:
                tree[key] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return tree


def case(name: str, args: str, needle: str, *marks: pytest.MarkDecorator):
    """One row: a readable id, the arguments (``{key}`` names a fixture file), the text the
    error line must contain."""
    return pytest.param(args.split(), needle, id=name, marks=marks)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
TT, TP, TE, TA = (" ".join(x) for x in (TINY_TRAIN, TINY_PLANNER, TINY_EVAL, TINY_ACTOR))

# fmt: off
CASES = [
    # the dispatcher
    case("wmrobot-unknown-command", "frobnicate", "'frobnicate'"),
    case("wmrobot-unknown-flag", "--verbose", "'--verbose'"),
    case("wmrobot-command-wrong-case", "Collect", "'Collect'"),
    # collect: range, type, unknown key or group, missing file, wrong target
    case("collect-episodes-zero", "collect episodes=0", "episodes=0"),
    case("collect-episodes-text", "collect episodes=abc", "episodes"),
    case("collect-episodes-float", "collect episodes=1.5", "1.5"),
    case("collect-steps-zero", "collect steps=0", "steps=0"),
    case("collect-workers-zero", "collect workers=0", "workers=0"),
    case("collect-seed-negative", "collect seed=-1", "seed=-1"),
    case("collect-flush-every-zero", "collect flush_every=0", "flush_every=0"),
    case("collect-pixels-text", "collect pixels=big", "pixels"),
    case("collect-fast-text", "collect fast=maybe", "fast"),
    case("collect-unknown-key", "collect nosuchkey=1", "nosuchkey"),
    case("collect-unknown-env", "collect env=nosuchenv", "nosuchenv"),
    case("collect-unknown-policy", "collect policy=nosuch", "nosuch"),
    case("collect-policy-name", "collect policy.name=greedy", "greedy"),
    case("collect-policy-epsilon", "collect policy.epsilon=2", "epsilon"),
    case("collect-sb3-missing-file", "collect policy=sb3 policy.path={root}/no.zip", "no.zip"),
    case("collect-sb3-not-a-model", "collect policy=sb3 policy.path={notes}", "notes.txt"),
    case("collect-layout-unknown", "collect episodes=1 env.kwargs.layout=spiral", "spiral"),
    case("collect-env-id-unknown", "collect episodes=1 env.id=NoSuch-v9", "NoSuch-v9"),
    case("collect-env-discrete-actions", "collect episodes=1 env=halfcheetah env.id=CartPole-v1",
         "Discrete(2)"),
    case("collect-env-kwarg-unknown", "collect episodes=1 +env.kwargs.bogus=1", "bogus"),
    case("collect-env-kwarg-type", "collect episodes=1 env.kwargs.gear=abc", "abc"),
    case("collect-into-other-env", "collect episodes=4 out={b}", "Reacher"),
    case("collect-into-other-layout", "collect episodes=4 out={a} env.kwargs.layout=open", "open"),
    case("collect-into-a-file", "collect episodes=1 out={notes}", "notes.txt"),
    case("collect-into-junk", "collect episodes=1 out={junk}", "junk"),
    case("collect-into-plain-zarr", "collect episodes=1 out={other}", "other.zarr"),
    case("collect-under-a-file", "collect episodes=1 out={notes}/d.zarr", "notes.txt"),
    case("collect-unknown-flag", "collect --bogus", "--bogus"),
    case("collect-fills-the-disk", "collect episodes=1000000000000 out={root}/big.zarr",
         "1,000,000,000,000 episodes"),
    case("collect-sweep-bad-value", "collect -m episodes=0,1", "episodes=0"),
    case("collect-sweep-text-value", "collect -m episodes=a,b", "episodes"),
    # train
    case("train-no-dataset", "train", "dataset"),
    case("train-dataset-missing", "train dataset={root}/no.zarr", "no.zarr"),
    case("train-dataset-a-file", "train dataset={notes}", "notes.txt"),
    case("train-dataset-empty-folder", "train dataset={empty}", "empty"),
    case("train-dataset-junk", "train dataset={junk}", "junk"),
    case("train-dataset-plain-zarr", "train dataset={other}", "other.zarr"),
    case("train-dataset-no-episode-ends", f"train dataset={{nometa}} {TT}", "episode_ends"),
    case("train-steps-zero", "train dataset={a} model.train.steps=0", "steps=0"),
    case("train-lr-negative", "train dataset={a} model.train.lr=-1", "lr"),
    case("train-batch-text", "train dataset={a} model.train.batch_size=abc", "batch_size"),
    case("train-threads-zero", "train dataset={a} threads=0", "threads=0"),
    case("train-resume-text", "train dataset={a} resume=maybe", "resume"),
    case("train-unknown-model-key", "train dataset={a} model.nosuch=1", "nosuch"),
    case("train-unknown-model", "train dataset={a} model=nosuch", "nosuch"),
    case("train-anticollapse", "train dataset={a} model.train.anticollapse=x", "anticollapse"),
    case("train-device-tpu", f"train dataset={{a}} model.train.device=tpu {TT}", "tpu"),
    case("train-device-cuda-absent", f"train dataset={{a}} model.train.device=cuda {TT}",
         "CUDA", NO_CUDA),
    case("train-cnn-on-state-data",
         f"train dataset={{a}} model=pixels_cnn model.train.critic.joint=true {TT}", "pixels"),
    case("train-proprio-without-fusion", f"train dataset={{a}} model.proprio=[0] {TT}",
         "model.encoder=fusion"),
    case("train-critic-never-trained",
         f"train dataset={{a}} model.train.critic.joint=false {TT}", "finetune"),
    case("train-out-existing-ckpt", f"train dataset={{a}} out={{ck}} {TT}", "resume=true"),
    case("train-out-foreign-folder", f"train dataset={{a}} out={{plain}} {TT}", "plain"),
    case("train-out-under-a-file", f"train dataset={{a}} out={{notes}}/ck {TT}", "notes.txt"),
    case("train-resume-evil-pickle", f"train dataset={{a}} out={{evil}} resume=true {TT}", "evil"),
    case("train-resume-other-dataset", f"train dataset={{c}} out={{ck}} resume=true {TT}",
         "another dataset"),
    case("train-sweep-bad-value", "train -m dataset={a} model.train.steps=0,1", "steps=0"),
    # plan
    case("plan-no-checkpoint", "plan", "checkpoint"),
    case("plan-checkpoint-missing", "plan checkpoint={root}/no_ck", "no_ck"),
    case("plan-checkpoint-a-file", "plan checkpoint={notes}", "notes.txt"),
    case("plan-checkpoint-empty", "plan checkpoint={empty}", "empty"),
    case("plan-checkpoint-a-dataset", "plan checkpoint={a}", "a.zarr"),
    case("plan-checkpoint-evil-pickle", "plan checkpoint={evil}", "evil"),
    case("plan-other-env", f"plan checkpoint={{ck}} env=reacher {TP}", "Reacher"),
    case("plan-samples-zero", "plan checkpoint={ck} planner.samples=0", "samples"),
    case("plan-horizon-text", "plan checkpoint={ck} planner.horizon=abc", "horizon"),
    case("plan-unknown-planner", "plan checkpoint={ck} planner=nosuch", "nosuch"),
    case("plan-agent-mode", "plan checkpoint={ck} agent.mode=3", "agent.mode"),
    case("plan-actor-absent", f"plan checkpoint={{ck}} agent.mode=1 {TE}", "actor"),
    case("plan-agent-other-env", "plan checkpoint={agent} agent.mode=1 env=reacher", "Reacher"),
    case("plan-other-layout", f"plan checkpoint={{ck}} env.kwargs.layout=open {TP} {TE}", "open"),
    case("plan-planner-null", "plan checkpoint={ck} planner=null", "planner"),
    case("plan-samples-huge", f"plan checkpoint={{ck}} {TP} {TE} planner.samples=100000000000",
         "planner.samples"),
    case("plan-seeds-text", "plan checkpoint={ck} seeds=abc", "seeds='abc'"),
    case("plan-seeds-empty", "plan checkpoint={ck} seeds=[]", "seeds"),
    case("plan-seeds-negative", "plan checkpoint={ck} seeds=[-1]", "seeds"),
    case("plan-eval-pairs-zero", "plan checkpoint={ck} env.eval.pairs=0", "env.eval.pairs=0"),
    case("plan-evalset-missing", f"plan checkpoint={{ck}} env.eval.file=nosuchset {TP}",
         "nosuchset"),
    case("plan-evalset-other-env", f"plan checkpoint={{ck}} env.eval.file=reacher {TP}", "reacher"),
    case("plan-out-a-file", f"plan checkpoint={{ck}} out={{notes}} {TP} {TE}", "notes.txt"),
    case("plan-sweep-bad-value", "plan -m checkpoint={ck} planner.samples=0,8", "samples"),
    case("plan-dream-agent-not-sb3", f"plan checkpoint={{ck}} dream_agents=[{{notes}}] {TP}",
         "is not a saved stable-baselines3 model"),
    # distill
    case("dream-no-checkpoint", "dream", "checkpoint"),
    case("dream-checkpoint-evil-pickle", "dream checkpoint={evil}", "evil"),
    case("dream-algo-unknown", "dream checkpoint={ck} dream.algo=dqn", "dream.algo='dqn'"),
    case("dream-steps-zero", "dream checkpoint={ck} dream.steps=0", "dream.steps=0"),
    case("dream-net-empty", "dream checkpoint={ck} dream.net=[]", "dream.net"),
    case("dream-reached-no-tolerance", "dream checkpoint={ck} dream.goal_reward=reached",
         "dream.tolerance"),
    case("dream-other-env", "dream checkpoint={ck} env=reacher", "Reacher"),
    case("dream-dataset-other-layout", "dream checkpoint={ck} dataset={c}", "open"),
    case("dream-seeds-empty", "dream checkpoint={ck} seeds=[]", "seeds"),
    case("dream-penalty-one-predictor", "dream checkpoint={ck} dream.penalty=1",
         "one predictor"),
    case("dream-her-on-reward-task", "dream checkpoint={ck} rl_seeds=[0] rl=sac_her env=gym "
         "env.id=InvertedPendulum-v5", "InvertedPendulum"),
    case("bench-suite-unknown", "bench suite=huge", "huge"),
    case("bench-workers-zero", "bench suite=tiny workers=0", "workers=0"),
    case("bench-method-unknown", "bench suite=tiny suite.methods=[teleport]", "teleport"),
    case("cell-bad-id", "cell out={root} cell=nonsense", "TASK-METHOD-BUDGET-sSEED"),
    case("distill-no-checkpoint", "distill", "checkpoint"),
    case("distill-checkpoint-missing", "distill checkpoint={root}/no_ck", "no_ck"),
    case("distill-checkpoint-evil-pickle", "distill checkpoint={evil}", "evil"),
    case("distill-states-zero", "distill checkpoint={ck} actor.states=0", "actor.states=0"),
    case("distill-lr-zero", "distill checkpoint={ck} actor.lr=0", "actor.lr=0"),
    case("distill-future-range", "distill checkpoint={ck} actor.future=2", "actor.future=2"),
    case("distill-depth-negative", "distill checkpoint={ck} actor.depth=-1", "actor.depth=-1"),
    case("distill-budget-zero", "distill checkpoint={ck} actor.budget=0", "actor.budget=0"),
    case("distill-label-iterations", "distill checkpoint={ck} actor.label_iterations=0",
         "label_iterations=0"),
    case("distill-unknown-key", "distill checkpoint={ck} actor.nosuch=1", "nosuch"),
    case("distill-dataset-missing", "distill checkpoint={ck} dataset={root}/no.zarr", "no.zarr"),
    case("distill-dataset-other-env", f"distill checkpoint={{ck}} dataset={{b}} {TP} {TA}",
         "Reacher"),
    case("distill-dataset-other-layout", f"distill checkpoint={{ck}} dataset={{c}} {TP} {TA}",
         "open"),
    case("distill-out-existing-ckpt", f"distill checkpoint={{ck}} out={{agent}} {TP} {TA}",
         "agent"),
    case("distill-out-under-a-file", f"distill checkpoint={{ck}} out={{notes}}/x {TP} {TA}",
         "notes.txt"),
    # demo
    case("demo-episodes-zero", "demo episodes=0", "episodes=0"),
    case("demo-rl-algo", "demo rl.algo=td3", "td3"),
    case("demo-rl-seeds-negative", "demo rl_seeds=[-1]", "rl_seeds"),
    case("demo-steps-negative", "demo model.train.steps=-5", "steps=-5"),
    case("demo-rl-gamma", "demo rl.gamma=2", "rl.gamma=2"),
    case("demo-rl-net-arch", "demo rl.net_arch=[0]", "net_arch"),
    case("demo-rl-learning-rate", "demo rl.learning_rate=0", "rl.learning_rate=0"),
    case("demo-eval-budget-zero", "demo env.eval.budget=0", "env.eval.budget=0"),
    # Hopper, not HalfCheetah, whose model makes MuJoCo print a deprecation warning on stderr.
    case("demo-env-without-goal",
         f"demo env=halfcheetah env.id=Hopper-v5 episodes=2 rl_seeds=[] {TT} {TP} {TE}", "goal"),
    case("demo-rl-null", "demo rl=null", "rl"),
    case("demo-unknown-key", "demo nosuch=1", "nosuch"),
    case("demo-out-a-file", f"demo out={{notes}} episodes=2 rl_seeds=[] {TT} {TP} {TE}",
         "notes.txt"),
    # eval
    case("eval-unknown-subcommand", "eval frob", "'frob'"),
    case("eval-model-no-checkpoint", "eval model dataset={a}", "checkpoint"),
    case("eval-model-no-dataset", "eval model checkpoint={ck}", "dataset"),
    case("eval-model-checkpoint-missing", "eval model checkpoint={root}/no_ck dataset={a}",
         "no_ck"),
    case("eval-model-evil-pickle", "eval model checkpoint={evil} dataset={a}", "evil"),
    case("eval-model-dataset-junk", "eval model checkpoint={ck} dataset={junk}", "junk"),
    case("eval-model-no-episode-ends", "eval model checkpoint={ck} dataset={nometa}",
         "episode_ends"),
    case("eval-model-other-env", "eval model checkpoint={ck} dataset={b} horizon=2", "Reacher"),
    case("eval-model-other-layout", "eval model checkpoint={ck} dataset={c} horizon=2", "open"),
    case("eval-model-horizon-zero", "eval model checkpoint={ck} dataset={a} horizon=0", "horizon"),
    case("eval-model-horizon-too-long", "eval model checkpoint={ck} dataset={a} horizon=500",
         "500"),
    case("eval-model-test-fraction", "eval model checkpoint={ck} dataset={a} test_fraction=1.5",
         "1.5"),
    case("eval-model-windows-text", "eval model checkpoint={ck} dataset={a} max_windows=abc",
         "max_windows"),
    # data
    case("data-unknown-subcommand", "data frob", "'frob'"),
    case("data-info-no-path", "data info", "PATH"),
    case("data-info-missing", "data info {root}/no.zarr", "no.zarr"),
    case("data-info-a-file", "data info {notes}", "notes.txt"),
    case("data-info-empty-folder", "data info {empty}", "empty"),
    case("data-info-plain-zarr", "data info {other}", "other.zarr"),
    case("data-info-no-episode-ends", "data info {nometa}", "episode_ends"),
    case("data-validate-junk", "data validate {junk}", "junk"),
    case("data-validate-foreign-folder", "data validate {plain}", "plain"),
    case("data-validate-no-episode-ends", "data validate {nometa}", "episode_ends"),
    case("data-validate-deep-no-episode-ends", "data validate {nometa} --deep", "episode_ends"),
    case("data-validate-unknown-option", "data validate {a} --quick", "--quick"),
    case("data-repair-no-path", "data repair", "PATH"),
    case("data-repair-missing", "data repair {root}/no.zarr", "no.zarr"),
    case("data-repair-junk", "data repair {junk}", "junk"),
    case("data-repair-plain-zarr", "data repair {other}", "other.zarr"),
    case("data-repair-no-episode-ends", "data repair {nometa}", "episode_ends"),
    case("data-repair-unknown-option", "data repair {a} --force", "--force"),
    case("data-replay-episode-range", "data replay {a} 99", "99"),
    case("data-replay-episode-text", "data replay {a} x", "'x'"),
    case("data-replay-a-checkpoint", "data replay {ck}", "ck"),
    case("data-merge-too-few", "data merge {root}/m.zarr {a}", "OUT SRC SRC"),
    case("data-merge-other-envs", "data merge {root}/m.zarr {a} {b}", "Reacher"),
    case("data-merge-other-layouts", "data merge {root}/m.zarr {a} {c}", "open"),
    case("data-merge-src-missing", "data merge {root}/m.zarr {a} {root}/no.zarr", "no.zarr"),
    case("data-merge-out-exists", "data merge {a} {a2} {a2}", "already exists"),
    case("data-merge-out-under-a-file", "data merge {notes}/m.zarr {a} {a2}", "notes.txt"),
    case("data-convert-no-args", "data convert", "--from-minari"),
    case("data-convert-unknown-option", "data convert {a} --bogus x", "--bogus"),
    case("data-convert-no-id", "data convert {a} --to-minari", "--to-minari"),
    case("data-convert-both-ways", "data convert {a} --from-minari x --to-minari y", "--"),
    case("data-convert-bad-minari-id", "data convert {a} --to-minari bad --root {root}/m", "'bad'"),
    case("data-convert-from-junk", "data convert --from-minari {junk} {root}/new.zarr", "junk"),
    case("data-convert-no-episode-ends", "data convert {nometa} --to-minari x-v0 --root {root}/m",
         "episode_ends"),
    case("data-convert-root-a-file", "data convert {a} --to-minari x-v0 --root {notes}",
         "notes.txt"),
    case("data-convert-minari-missing", "data convert --from-minari {root}/nosuch {root}/new.zarr",
         "nosuch"),
    # envs
    case("envs-unknown-subcommand", "envs frob", "frob"),
    case("envs-list-extra", "envs list extra", "extra"),
    case("envs-show-no-name", "envs show --size 8", "NAME"),
    case("envs-show-unknown-task", "envs show NoSuchTask", "NoSuchTask"),
    case("envs-show-size-text", "envs show PointMaze --size abc", "abc"),
    case("envs-show-size-zero", "envs show PointMaze --size 0 --out {root}/s.png", "=0"),
    case("envs-show-out-bad-suffix", "envs show PointMaze --size 8 --out {root}/s.bogus",
         "s.bogus"),
    case("envs-show-out-no-value", "envs show PointMaze --out", "--out"),
    case("envs-show-layout", "envs show PointMaze --size 8 layout=spiral --out {root}/s.png",
         "spiral"),
    case("envs-show-out-under-a-file", "envs show PointMaze --size 8 --out {notes}/s.png",
         "notes.txt"),
    case("envs-evalsets-unknown-flag", "envs evalsets --bogus", "--bogus"),
]
# fmt: on


def test_the_table_covers_every_command_and_is_large():
    """At least 60 cases, and every command (and subcommand) has some."""
    commands = {" ".join(c.values[0][:2]) for c in CASES}
    for command in ("collect", "train", "plan", "distill", "demo"):
        assert any(c.startswith(command) for c in commands), command
    for sub in (
        "eval model",
        "data info",
        "data validate",
        "data replay",
        "data merge",
        "data convert",
        "envs list",
        "envs show",
        "envs evalsets",
    ):
        assert any(c.startswith(sub) for c in commands), sub
    assert len(CASES) >= 60


@pytest.mark.parametrize(("args", "needle"), CASES)
def test_bad_input_is_one_line_and_changes_no_file(args, needle, files, capfd):
    args = [a.format(**files) for a in args]
    before = snapshot(fixtures=files["root"], cwd=Path.cwd())
    capfd.readouterr()
    try:
        code, raised = main(args), None
    except SystemExit as e:  # a command must return its code, not exit the caller
        code, raised = e.code, f"SystemExit({e.code!r})"
    except Exception as e:  # reported below, with what was printed and written
        code, raised = None, f"{type(e).__name__}: {e}"
    out, err = capfd.readouterr()
    after = snapshot(fixtures=files["root"], cwd=Path.cwd())
    lines = [line for line in err.splitlines() if line.strip()]
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    changed = sorted(k for k in changed if k.rpartition("/")[0] not in changed)  # tops only
    hydra_app = args[0] in JOBS or args[:2] == ["eval", "model"]  # may log progress on stdout
    problems = [
        text
        for failed, text in [
            (Path(files["marker"]).exists(), "a malicious pickle ran its code"),
            (raised is not None, f"raised {raised}"),
            (code != 2, f"exit {code}, not 2"),
            (len(lines) != 1 or "error:" not in lines[0], f"{len(lines)} lines on stderr, not 1"),
            (not (lines and needle in lines[0]), f"{needle!r} not in the line"),
            ("Traceback" in err + out, "a traceback"),
            (not hydra_app and out != "", "output on stdout"),
            (bool(changed), f"files changed: {changed}"),
        ]
        if failed
    ]
    assert not problems, "; ".join(problems) + f"\nstderr:\n{err}\nstdout:\n{out[-2000:]}"
