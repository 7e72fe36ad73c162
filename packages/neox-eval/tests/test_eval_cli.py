"""`neox-eval` as a user runs it: one process, and two under a launcher (tensor parallel)."""

import json
import subprocess
import sys

import pytest
import yaml

from neox_eval.cli import main
from neox_testing import start_ranks

from conftest import make_checkpoint


def config(tmp_path, **values):
    path = tmp_path / "eval.yml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_results_are_printed_as_lm_evals_table_and_written_as_json(
    tmp_path, run_dir, tasks, capsys
):
    out = tmp_path / "out" / "results.json"
    argv = [str(config(tmp_path, load=str(run_dir)))]
    argv += ["--eval_tasks", str(tasks["neox_mc"]), str(tasks["neox_ppl"])]
    argv += ["--limit", "3", "--batch_size", "2", "--output_path", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "|Version|Filter|n-shot|" in printed
        and "neox_mc" in printed
        and "word_perplexity" in printed
    )
    results = json.loads(out.read_text())
    assert results["n-samples"]["neox_mc"]["effective"] == 3
    assert 0.0 <= results["results"]["neox_mc"]["acc,none"] <= 1.0
    assert "samples" not in results


def test_a_missing_checkpoint_is_one_line(tmp_path, tasks, capsys):
    assert main([str(config(tmp_path, seq_length=8)), "--eval_tasks", str(tasks["neox_mc"])]) == 2
    err = capsys.readouterr().err
    assert (
        err == "neox-eval: error: no checkpoint: pass --checkpoint DIR or set `load` in a config\n"
    )
    assert main(["--checkpoint", str(tmp_path), "--eval_tasks", str(tasks["neox_mc"])]) == 2
    assert "holds no neox checkpoint" in capsys.readouterr().err


def test_a_misspelt_task_name_is_one_line_with_the_close_names(run_dir, tasks, capsys):
    argv = ["--checkpoint", str(run_dir), "--eval_tasks", "neox_mcc"]
    assert main([*argv, "--include_path", str(tasks["neox_mc"].parent)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neox-eval: error: unknown lm-eval task 'neox_mcc'")
    assert "did you mean neox_mc" in err and err.count("\n") == 1


def launch(world_size, argv):
    """`python -m neox_eval ARGV` as a launcher starts it on `world_size` processes."""
    command = [sys.executable, "-m", "neox_eval", *argv]
    procs = start_ranks(command, world_size, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    return [out for out, _ in outputs]


def test_under_a_launcher_the_model_is_tensor_parallel_with_the_same_numbers(
    tmp_path, run_dir, tasks
):
    """Two processes evaluate a pipeline-layout copy of the checkpoint at tensor-parallel
    size 2; the single process reads the one-file layout. Same documents, same numbers."""
    make_checkpoint(tmp_path / "pipeline", layout="pipeline")
    task_args = ["--eval_tasks", *(str(tasks[t]) for t in ("neox_mc", "neox_ppl", "neox_gen"))]
    common = [*task_args, "--limit", "4", "--batch_size", "2", "--log_samples"]
    one = tmp_path / "one.json"
    assert main(["--checkpoint", str(run_dir), *common, "--output_path", str(one)]) == 0
    two = tmp_path / "two.json"
    printed = launch(
        2, ["--checkpoint", str(tmp_path / "pipeline"), *common, "--output_path", str(two)]
    )
    # rank 0 reports, rank 1 is silent
    assert "|Version|Filter|n-shot|" in printed[0] and printed[1] == ""
    single, parallel = json.loads(one.read_text()), json.loads(two.read_text())
    for task, metrics in single["results"].items():
        for key, value in metrics.items():
            if isinstance(value, float):
                assert parallel["results"][task][key] == pytest.approx(value, rel=1e-5), key
    for task in single["samples"]:
        ours = [s["filtered_resps"] for s in single["samples"][task]]
        theirs = [s["filtered_resps"] for s in parallel["samples"][task]]
        assert len(ours) == len(theirs) == 4
        assert _close(ours, theirs), task


def _close(a, b):
    """Per-document responses equal up to 1e-4 in every number, equal in everything else."""
    if isinstance(a, float):
        return abs(a - b) <= 1e-4
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_a_key_repeated_in_one_config_file_is_one_line_naming_both_lines(tmp_path, capsys):
    path = tmp_path / "eval.yml"
    path.write_text("seq_length: 8\nload: a\nseq-length: 16\n")
    assert main([str(path), "--eval_tasks", "neox_mc"]) == 2
    assert capsys.readouterr().err == (
        f"neox-eval: error: {path}: key 'seq_length' appears twice "
        "(lines 1 and 3: seq_length and seq-length are one key)\n"
    )
