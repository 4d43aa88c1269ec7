from t2l_skills import DEFAULT_CHECKPOINT_DIR, TextToLoRA


def test_shipped_checkpoint_loads():
    hypernet = TextToLoRA.load(DEFAULT_CHECKPOINT_DIR)
    assert hypernet.config.head == "L" and hypernet.config.rank == 8
