from benchmarks.d2l_long import markdown, measure


def test_a_long_document_is_internalized_and_its_needle_found():
    """The benchmark's measurement in this process, on a document small enough for the test suite."""
    row = measure(4096, seed=0)
    assert 0.9 * 4096 <= row["tokens"] <= 1.1 * 4096
    assert row["chunks"] >= row["tokens"] / 512
    assert row["adapter_mib"] == round(row["chunks"] * 90 / 1024, 1)  # 90 KiB per chunk in half precision
    assert row["needle_found"] and row["peak_rss_growth_mib"] >= 0
    assert "| found |" in markdown({"by_tokens": [row], "machine": "test"})
