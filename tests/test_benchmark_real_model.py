"""The real-model benchmark's smoke mode: every figure it reports, on a tiny random model."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.report import ROOT

KEYS = {
    "closed_book", "in_context", "d2l", "d2l_over_icl", "distill", "speedup_over_distill",
    "internalize_over_prefill", "needle", "peft_max_abs_logit_diff", "train_steps", "train_documents",
}  # fmt: skip


def test_the_smoke_run_reports_every_figure(tmp_path):
    out = tmp_path / "real_model.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.real_model", "--json", str(out), "--smoke"],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    results = json.loads(out.read_text())
    assert KEYS <= results.keys()
    assert set(results["needle"]) == {"1x", "4x"}
    assert results["peft_max_abs_logit_diff"] <= 1e-4  # an exported memory is the same LoRA in PEFT
    assert results["questions"] == 4
    # distillation is scored beside D2L on the same questions: every question of the documents distilled
    assert results["distill"]["questions"] >= 1
    assert results["distill"]["d2l_same_questions"].keys() == {"contains", "exact"}
