"""MuJoCo envs: the known `settotalmass` deprecation is silenced, other MuJoCo warnings reach Python's
warnings, and no MUJOCO_LOG.TXT lands in the working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mujoco")
REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import mujoco
from hti_rl.envs.mujoco_log import handle_warning
from hti_rl.spec.load import load_task
spec = load_task(sys.argv[1])
for _ in range(3):
    spec.make_env(1.0).close()
print("HANDLER:", mujoco.get_mju_user_warning() is handle_warning)
"""


def test_halfcheetah_envs_are_quiet_and_leave_no_log_file(tmp_path):
    spec = tmp_path / "envs" / "cheetah.yaml"
    spec.parent.mkdir()
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "ppo.yml").write_text((REPO / "agents" / "ppo.yml").read_text())
    spec.write_text("name: cheetah\nenv_id: HalfCheetah-v5\nenv_kwargs: {ctrl_cost_weight: 1}\n"
                    "reward: {components: {forward: {info: reward_forward}, ctrl: {info: reward_ctrl}}, weighted: ctrl}\n"
                    "weight_scale: log\nanchors: [0.1, 1]\nheld_out: [0.3]\nhyperparams_key: reacher\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", "import sys\n" + SCRIPT, str(spec)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "settotalmass" not in done.stdout + done.stderr
    assert "HANDLER: True" in done.stdout
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_other_mujoco_warnings_reach_python_warnings(caplog):
    import logging

    from hti_rl.envs.mujoco_log import handle_warning

    with pytest.warns(RuntimeWarning, match="MuJoCo: Nan, Inf or huge value in QACC"):
        handle_warning("Nan, Inf or huge value in QACC at DOF 0. The simulation is unstable.")
    with caplog.at_level(logging.DEBUG, logger="hti_rl.envs.mujoco_log"):
        handle_warning("compiler attribute 'settotalmass' is deprecated and will be removed")
    assert "settotalmass" in caplog.text


def test_lqr_envs_do_not_import_mujoco():
    code = ("import sys; from conftest import write_lqr_spec; from pathlib import Path; import tempfile\n"
            "from hti_rl.spec.load import load_task\n"
            "d = Path(tempfile.mkdtemp()); load_task(write_lqr_spec(d)).make_env(1.0)\n"
            "print('mujoco' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("False")
