"""fit_clot and CLOTModel: validation, determinism, exact anchors at s = 0, save/load round trip."""

import dataclasses

import pytest
import torch

from hti_rl.clot import CLOTConfig, CLOTData, CLOTModel, fit_clot
from hti_rl.clot.fit import ot_pairing
from hti_rl.errors import FileFormatError, HTIError, SpecError


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors gain nothing from threads, and on a busy CI box spinning OpenMP threads slow these
    tests tenfold."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = CLOTConfig(steps=6, batch_size=32, hidden=16, depth=2, metric_hidden=16, path_hidden=32, n_knots=3,
                  n_points=6, metric_every=2, path_every=3, path_steps=2, kde_max_ref=200, kde_neighbours=50)


def make_data(n=40, m=4, seed=0) -> CLOTData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    times = torch.tensor([0.0, 1.0, 3.0])
    y = x[None, :, None, :2] + times[:, None, None, None] + 0.1 * torch.randn(3, n, m, 2, generator=g)
    return CLOTData(x=x, times=times, y=y)


@pytest.fixture(scope="module")
def fitted() -> CLOTModel:
    # On one thread like the tests that refit it: module fixtures are built before the autouse one_thread,
    # and a fit reproduces to the bit only at a fixed thread count.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit_clot(make_data(), TINY, progress=False)
    finally:
        torch.set_num_threads(before)


def test_data_validation_names_the_fault():
    d = make_data()
    with pytest.raises(HTIError, match=r"strictly increasing"):
        CLOTData(d.x, torch.tensor([0.0, 2.0, 1.0]), d.y)
    with pytest.raises(HTIError, match=r"expected \[K=3, N=40"):
        CLOTData(d.x, d.times, d.y[:, :10])
    with pytest.raises(HTIError, match=r"expected \[N, C\]"):
        CLOTData(d.x[:, 0], d.times, d.y)
    bad = d.y.clone()
    bad[1, 2, 3, 0] = float("nan")
    with pytest.raises(HTIError, match=r"non-finite value nan at index \[1, 2, 3, 0\]"):
        CLOTData(d.x, d.times, bad)


def test_config_validation():
    with pytest.raises(SpecError, match="mode"):
        CLOTConfig(mode="maps")
    with pytest.raises(SpecError, match="metric_floor"):
        CLOTConfig(metric_floor=1.0)
    with pytest.raises(SpecError, match="steps"):
        CLOTConfig(steps=0)
    with pytest.raises(SpecError, match="transport.*'assignment' or 'semi_dual'"):
        CLOTConfig(transport="sinkhorn")
    with pytest.raises(SpecError, match="assign_samples"):
        CLOTConfig(assign_samples=0)


def test_interval_and_local_time(fitted):
    k, s = fitted.interval(torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0]))
    assert k.tolist() == [0, 0, 1, 1, 1]
    torch.testing.assert_close(s, torch.tensor([0.0, 0.5, 0.0, 0.5, 1.0]))


def test_push_at_anchor_time_is_exactly_the_input(fitted):
    d = make_data()
    y = d.y[1, :5, 0]
    out = fitted.push(y, d.x[:5], torch.full((5,), 1.0))
    assert torch.equal(out, y)
    assert not out.requires_grad


def test_push_to_given_end_reaches_it(fitted):
    d = make_data()
    y0, y1 = d.y[0, :5, 0], d.y[1, :5, 0]
    out = fitted.push(y0, d.x[:5], torch.full((5,), 1.0 - 1e-7), y_end=y1)
    torch.testing.assert_close(out, y1, atol=1e-4, rtol=0)


def test_fit_is_deterministic_for_a_seed(fitted):
    again = fit_clot(make_data(), TINY, progress=False)
    for a, b in zip(fitted.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    other = fit_clot(make_data(), dataclasses.replace(TINY, seed=1), progress=False)
    assert not torch.equal(fitted.maps[0].t_net.out.weight, other.maps[0].t_net.out.weight)


def test_save_load_round_trip_is_bit_identical(fitted, tmp_path):
    fitted.save(tmp_path / "clot.pt")
    loaded = CLOTModel.load(tmp_path / "clot.pt")
    d = make_data(seed=5)
    t = torch.linspace(0.0, 3.0, 40)
    assert torch.equal(loaded.push(d.y[0, :, 0], d.x, t), fitted.push(d.y[0, :, 0], d.x, t))
    draw = [m.sample(d.x, t, generator=torch.Generator().manual_seed(3)) for m in (fitted, loaded)]
    assert torch.equal(*draw)
    rebuilt = CLOTModel.from_state(fitted.state())
    assert torch.equal(rebuilt.push(d.y[0, :, 0], d.x, t), fitted.push(d.y[0, :, 0], d.x, t))


def test_state_holds_only_plain_values(fitted):
    def plain(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return isinstance(v, (torch.Tensor, int, float, str, bool, type(None)))

    assert plain(fitted.state())


def test_load_rejects_foreign_state(tmp_path):
    with pytest.raises(FileFormatError, match="not a CLOTModel state"):
        CLOTModel.from_state({"format": "something else"})
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(FileFormatError, match="junk.pt"):
        CLOTModel.load(tmp_path / "junk.pt")


def test_sample_uses_nearest_stored_condition(fitted):
    # At the first anchor time (s = 0) a sample is one of anchor 0's stored samples at the nearest condition.
    x = fitted.ref_x[:7] + 1e-3
    out = fitted.sample(x, torch.zeros(7), generator=torch.Generator().manual_seed(0))
    stored = fitted.ref_y[0, :7]  # [7, M, 2]
    assert all(any(torch.equal(out[i], s) for s in stored[i]) for i in range(7))


def test_endpoint_mode_needs_and_uses_the_end():
    model = fit_clot(make_data(), dataclasses.replace(TINY, mode="endpoint"), progress=False)
    assert len(model.maps) == 0
    d = make_data()
    with pytest.raises(HTIError, match="y_end"):
        model.push(d.y[0, :3, 0], d.x[:3], torch.full((3,), 0.5))
    out = model.sample(model.ref_x[:4], torch.full((4,), 1.0 - 1e-7), generator=torch.Generator().manual_seed(0))
    # Just before anchor 1, an endpoint sample has reached anchor 1's stored sample paired with it.
    assert all(any(torch.allclose(out[i], s, atol=1e-4) for s in model.ref_y[1, i]) for i in range(4))


def test_ot_pairing_is_the_optimal_assignment():
    y = torch.tensor([[[[0.0], [10.0]]], [[[9.0], [1.0]]]])  # K=2, N=1, M=2, D=1
    assert ot_pairing(y).tolist() == [[[1, 0]]]


@pytest.mark.parametrize("transport", ["assignment", "semi_dual"])
def test_logs_to_tensorboard(tmp_path, transport):
    fit_clot(make_data(), dataclasses.replace(TINY, transport=transport), log_dir=tmp_path, progress=False)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"transport/cost_0", "transport/cost_1", "loss/T_1", "metric/eigenvalue_0",
            "metric/eigenvalue_1", "path/action"} <= tags
    assert ("loss/g_0" in tags) == (transport == "semi_dual")  # the assignment has no Kantorovich potential


def test_assignment_maps_learn_the_shift_between_anchors():
    # Anchor k+1 is anchor k shifted by t_{k+1} - t_k at every condition: the OT map is that shift.
    d = make_data(n=60, m=8)
    model = fit_clot(d, dataclasses.replace(TINY, steps=150, hidden=32), progress=False)
    with torch.no_grad():
        y0, xs = d.y[0].reshape(-1, 2), d.x.repeat_interleave(8, 0)
        shift = model.y_scale * (model.maps[0]((y0 - model.y_shift) / model.y_scale, xs) - (y0 - model.y_shift) / model.y_scale)
    assert (shift - 1.0).abs().mean().item() < 0.1, shift.mean(0)


def test_one_dimensional_outputs_fit():
    d = make_data()
    model = fit_clot(CLOTData(d.x, d.times, d.y[..., :1]), TINY, progress=False)
    assert model.push(d.y[0, :3, 0, :1], d.x[:3], torch.full((3,), 0.5)).shape == (3, 1)


def test_map_mode_bounds_each_map_by_its_data_and_older_fits_load_unbounded():
    data = make_data()
    model = fit_clot(data, TINY, progress=False)
    y = (data.y - model.y_shift) / model.y_scale
    for k, transport in enumerate(model.maps):
        brute = max(float(torch.cdist(a, b).max()) for a, b in zip(y[k], y[k + 1]))
        assert transport.bounded and transport.max_shift.item() == pytest.approx(brute, rel=1e-5)
    state = model.state()
    del state["config"]["bound_maps"]  # a file written before the bound existed
    state["weights"] = {k: v for k, v in state["weights"].items() if not k.endswith("max_shift")}
    assert not any(t.bounded for t in CLOTModel.from_state(state).maps)
    assert not any(t.bounded for t in fit_clot(data, dataclasses.replace(TINY, bound_maps=False), progress=False).maps)


@pytest.mark.parametrize("m", [1, 20])
def test_assignment_fits_dirac_anchors_and_subsamples_large_sets(m):
    # M = 1: each condition's coupling is the pair itself; M = 20 > assign_samples: random 8-sample subsets.
    d = make_data(m=m)
    model = fit_clot(d, dataclasses.replace(TINY, steps=20), progress=False)
    out = model.push(d.y[0, :3, 0], d.x[:3], torch.full((3,), 0.5))
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    again = fit_clot(d, dataclasses.replace(TINY, steps=20), progress=False)
    torch.testing.assert_close(again.push(d.y[0, :3, 0], d.x[:3], torch.full((3,), 0.5)), out, rtol=0, atol=0)
