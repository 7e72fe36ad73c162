"""preprocess-chat: conversations through a tokenizer's own chat template, checked token for token
against transformers' apply_chat_template on tokenizers built here, with their label masks."""

import json
from pathlib import Path

import numpy as np
import pytest

from neox_data.chat import ChatOptions, ChatTokenizer, build_chat
from neox_data.cli import EXIT_USAGE, main
from neox_data.gpt_dataset import IGNORE_INDEX
from neox_data.token_file import TokenFile
from neox_testing import write_tokenizer_files

transformers = pytest.importorskip("transformers", reason="preprocess-chat needs transformers")

# ChatML as Qwen 2 writes it (the tokens it uses are the qwen2 family's added tokens)
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Llama 3's layout: BOS, then a header per turn, each turn closed by <|eot_id|>
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
# what each template writes around an assistant turn's content, once the turn has begun
TURN_END = {"qwen2": "<|im_end|>\n", "llama3": "<|eot_id|>"}
TEMPLATES = {"qwen2": CHATML, "llama3": LLAMA3}

CONVERSATION = [
    {"role": "system", "content": "You answer in one line."},
    {"role": "user", "content": "What is a token?"},
    {"role": "assistant", "content": "A piece of text the model reads."},
    {"role": "user", "content": "And a tokenizer?"},
    {"role": "assistant", "content": "It cuts text into tokens."},
]


def chat_tokenizer_dir(root: Path, family: str, template: str) -> Path:
    directory = write_tokenizer_files(family, root / family)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = template
    config_path.write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module", params=sorted(TEMPLATES))
def family_dir(request, tmp_path_factory):
    family = request.param
    return family, chat_tokenizer_dir(tmp_path_factory.mktemp("chat"), family, TEMPLATES[family])


def reference(directory):
    return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def labelled_text(reference_tokenizer, tokens, labels):
    """The text of the labelled tokens, each labelled run followed by '|'."""
    runs, run = [], []
    for token, label in zip(tokens, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            run.append(token)
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    return "|".join(reference_tokenizer.decode(r) for r in runs)


def test_the_tokens_are_apply_chat_templates_then_eos(family_dir):
    _, directory = family_dir
    ref = reference(directory)
    tokens, labels = build_chat(CONVERSATION, ChatTokenizer(directory), ChatOptions())
    expected = ref.apply_chat_template(CONVERSATION, tokenize=True)
    expected = expected if isinstance(expected, list) else list(expected["input_ids"])
    assert tokens == [*expected, ref.eos_token_id]
    assert len(labels) == len(tokens)


def test_only_the_assistant_turns_and_the_eos_are_labelled(family_dir):
    """Each assistant turn from its content to its end marker (the generation prompt before it
    is the user turn's), and the EOS after the last one."""
    family, directory = family_dir
    ref = reference(directory)
    tokens, labels = build_chat(CONVERSATION, ChatTokenizer(directory), ChatOptions())
    end, eos = TURN_END[family], ref.eos_token
    first, second = CONVERSATION[2]["content"], CONVERSATION[4]["content"]
    assert labelled_text(ref, tokens, labels) == f"{first}{end}|{second}{end}{eos}"


def test_only_last_labels_the_last_turn(family_dir):
    family, directory = family_dir
    ref = reference(directory)
    options = ChatOptions(only_last=True)
    tokens, labels = build_chat(CONVERSATION, ChatTokenizer(directory), options)
    expected = f"{CONVERSATION[4]['content']}{TURN_END[family]}{ref.eos_token}"
    assert labelled_text(ref, tokens, labels) == expected


def test_no_mask_labels_every_token_and_for_rm_only_the_eos(family_dir):
    _, directory = family_dir
    tokenizer = ChatTokenizer(directory)
    tokens, labels = build_chat(CONVERSATION, tokenizer, ChatOptions(mask=False))
    assert labels == tokens
    tokens, labels = build_chat(CONVERSATION, tokenizer, ChatOptions(for_rm=True))
    assert labels == [IGNORE_INDEX] * (len(tokens) - 1) + [tokenizer.eos_id]


def test_another_generation_role_is_learned_instead(family_dir):
    _, directory = family_dir
    ref = reference(directory)
    tokens, labels = build_chat(
        CONVERSATION, ChatTokenizer(directory), ChatOptions(generation_role="user")
    )
    text = labelled_text(ref, tokens, labels)
    assert CONVERSATION[1]["content"] in text and CONVERSATION[3]["content"] in text
    assert CONVERSATION[2]["content"] not in text and not text.endswith(ref.eos_token)


def error_lines(capsys):
    """What the run said on stderr besides its progress bar."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("neox-data")]


def write_lines(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_preference_pairs_write_a_token_and_a_label_file_per_key(tmp_path, family_dir):
    """GPT-NeoX's pairwise data: chosen and rejected conversations, document for document."""
    _, directory = family_dir
    prompt = CONVERSATION[:2]
    records = [
        {
            "chosen": [*prompt, {"role": "assistant", "content": f"good answer {i}"}],
            "rejected": [*prompt, {"role": "assistant", "content": f"bad {i}"}],
        }
        for i in range(3)
    ]
    data = write_lines(tmp_path / "pairs.jsonl", records)
    out = tmp_path / "out" / "pairs"
    code = main(
        [
            "preprocess-chat",
            "--input",
            str(data),
            "--jsonl-keys",
            "chosen",
            "rejected",
            "--tokenizer-path",
            str(directory),
            "--output-prefix",
            str(out),
        ]
    )
    assert code == 0
    tokenizer = ChatTokenizer(directory)
    for key in ("chosen", "rejected"):
        tokens = TokenFile(f"{out}_{key}_document")
        labels = TokenFile(f"{out}_{key}_label_document")
        assert len(tokens) == len(labels) == 3
        assert labels.dtype == np.int32
        for i, record in enumerate(records):
            expected = build_chat(record[key], tokenizer, ChatOptions())
            assert tokens[i].tolist() == expected[0]
            assert labels[i].tolist() == expected[1]


def test_kto_rewards_go_to_the_labelled_tokens_of_a_reward_file(tmp_path, family_dir, capsys):
    """--reward-key: each conversation's reward (true +1, false -1, a number) on its labelled
    tokens, 0 elsewhere, float32, document for document; a bad reward stops the run."""
    _, directory = family_dir
    rewards = [True, False, 0.5]
    records = [
        {"messages": [CONVERSATION[1], {"role": "assistant", "content": f"answer {i}"}], "ok": r}
        for i, r in enumerate(rewards)
    ]
    data = write_lines(tmp_path / "kto.jsonl", records)
    out = tmp_path / "out" / "kto"
    args = ["preprocess-chat", "--input", str(data), "--tokenizer-path", str(directory)]
    assert main([*args, "--output-prefix", str(out), "--reward-key", "ok"]) == 0
    labels = TokenFile(f"{out}_messages_label_document")
    found = TokenFile(f"{out}_messages_reward_document")
    assert found.dtype == np.float32 and found.sizes.tolist() == labels.sizes.tolist()
    for i, expected in enumerate((1.0, -1.0, 0.5)):
        labelled = labels[i] != IGNORE_INDEX
        assert labelled.any() and (found[i][labelled] == expected).all()
        assert (found[i][~labelled] == 0).all()
    bad = write_lines(tmp_path / "bad.jsonl", [dict(records[0], ok="yes")])
    code = main(
        [
            *args[:2],
            str(bad),
            *args[3:],
            "--output-prefix",
            str(tmp_path / "b"),
            "--reward-key",
            "ok",
        ]
    )
    assert code != 0 and "must be true, false or a number" in capsys.readouterr().err
    assert not list(tmp_path.glob("b_*"))


BAD = {
    "no assistant turn": ([CONVERSATION[:2]], "no 'assistant' turn"),
    "an empty turn": ([[CONVERSATION[1], {"role": "assistant", "content": "  "}]], "is empty"),
    "a turn without content": ([[{"role": "user"}]], "turn 0 has no string 'content'"),
    "not a list": (["hello"], "expected a list of turns"),
    "an empty conversation": ([[]], "got an empty list"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_conversation_stops_the_run_naming_it_and_writes_nothing(
    tmp_path, family_dir, capsys, case
):
    _, directory = family_dir
    conversations, words = BAD[case]
    good = {"messages": CONVERSATION}
    data = write_lines(tmp_path / "chat.jsonl", [good, *({"messages": c} for c in conversations)])
    out = tmp_path / "out" / "chat"
    out.parent.mkdir()
    argv = ["preprocess-chat", "--input", str(data), "--tokenizer-path", str(directory)]
    code = main([*argv, "--output-prefix", str(out)])
    err = error_lines(capsys)
    assert code == EXIT_USAGE
    assert len(err) == 1
    assert f"{data}:2 [messages]: " in err[0] and words in err[0]
    assert list(out.parent.iterdir()) == []  # not even the good conversation's files


@pytest.mark.parametrize(
    "template, words",
    [
        ("{{ raise_exception('only user and assistant roles') }}", "does not render"),
        # the turn count first: a shorter conversation is not the start of the whole one
        (
            "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
            "does not render turn by turn",
        ),
    ],
)
def test_a_template_that_fails_or_does_not_render_turn_by_turn_is_refused(
    tmp_path, capsys, template, words
):
    directory = chat_tokenizer_dir(tmp_path, "qwen2", template)
    data = write_lines(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}])
    out = tmp_path / "chat"
    code = main(
        [
            "preprocess-chat",
            "--input",
            str(data),
            "--tokenizer-path",
            str(directory),
            "--output-prefix",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and f"{data}:1 [messages]: " in err and words in err
    assert not list(tmp_path.glob("chat_*"))


def test_bad_lines_tokenizers_and_flags_are_refused_in_one_line(tmp_path, capsys, family_dir):
    _, directory = family_dir
    data = write_lines(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}])
    (tmp_path / "broken.jsonl").write_text('{"messages": [\n')
    plain = write_tokenizer_files("qwen2", tmp_path / "plain")  # no chat template
    base = ["preprocess-chat", "--output-prefix", str(tmp_path / "x")]
    cases = [
        (["--input", str(tmp_path / "broken.jsonl"), "--tokenizer-path", str(directory)], ":1: "),
        (["--input", str(data), "--tokenizer-path", str(plain)], "has no chat template"),
        (["--input", str(data), "--tokenizer-path", str(tmp_path / "typo")], "no such directory"),
        (
            ["--input", str(data), "--tokenizer-path", str(directory), "--jsonl-keys", "chat"],
            "missing key 'chat'",
        ),
        (
            ["--input", str(data), "--tokenizer-path", str(directory), "--no-mask", "--for-rm"],
            "exclude each other",
        ),
    ]
    for argv, words in cases:
        assert main([*base, *argv]) == EXIT_USAGE, words
        err = error_lines(capsys)
        assert len(err) == 1 and words in err[0], err
    assert not list(tmp_path.glob("x_*"))


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, capsys, family_dir):
    _, directory = family_dir
    data = write_lines(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}])
    argv = ["preprocess-chat", "--input", str(data), "--tokenizer-path", str(directory)]
    argv += ["--output-prefix", str(tmp_path / "c")]
    assert main(argv) == 0
    assert main(argv) == EXIT_USAGE
    assert "exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
