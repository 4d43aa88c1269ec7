import pytest
import torch

from d2l_memory.testing import tiny_model, tiny_tokenizer


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def llama():
    return tiny_model("llama")


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()
