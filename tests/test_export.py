"""`hti-rl export`: one ONNX / TorchScript graph equals SurrogatePolicy.predict(deterministic=True);
bad input gets one `error:` line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic_surrogate

from hti_rl.cli import main
from hti_rl.methods.export import export

pytestmark = pytest.mark.usefixtures("one_thread")
ort = pytest.importorskip("onnxruntime")  # in the dev and export extras


@pytest.fixture(scope="module", params=[dict(algo="ppo", normalize=True), dict(algo="sac", normalize=True), dict(mode="map")],
                ids=["ppo-vecnormalize", "sac-squashed", "map-mode"])
def surrogate(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "surrogate.zip"
    synthetic_surrogate(6, 3, **request.param).save(path)
    from hti_rl.methods.surrogate import SurrogatePolicy

    return path, SurrogatePolicy.load(path)


def states(n: int = 1000) -> np.ndarray:
    return (3 * np.random.default_rng(0).normal(size=(n, 6))).astype(np.float32)  # some push actions onto the Box bounds


@pytest.mark.parametrize("weight", [0.3, 1.0, 4.0])
def test_onnxruntime_equals_predict_on_1000_states(surrogate, tmp_path, weight):
    path, policy = surrogate
    out = export(path, weight, "onnx", tmp_path / "policy.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    obs = states()
    policy.set_weight(weight)
    expected = policy.predict(obs, deterministic=True)[0]
    actions = session.run(None, {"obs": obs})[0]
    assert actions.shape == expected.shape and actions.dtype == np.float32
    np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-5)
    assert expected.std(axis=0).min() > 1e-3  # the actions vary with the state: the comparison means something
    meta = session.get_modelmeta().custom_metadata_map
    assert float(meta["weight"]) == weight


def test_torchscript_equals_predict(surrogate, tmp_path):
    path, policy = surrogate
    out = export(path, 2.5, "torchscript", tmp_path / "policy.pt")
    graph = torch.jit.load(str(out))
    obs = states(200)
    policy.set_weight(2.5)
    with torch.no_grad():
        np.testing.assert_allclose(graph(torch.from_numpy(obs)).numpy(), policy.predict(obs, deterministic=True)[0], rtol=0, atol=1e-6)


def test_cli_writes_the_graph(surrogate, tmp_path, capsys):
    path, _ = surrogate
    assert main(["export", str(path), "--weight", "3", "-o", str(tmp_path / "p.onnx")]) == 0
    assert (tmp_path / "p.onnx").stat().st_size > 1000 and "wrote" in capsys.readouterr().out
    assert main(["export", str(path), "--weight", "3", "--format", "torchscript"]) == 0
    assert path.with_name("surrogate_w=3.pt").exists()


@pytest.mark.parametrize("args, message", [
    (["--weight", "50"], "range"),
    (["--weight", "nan"], "finite"),
    (["--weight", "3", "--format", "tflite"], "unknown export format 'tflite'"),
])
def test_bad_input_is_one_error_line(surrogate, tmp_path, capsys, args, message):
    path, _ = surrogate
    assert main(["export", str(path), *args, "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err
    assert not (tmp_path / "x").exists()


def test_a_file_that_is_not_a_surrogate_is_refused(tmp_path, capsys):
    bogus = tmp_path / "model.zip"
    bogus.write_bytes(b"PK\x03\x04 not a surrogate")
    assert main(["export", str(bogus), "--weight", "1", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "not a surrogate" in err
