"""A real worker process driven by the real tritonclient[http] client."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from inference.zoo.digits import load_split

pytestmark = pytest.mark.slow


@pytest.fixture
def worker(start_worker):  # type: ignore[no-untyped-def]
    return start_worker(models=["digits_mlp_small", "digits_linear"], max_batch_size=16, batch_timeout_ms=2)


def test_health_and_metadata(worker) -> None:  # type: ignore[no-untyped-def]
    client = httpclient.InferenceServerClient(worker.url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits_mlp_small")
    meta = client.get_model_metadata("digits_mlp_small")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert not client.is_model_ready("no_such_model")


def test_triton_model_config_follows_the_batcher(worker) -> None:  # type: ignore[no-untyped-def]
    # Triton tools (perf_analyzer, the client's get_model_config) read the batch axis from here.
    import httpx

    client = httpclient.InferenceServerClient(worker.url)
    cfg = client.get_model_config("digits_mlp_small")
    assert cfg["max_batch_size"] == 16
    assert cfg["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [64]}]
    assert cfg["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [10]}]
    assert cfg["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
    r = httpx.put(f"{worker.admin_url}/internal/models/digits_mlp_small/batching", json={"max_batch_size": 32})
    assert r.status_code == 200
    assert client.get_model_config("digits_mlp_small")["max_batch_size"] == 32
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_config("nope")
    with pytest.raises(InferenceServerException, match="no version '2'"):
        client.get_model_config("digits_mlp_small", model_version="2")


@pytest.mark.parametrize("binary", [False, True])
def test_infer_json_and_binary_classifies_real_digits(worker, binary: bool) -> None:  # type: ignore[no-untyped-def]
    _, x_test, _, y_test = load_split()
    x, y = x_test[:16], y_test[:16]
    client = httpclient.InferenceServerClient(worker.url)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
    result = client.infer("digits_mlp_small", [inp], outputs=[out], request_id="req-7")
    probs = result.as_numpy("probabilities")
    assert probs.shape == (16, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=1) == y).mean() >= 0.9
    assert result.get_response()["id"] == "req-7"


def test_binary_outputs_by_default_when_none_requested(worker) -> None:  # type: ignore[no-untyped-def]
    client = httpclient.InferenceServerClient(worker.url)
    inp = httpclient.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    result = client.infer("digits_linear", [inp])  # tritonclient asks for binary_data_output
    assert result.as_numpy("probabilities").shape == (1, 10)
    assert "binary_data_size" in result.get_response()["outputs"][0]["parameters"]


def test_errors_are_decoded_by_the_client(worker) -> None:  # type: ignore[no-untyped-def]
    client = httpclient.InferenceServerClient(worker.url)
    bad = httpclient.InferInput("input", [1, 63], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 63), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer("digits_mlp_small", [bad])
    assert "shape [1, 63]" in e.value.message() and "[-1, 64]" in e.value.message()
    assert e.value.status() == "400"
    wrong_type = httpclient.InferInput("input", [1, 64], "FP64")
    wrong_type.set_data_from_numpy(np.zeros((1, 64), dtype=np.float64))
    with pytest.raises(InferenceServerException, match="datatype FP64, the model expects FP32"):
        client.infer("digits_mlp_small", [wrong_type])
    ok = httpclient.InferInput("input", [1, 64], "FP32")
    ok.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer("ghost", [ok])
    assert e.value.status() == "404" and "unknown model 'ghost'" in e.value.message()
    # ... and the worker keeps serving.
    assert client.infer("digits_mlp_small", [ok]).as_numpy("probabilities").shape == (1, 10)
