from neox_eval.cli import main


def test_the_entry_point_exists_and_says_it_is_not_ready(capsys):
    assert main(["run.yml", "--eval_tasks", "lambada_openai"]) == 2
    assert "not available in this release yet" in capsys.readouterr().err
