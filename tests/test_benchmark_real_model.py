"""The real-model benchmark's smoke mode: every figure it reports, on a tiny random model."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.real_model import training_record
from benchmarks.report import ROOT
from d2l_lab.train_d2l import final_record
from d2l_lab.training import RECORD_NAME

KEYS = {
    "closed_book", "in_context", "d2l", "d2l_over_icl", "distill", "speedup_over_distill",
    "internalize_over_prefill", "needle", "peft_max_abs_logit_diff", "train_steps", "train_documents", "adapter_scale",
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


def test_a_continued_checkpoint_counts_the_training_it_started_from(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, steps, batch in ((first, 100, 4), (second, 30, 2)):
        folder.mkdir()
        (folder / RECORD_NAME).write_text(json.dumps({"step": steps, "batch_size": batch}))
    assert training_record(first) == {"train_steps": 100, "train_documents": 400}
    (second / RECORD_NAME).write_text(json.dumps(final_record(second, init=first)))
    assert training_record(second) == {"train_steps": 130, "train_documents": 460}
    assert final_record(first, init=None) == {"step": 100, "batch_size": 4}
