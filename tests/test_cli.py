from d2l_memory.cli import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("internalized") == 4 and "accuracy: closed book" in out
    assert "exported the remaining memories" in out
    assert (tmp_path / "peft" / "adapter_config.json").exists()
