"""Reading each decoder layer's input without running the last layer."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from d2l_memory import AdapterHost, ModelError
from d2l_memory.internalize import layer_inputs
from d2l_memory.layer_capture import capture_layer_inputs, install_capture
from d2l_memory.testing import SUPPORTED_ARCHITECTURES, tiny_model

IDS = torch.tensor([[2, 5, 6, 7, 9, 11], [2, 8, 4, 0, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize("architecture", SUPPORTED_ARCHITECTURES)
def test_captured_inputs_are_the_hidden_states_entering_each_layer(architecture):
    host = AdapterHost(tiny_model(architecture, num_layers=3))
    with torch.no_grad():
        states = host.model.get_decoder()(input_ids=IDS, attention_mask=MASK.long(), output_hidden_states=True)
    expected = torch.stack(states.hidden_states[:3], dim=1)  # [b, L, s, h]
    torch.testing.assert_close(layer_inputs(host, IDS, MASK), expected, rtol=0, atol=0)


def test_a_forward_outside_a_capture_runs_every_layer_as_before():
    hooked = AdapterHost(tiny_model("llama", num_layers=3, seed=1)).model
    plain = tiny_model("llama", num_layers=3, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(hooked(input_ids=IDS).logits, plain(input_ids=IDS).logits, rtol=0, atol=0)


def test_layers_the_forward_never_runs_are_a_model_error():
    model, elsewhere = tiny_model("llama"), tiny_model("llama", seed=1)
    layers = elsewhere.get_decoder().layers
    install_capture(layers)
    with pytest.raises(ModelError, match="read 0 of 2 layer inputs from a stack of 2"):
        capture_layer_inputs(model.get_decoder(), layers, input_ids=IDS)


def test_a_capture_in_one_thread_leaves_forwards_in_another_alone():
    host = AdapterHost(tiny_model("llama", num_layers=3))
    with torch.no_grad():
        expected = host.model(input_ids=IDS).logits
        inputs = layer_inputs(host, IDS, MASK)

    def agrees(check) -> bool:
        with torch.no_grad():
            return all(check() for _ in range(20))

    def capture() -> bool:
        return torch.equal(layer_inputs(host, IDS, MASK), inputs)

    def forward() -> bool:  # a capture hook firing here would stop this forward with an exception
        return torch.equal(host.model(input_ids=IDS).logits, expected)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [pool.submit(agrees, check) for check in (capture, forward)]
        assert [r.result() for r in results] == [True, True]  # result() re-raises a thread's exception


def test_a_capture_of_the_first_layers_stops_before_the_rest_run():
    host = AdapterHost(tiny_model("llama", num_layers=4))
    ran: list[int] = []
    for index, layer in enumerate(host.model.get_decoder().layers):
        layer.register_forward_pre_hook(lambda *_, index=index: ran.append(index))
    with torch.no_grad():
        every = layer_inputs(host, IDS, MASK)
        ran.clear()
        first_two = layer_inputs(host, IDS, MASK, 2)
    assert ran == [0]  # the hook of layer 1 records its input and ends the forward before it runs
    torch.testing.assert_close(first_two, every[:, :2], rtol=0, atol=0)
    with pytest.raises(ModelError, match="cannot read the inputs of 5 layers of a stack of 4"):
        layer_inputs(host, IDS, MASK, 5)
