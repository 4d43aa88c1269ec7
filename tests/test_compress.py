import itertools

import pytest
import torch

from d2l_memory import AdapterError, LoRAAdapter, LoRAWeights, ModuleKey, concat
from d2l_memory.compress import compress, relative_error
from d2l_memory.testing import random_adapter


def _chunks(model, count: int, rank: int = 4) -> LoRAAdapter:
    """A document-like adapter: ``count`` random chunk adapters concatenated along the rank."""
    return concat(random_adapter(model, rank=rank, name=f"chunk{i}", seed=i) for i in range(count))


def test_exact_when_the_target_rank_covers_the_true_rank(llama):
    memory = random_adapter(llama, rank=4, name="memory")
    doubled = concat([memory, memory.renamed("again")])  # stored rank 8, true rank 4
    squeezed = compress(doubled, 4)
    assert squeezed.max_rank == 4 and squeezed.part_names == ["compressed"]
    assert relative_error(doubled, squeezed) < 1e-5
    for key in doubled.modules:
        torch.testing.assert_close(squeezed.delta(key), 2 * memory.delta(key), rtol=1e-4, atol=1e-6)


def test_modules_within_the_rank_are_kept_bit_identical(llama):
    memory = random_adapter(llama, rank=4, name="memory")
    kept = compress(memory, 8)
    assert kept.part_names == ["memory"]
    for key in memory.modules:
        assert kept.weights[key] is memory.weights[key]
    assert relative_error(memory, kept) < 1e-6  # zero up to float32 round-off


def test_error_decreases_with_the_rank(llama):
    document = _chunks(llama, 6)  # rank 24
    errors = [relative_error(document, compress(document, rank)) for rank in (1, 2, 4, 8, 16, 24)]
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    assert errors[0] < 1.0 and errors[-1] < 1e-5


def test_matches_a_full_svd():
    torch.manual_seed(0)
    key = ModuleKey(0, "mlp.down_proj")
    A, B = torch.randn(12, 20, dtype=torch.float64), torch.randn(16, 12, dtype=torch.float64)  # [r, d_in], [d_out, r]
    adapter = LoRAAdapter.single("x", {key: LoRAWeights(A, B)})
    squeezed = compress(adapter, 5, name="five")

    U, S, Vh = torch.linalg.svd(B @ A)
    best = U[:, :5] @ torch.diag(S[:5]) @ Vh[:5]
    torch.testing.assert_close(squeezed.delta(key), best)
    assert squeezed.part_names == ["five"] and squeezed.dtype == torch.float64
    eckart_young = (S[5:].square().sum() / S.square().sum()).sqrt().item()
    assert relative_error(adapter, squeezed) == pytest.approx(eckart_young, rel=1e-6)
    # A has orthonormal rows; B carries the singular values.
    torch.testing.assert_close(squeezed.weights[key].A @ squeezed.weights[key].A.T, torch.eye(5, dtype=torch.float64))


def test_rank_larger_than_the_module_dimensions(llama):
    document = _chunks(llama, 50)  # rank 200 on down_proj [64, 128]: more rows than either dimension
    squeezed = compress(document, 8)
    assert squeezed.max_rank == 8
    for key in document.modules:
        S = torch.linalg.svdvals(document.delta(key))
        best = (S[8:].square().sum() / S.square().sum()).sqrt().item()
        single = LoRAAdapter({key: document.weights[key]})
        assert relative_error(single, compress(single, 8)) == pytest.approx(best, rel=1e-3)


def test_half_precision_and_invalid_rank(llama):
    document = _chunks(llama, 3).to(dtype=torch.bfloat16)
    squeezed = compress(document, 4)
    assert squeezed.dtype == torch.bfloat16 and squeezed.max_rank == 4
    with pytest.raises(AdapterError):
        compress(document, 0)
