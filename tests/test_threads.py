"""Every pipeline stage runs on one torch thread unless HTI_RL_THREADS asks for more; the count is restored."""

from __future__ import annotations

import pytest
import torch

from hti_rl.errors import HTIError
from hti_rl.threads import stage, torch_threads


@stage
def seen() -> int:
    return torch.get_num_threads()


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_stage_runs_on_one_thread_and_restores_the_count(two_threads, monkeypatch):
    monkeypatch.delenv("HTI_RL_THREADS", raising=False)
    assert seen() == 1
    assert torch.get_num_threads() == 2


def test_the_user_asks_for_more(two_threads, monkeypatch):
    monkeypatch.setenv("HTI_RL_THREADS", "3")
    assert seen() == 3
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["0", "two", "-1", ""])
def test_a_bad_setting_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("HTI_RL_THREADS", value)
    with pytest.raises(HTIError, match="HTI_RL_THREADS"):
        seen()


def test_the_pipeline_stages_are_decorated():
    from hti_rl.compare.demo import run_demo
    from hti_rl.dataset import record
    from hti_rl.evaluate import rollout_components
    from hti_rl.methods.baselines import fit_cfm, fit_regression
    from hti_rl.methods.surrogate import fit, fit_policy
    from hti_rl.quality import check_anchors
    from hti_rl.training.jobs import train_anchor

    for fn in (run_demo, record, rollout_components, fit, fit_policy, fit_regression, fit_cfm, check_anchors, train_anchor):
        assert fn.__wrapped__.__module__ == fn.__module__, fn  # functools.wraps of threads.stage
        assert fn.__code__ is stage(lambda: None).__code__, fn
