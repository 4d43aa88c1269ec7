from benchmarks.d2l_scale import main, markdown


def test_long_document_benchmark_runs_on_a_tiny_shape(tmp_path):
    """The GPU benchmark's code path (chunked internalization vs one prefill) on a CPU-sized model."""
    results = main(
        ["--json", str(tmp_path / "scale.json"), "--no-markdown", "--shape", "tiny", "--device", "cpu"]
        + ["--tokens", "300", "1000", "--chunk", "128", "--chunk-batch", "3"]
    )
    assert (tmp_path / "scale.json").is_file()
    rows = results["by_tokens"]
    assert set(rows) == {"300", "1000"}
    # 1000 tokens make 8 chunks; each chunk's adapter is rank 8 on 2 layers' down_proj (128 -> 64).
    assert rows["1000"]["adapter_bytes_bf16"] == 8 * 2 * 8 * (128 + 64) * 2
    assert rows["1000"]["kv_cache_bytes_bf16"] == 1000 * 2 * 2 * 2 * 16 * 2
    assert rows["300"]["prefill_s"] > 0 and rows["300"]["internalize_peak_gib"] is None
    assert "| 1000 |" in markdown(results)


def test_long_document_benchmark_measures_the_published_architecture_too(tmp_path):
    results = main(
        ["--json", str(tmp_path / "scale.json"), "--no-markdown", "--shape", "tiny", "--device", "cpu"]
        + ["--tokens", "300", "--chunk", "128", "--hypernet", "published"]
    )
    assert results["hypernet"] == "published"
    assert results["by_tokens"]["300"]["adapter_bytes_bf16"] == 3 * 2 * 8 * (128 + 64) * 2
    assert "published Doc-to-LoRA architecture" in markdown(results)
