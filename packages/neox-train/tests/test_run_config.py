import dataclasses

import pytest
import yaml

from neox_train import IGNORED_KEYS, ConfigError, all_keys, load_run_config

# The shape of GPT-NeoX's own config files: JSON-like YAML, dashed keys, comments.
NEOX_STYLE = """
# a Pythia-style model
{
  "pipe-parallel-size": 1,
  "model-parallel-size": 1,
  "num-layers": 6,
  "hidden-size": 512,
  "num-attention-heads": 8,
  "seq-length": 2048,
  "max-position-embeddings": 2048,
  "pos-emb": "rotary",
  "rotary-pct": 0.25,
  "no-weight-tying": true,
  "gpt-j-residual": true,
  "scaled-upper-triang-masked-softmax-fusion": true,
  "bias-gelu-fusion": true,
  "init_method": "small_init",
  "output_layer_init_method": "wang_init",
  "optimizer": {"type": "Adam", "params": {"lr": 0.001, "betas": [0.9, 0.95], "eps": 1.0e-8}},
  "min_lr": 0.0001,
  "zero_optimization": {"stage": 1, "allgather_partitions": true,
                        "allgather_bucket_size": 500000000, "overlap_comm": true,
                        "reduce_scatter": true, "reduce_bucket_size": 500000000,
                        "contiguous_gradients": true, "cpu_offload": false},
  "train_micro_batch_size_per_gpu": 32,
  "data-impl": "mmap",
  "checkpoint-activations": true,
  "checkpoint-num-layers": 1,
  "partition-activations": true,
  "gradient_clipping": 1.0,
  "weight-decay": 0.1,
  "hidden-dropout": 0,
  "attention-dropout": 0,
  "fp16": {"fp16": true, "enabled": true, "loss_scale": 0, "loss_scale_window": 1000,
           "initial_scale_power": 12, "hysteresis": 2, "min_loss_scale": 1},
  "train-iters": 143000,
  "lr-decay-iters": 143000,
  "distributed-backend": "nccl",
  "lr-decay-style": "cosine",
  "warmup": 0.01,
  "checkpoint-factor": 1000,
  "eval-interval": 143000,
  "eval-iters": 10,
  "log-interval": 10,
  "steps_per_print": 10,
  "wall_clock_breakdown": true,
  "tokenizer-type": "HFTokenizer",
  "vocab-file": "20B_tokenizer.json",
}
"""


@pytest.fixture
def neox_file(tmp_path):
    path = tmp_path / "pythia.yml"
    path.write_text(NEOX_STYLE)
    return path


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_gpt_neox_style_file_loads_into_typed_sections(neox_file):
    loaded = load_run_config([neox_file])
    run = loaded.run
    assert (run.model.num_layers, run.model.rotary_pct, run.model.gpt_j_residual) == (6, 0.25, True)
    assert run.model.init_method == "small_init"
    assert run.optimizer.optimizer.params.betas == (0.9, 0.95)
    assert run.optimizer.optimizer.params.eps == 1e-8
    assert run.optimizer.lr_decay_style == "cosine"
    assert run.parallel.zero_optimization.stage == 1
    assert run.precision.dtype == "fp16"
    assert run.training.checkpoint_activations
    assert run.checkpoint.checkpoint_factor == 1000
    assert run.batch(8).global_batch == 256
    ignored = {line.split(":")[0] for line in loaded.ignored}
    assert ignored == {
        "scaled_upper_triang_masked_softmax_fusion",
        "bias_gelu_fusion",
        "partition_activations",
        "distributed_backend",
        "steps_per_print",
        "wall_clock_breakdown",
    }


def test_sections_are_frozen(neox_file):
    run = load_run_config([neox_file]).run
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.training.train_iters = 5  # type: ignore[misc]


def test_resolved_config_round_trips(neox_file, tmp_path):
    run = load_run_config([neox_file]).run
    resolved = write(tmp_path, "resolved.yml", yaml.safe_dump(run.to_yaml_dict()))
    assert load_run_config([resolved]).run == run


def test_a_typo_names_the_file_and_the_closest_key(neox_file, tmp_path):
    typo = write(tmp_path, "typo.yml", "num_attention_head: 8\n")
    with pytest.raises(ConfigError) as err:
        load_run_config([neox_file, typo])
    assert (
        str(err.value)
        == f"{typo}: unknown key 'num_attention_head'; did you mean 'num_attention_heads'?"
    )


def test_a_nested_typo_is_found_too(neox_file, tmp_path):
    typo = write(tmp_path, "typo.yml", "optimizer: {params: {lrr: 0.1}}\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'optimizer.params.lrr'; did you mean 'optimizer.params.lr'"
    ):
        load_run_config([neox_file, typo])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hidden_size: big\n", "hidden_size must be an integer, got 'big'"),
        ("hidden_size: 1.5\n", "hidden_size must be an integer, got 1.5"),
        ("gpt_j_residual: 'yes'\n", "gpt_j_residual must be true or false, got 'yes'"),
        (
            "pos_emb: rotory\n",
            "pos_emb must be one of 'rotary', 'alibi', 'learned', 'sinusoidal', 'none', "
            "got 'rotory'",
        ),
        (
            "optimizer: {params: {betas: [0.9]}}\n",
            "optimizer.params.betas must be a list of 2 values",
        ),
        ("zero_optimization: 1\n", "zero_optimization must be a mapping of stage"),
        (
            "num_attention_heads: 7\n",
            r"hidden_size \(512\) must be divisible by num_attention_heads \(7\)",
        ),
        ("bf16: {enabled: true}\n", "fp16.enabled and bf16.enabled are both true"),
        ("zero_optimization: {stage: 4}\n", "stage must be 0, 1, 2 or 3, got 4"),
        (
            "warmup: 2.5\n",
            r"warmup is a fraction of lr_decay_iters in \[0, 1\] or a whole number of steps, "
            "got 2.5",
        ),
        (
            "sparsity_config: {block: 16}\n",
            "sparsity_config is a GPT-NeoX key for sparse attention",
        ),
        (
            "attention_config: [[[local], 6]]\n",
            "attention_config asks for GPT-NeoX's local attention",
        ),
        ("attention_config: [[[nope], 6]]\n", "attention_config must be one of 'global', 'flash'"),
        (
            "attention_config: [[[global], 5]]\n",
            "attention_config describes 5 layers but num_layers is 6",
        ),
        (
            "num_kv_heads: 3\n",
            r"num_attention_heads \(8\) must be a multiple of num_kv_heads \(3\)",
        ),
        (
            "preemption_signals: [SIGTERM, SIGKILL]\n",
            "preemption_signals: 'SIGKILL' is not a signal a process can catch",
        ),
        ("preemption_signals: [USR1]\n", "preemption_signals: 'USR1' is not a signal"),
        ("preemption_grace_period: -5\n", "preemption_grace_period must be seconds >= 0"),
    ],
)
def test_bad_values_say_what_and_where(neox_file, tmp_path, text, message):
    bad = write(tmp_path, "bad.yml", text)
    with pytest.raises(ConfigError, match=message) as err:
        load_run_config([neox_file, bad])
    assert "\n" not in str(err.value)


def test_required_keys(tmp_path):
    path = write(tmp_path, "a.yml", "num_layers: 2\noptimizer: {type: Adam, params: {lr: 0.1}}\n")
    with pytest.raises(ConfigError, match="required key 'train_iters' is missing"):
        load_run_config([path])


def test_world_size_must_divide_by_the_parallel_sizes(neox_file, tmp_path):
    mp = write(tmp_path, "mp.yml", "model_parallel_size: 2\n")
    run = load_run_config([neox_file, mp]).run
    with pytest.raises(ConfigError, match=r"world size 3 is not divisible by .* = 2"):
        run.batch(3)


SEQUENCE_PARALLEL = "model_parallel_size: 2\nsequence_parallel: true\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            SEQUENCE_PARALLEL + "seq_length: 2047\n",
            r"sequence_parallel splits the sequence over the tensor-parallel ranks: seq_length "
            r"\(2047\) must be divisible by model_parallel_size \(2\)",
        ),
        (
            SEQUENCE_PARALLEL + "eval_tasks: [lambada_openai]\n",
            "eval_tasks during training with sequence_parallel",
        ),
        (
            SEQUENCE_PARALLEL + "curriculum_learning: {enabled: true, min_difficulty: 64, "
            "max_difficulty: 2048, schedule_config: {total_curriculum_step: 10, "
            "difficulty_step: 9}}\n",
            "every curriculum_learning sequence length to be a multiple of 2; 9 is not",
        ),
        (
            SEQUENCE_PARALLEL + "curriculum_learning: {enabled: true, min_difficulty: 64, "
            "max_difficulty: 2048, schedule_type: fixed_discrete, "
            "schedule_config: {difficulty: [64, 1001, 2048], max_step: [5, 10]}}\n",
            "every curriculum_learning sequence length to be a multiple of 2; 1001 is not",
        ),
    ],
)
def test_sequence_parallel_refuses_what_it_cannot_split(neox_file, tmp_path, text, message):
    bad = write(tmp_path, "sp.yml", text)
    with pytest.raises(ConfigError, match=message):
        load_run_config([neox_file, bad])


def test_sequence_parallel_is_a_parallel_switch(neox_file, tmp_path):
    """Accepted with tensor and pipeline parallelism; at tensor-parallel size 1 it changes
    nothing, so a seq_length the ranks could not split is fine there."""
    pipeline = write(tmp_path, "pp.yml", SEQUENCE_PARALLEL + "pipe_parallel_size: 2\n")
    parallel = load_run_config([neox_file, pipeline]).run.parallel
    assert parallel.sequence_parallel and parallel.splits_sequence
    single = write(tmp_path, "one.yml", "sequence_parallel: true\nseq_length: 2047\n")
    parallel = load_run_config([neox_file, single]).run.parallel
    assert parallel.sequence_parallel and not parallel.splits_sequence
    curriculum = "curriculum_learning: {enabled: true, schedule_config: {difficulty_step: 8}}\n"
    fine = write(tmp_path, "fine.yml", SEQUENCE_PARALLEL + curriculum)
    assert load_run_config([neox_file, fine]).run.parallel.splits_sequence


def test_every_key_has_one_home_and_a_doc():
    owners = all_keys()
    assert not set(owners) & set(IGNORED_KEYS)
    for cls in set(owners.values()):
        for field in dataclasses.fields(cls):
            assert field.metadata.get("doc"), f"{cls.__name__}.{field.name} has no doc"
