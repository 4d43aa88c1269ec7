import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from d2l_memory import AdapterError, AdapterHost, ModelError
from d2l_memory.testing import random_adapter, tiny_model, tiny_tokenizer

PROMPT = "what is the code of the city ?"


@pytest.fixture
def host(llama, tokenizer):
    host = AdapterHost(llama, tokenizer)
    for i in range(8):
        host.add(f"m{i}", random_adapter(llama, rank=4, modules=("down_proj", "v_proj"), scale=0.5, seed=i))
    return host


def test_swapping_never_copies_or_changes_base_weights(host):
    before = {name: (p.data_ptr(), p.detach().clone()) for name, p in host.model.named_parameters()}
    for selection in (["m0"], ["m1", "m2"], {"m3": 0.5, "m4": 2.0}, None):
        host.logits(torch.tensor([[2, 5, 9]]), selection)
    for name, p in host.model.named_parameters():
        assert p.data_ptr() == before[name][0] and torch.equal(p, before[name][1]), name


def test_eight_threads_each_get_their_own_adapters(host):
    sets = [["m0"], ["m1"], ["m2", "m3"], {"m4": 0.5}, ["m5", "m6", "m7"], [], ["m7", "m0"], {"m1": -1.0, "m2": 1.0}]
    reference = [host.generate(PROMPT, adapters=s, max_new_tokens=12).text for s in sets]
    assert len(set(reference)) > 4  # the sets really generate different text

    def run(i: int) -> str:
        return host.generate(PROMPT, adapters=sets[i % 8], max_new_tokens=12).text

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, range(32)))
    assert results == [reference[i % 8] for i in range(32)]


def test_stream_matches_generate_and_stops(host):
    full = host.generate(PROMPT, adapters=["m1"], max_new_tokens=10)
    assert "".join(host.stream(PROMPT, adapters=["m1"], max_new_tokens=10)) == full.text
    stop = full.text.split()[2]
    cut = host.generate(PROMPT, adapters=["m1"], max_new_tokens=10, stop=[stop])
    assert cut.stopped_by == stop and stop not in cut.text and full.text.startswith(cut.text)
    assert "".join(host.stream(PROMPT, adapters=["m1"], max_new_tokens=10, stop=[stop])) == cut.text


def test_stream_never_shows_part_of_a_stop_string_that_spans_pieces(host):
    full = host.generate(PROMPT, adapters=["m1"], max_new_tokens=10).text
    second_space = full.index(" ", full.index(" ") + 1)  # the streamer cuts pieces at spaces
    stop = full[second_space - 1 : second_space + 2]  # last letter, space, next letter
    cut = host.generate(PROMPT, adapters=["m1"], max_new_tokens=10, stop=[stop])
    assert cut.stopped_by == stop
    assert "".join(host.stream(PROMPT, adapters=["m1"], max_new_tokens=10, stop=[stop])) == cut.text


def test_stream_raises_a_generation_error_instead_of_waiting_forever(host):
    raised: list[Exception] = []

    def consume() -> None:
        try:
            list(host.stream(PROMPT, max_new_tokens=-1))  # transformers refuses this in the worker thread
        except ValueError as error:
            raised.append(error)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    consumer.join(timeout=60)
    assert not consumer.is_alive() and "max_new_tokens" in str(raised[0])


def test_a_bare_string_is_not_read_as_one_adapter_per_letter(host):
    with pytest.raises(AdapterError, match=r"list of ids \(e.g. \['m1'\]\)"):
        host.generate(PROMPT, adapters="m1")


def test_chat_messages_use_the_chat_template(host):
    result = host.generate([{"role": "user", "content": PROMPT}], max_new_tokens=4)
    assert result.prompt_tokens == host.count_tokens(PROMPT) + 4  # bos, <|user|>, <|end|>, <|assistant|>


def test_unknown_and_removed_adapters_are_clear_errors(host):
    with pytest.raises(AdapterError, match="'nope'.* not resident"):
        host.generate(PROMPT, adapters=["nope"])
    host.remove("m0")
    assert "m0" not in host and "m1" in host
    with pytest.raises(AdapterError, match="not resident"):
        host.remove("m0")


def test_adapter_for_another_model_is_refused(host):
    wider = tiny_model("llama", hidden_size=32, intermediate_size=48)
    with pytest.raises(AdapterError, match="layers.0.mlp.down_proj"):
        host.add("alien", random_adapter(wider))


def test_loads_saved_model_from_folder(tmp_path):
    model, tokenizer = tiny_model("qwen3"), tiny_tokenizer()
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    host = AdapterHost.from_pretrained(tmp_path / "m", dtype="bfloat16")
    assert host.dtype == torch.bfloat16 and host.layout.num_layers == 2
    host.add("x", random_adapter(model))  # fp32 adapter is cast to the host's dtype
    assert host.generate("the code", adapters=["x"], max_new_tokens=3).completion_tokens == 3


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="could not load model"):
        AdapterHost.from_pretrained(tmp_path / "absent")


def test_mixed_batch_rows_get_their_own_adapters(host):
    ids = torch.tensor([[2, 5, 9, 17, 33], [2, 8, 8, 40, 41], [2, 7, 6, 5, 4]])
    selections = [["m0"], None, {"m1": 0.5, "m2": 1.0}]
    mixed = host.logits(ids, host.compose_rows(selections))
    for row, selection in enumerate(selections):
        alone = host.logits(ids[row : row + 1], selection)
        torch.testing.assert_close(mixed[row : row + 1], alone, rtol=0, atol=1e-5)


def test_a_linear_subclass_such_as_a_quantized_layer_is_refused_by_name(tokenizer):
    class QuantizedLinear(torch.nn.Linear):  # what bitsandbytes' Linear4bit looks like to us
        pass

    model = tiny_model("llama")
    plain = model.model.layers[1].mlp.down_proj
    model.model.layers[1].mlp.down_proj = QuantizedLinear(plain.in_features, plain.out_features, bias=False)
    with pytest.raises(ModelError, match=r"model\.layers\.1\.mlp\.down_proj is a QuantizedLinear.*not supported"):
        AdapterHost(model, tokenizer)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch reaches a GPU")
def test_cuda_without_cuda_says_what_to_install_before_loading(tmp_path):
    from d2l_memory.embedded import load_host

    for load in (
        lambda: AdapterHost.from_pretrained(tmp_path / "nothing here", device="cuda"),
        lambda: load_host(device="cuda"),
    ):
        with pytest.raises(ModelError, match="CUDA"):
            load()
