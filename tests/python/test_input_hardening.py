"""Bad input found at start-up, named in one line with exit code 2 (issue 22): token ids outside
the vocabulary (checked with one scan of the data, cached), NaN and infinite float flags, FIFOs
given as files, allocation failures, and malformed JSON we parse."""
import json
import os
import subprocess

import numpy as np
import pytest
import user_errors
from test_cli_errors import TINY, write_indexed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLED_TOKENIZER = os.path.join(ROOT, "data", "kjv_bpe4k_tokenizer.json")  # 4096 tokens


def run(build_dir, *flags, timeout=60):
    return subprocess.run([str(build_dir / "megatron"), "train", *flags], capture_output=True, text=True,
                          timeout=timeout)


def hf_tokenizer_flags():
    return ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", BUNDLED_TOKENIZER]


def docs_with(value, dtype=np.uint16):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 200, size=40).astype(np.int64) for _ in range(30)]
    docs[17][5] = value  # one bad token deep in the data
    return [d.astype(dtype) for d in docs]


def test_token_id_past_the_tokenizer_vocabulary_is_named_at_start(build_dir, tmp_path):
    write_indexed(tmp_path / "d", docs_with(5000))
    r = run(build_dir, *TINY, "--data-path", str(tmp_path / "d"), *hf_tokenizer_flags(), "--split", "100,0,0")
    user_errors.assert_user_error(r, "d.bin", "token id 5000", "4096 tokens")


def test_negative_token_id_is_named_at_start(build_dir, tmp_path):
    write_indexed(tmp_path / "d", docs_with(-3, np.int32), dtype=np.int32)
    r = run(build_dir, *TINY, "--data-path", str(tmp_path / "d"), "--vocab-size", "300", "--split", "100,0,0")
    user_errors.assert_user_error(r, "d.bin", "token id -3 is negative")


def test_vocab_size_too_small_for_the_data_is_named(build_dir, tmp_path):
    write_indexed(tmp_path / "d", docs_with(250))
    r = run(build_dir, *TINY, "--data-path", str(tmp_path / "d"), "--vocab-size", "200", "--split", "100,0,0")
    user_errors.assert_user_error(r, "--vocab-size 200", "largest token id is 250")


def test_token_range_is_cached_beside_the_indices_and_rescanned_when_the_data_changes(build_dir, tmp_path):
    write_indexed(tmp_path / "d", docs_with(150))
    r = run(build_dir, *TINY, "--data-path", str(tmp_path / "d"), "--vocab-size", "200", "--split", "100,0,0")
    assert r.returncode == 0, r.stderr
    caches = list((tmp_path / "cache" / "GPTDataset_indices").glob("*-token_id_range.txt"))
    assert len(caches) == 1 and caches[0].read_text() == "0 199\n"
    # The data rewritten with a bad id (a new mtime and size): scanned again, not trusted from the cache.
    docs = docs_with(900) + [np.arange(10, dtype=np.uint16)]
    write_indexed(tmp_path / "d", docs)
    r = run(build_dir, *TINY, "--data-path", str(tmp_path / "d"), "--vocab-size", "200", "--split", "100,0,0")
    user_errors.assert_user_error(r, "--vocab-size 200", "largest token id is 900")


@pytest.mark.parametrize("flag", ["--lr", "--hidden-dropout", "--clip-grad", "--init-method-std", "--adam-eps",
                                  "--weight-decay"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_float_flags_are_refused(build_dir, flag, value):
    r = run(build_dir, *TINY, flag, value)
    user_errors.assert_user_error(r, flag, "expected a finite number", value)


@pytest.mark.parametrize("what", ["data", "tokenizer"])
def test_a_fifo_given_as_a_file_is_refused_not_waited_on(build_dir, tmp_path, what):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    if what == "data":
        os.mkfifo(tmp_path / "fifo.idx")
        flags = ["--data-path", str(fifo)]
    else:
        flags = ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", str(fifo)]
    r = run(build_dir, *TINY, *flags, timeout=20)
    user_errors.assert_user_error(r, "fifo", "not a regular file (a FIFO)")


def test_a_model_too_large_for_memory_is_named_not_aborted(build_dir):
    r = run(build_dir, "--num-layers", "1", "--hidden-size", "4000000",
            "--num-attention-heads", "2", "--seq-length", "8", "--micro-batch-size", "1", "--global-batch-size", "1",
            "--train-iters", "1", "--eval-iters", "0")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot allocate" in lines[0] and "host memory" in lines[0], r.stderr


def test_deeply_nested_tokenizer_json_is_an_error_not_a_stack_overflow(build_dir, tmp_path):
    tok = json.load(open(BUNDLED_TOKENIZER))
    path = tmp_path / "tokenizer.json"
    # The nesting written as text (json.dumps would recurse as deep).
    head = '{"type": "Sequence", "pretokenizers": [' * 100000
    tail = ']}' * 100000
    tok["pre_tokenizer"] = "__X__"
    text = json.dumps(tok).replace('"__X__"', head + '{"type": "ByteLevel", "add_prefix_space": false}' + tail)
    path.write_text(text)
    r = run(build_dir, *TINY, "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", str(path))
    user_errors.assert_user_error(r, "tokenizer.json", "nested")


def lm_losses(stdout):
    return [line.split("lm loss:")[1].split("|")[0].strip() for line in stdout.splitlines() if "lm loss:" in line]


@pytest.mark.parametrize("damage", ["flip_in_range", "flip_header", "truncate", "huge_value"])
def test_corrupt_dataset_index_cache_is_rebuilt_and_training_is_unchanged(build_dir, tmp_path, damage):
    rng = np.random.default_rng(1)
    write_indexed(tmp_path / "d", [rng.integers(0, 200, size=int(rng.integers(5, 60))) for _ in range(50)])
    flags = [*TINY[:-4], "--train-iters", "4", "--eval-iters", "0", "--log-interval", "1",
             "--data-path", str(tmp_path / "d"), "--vocab-size", "200", "--split", "100,0,0"]
    first = run(build_dir, *flags)
    assert first.returncode == 0, first.stderr
    cache = tmp_path / "cache" / "GPTDataset_indices"
    shuffle = next(cache.glob("*-shuffle_index.npy"))
    data = bytearray(shuffle.read_bytes())
    if damage == "flip_in_range":  # two entries swapped: still a valid permutation, only the checksum tells
        a, b = 128, 136
        data[a:a + 8], data[b:b + 8] = data[b:b + 8], data[a:a + 8]
    elif damage == "flip_header":
        data[20] ^= 0x55
    elif damage == "truncate":
        data = data[:len(data) // 2]
    else:
        data[128:136] = np.int64(1 << 40).tobytes()
    shuffle.write_bytes(bytes(data))
    again = run(build_dir, *flags)
    assert again.returncode == 0, again.stderr
    assert lm_losses(again.stdout) == lm_losses(first.stdout) and len(lm_losses(first.stdout)) == 4
    assert shuffle.read_bytes() != bytes(data)  # rewritten


def megatron(build_dir, *words, cwd=None):
    return subprocess.run([str(build_dir / "megatron"), *words], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_a_mistyped_subcommand_is_named_with_the_closest_one(build_dir):
    r = megatron(build_dir, "trian", "--num-layers", "2")
    user_errors.assert_user_error(r, "unknown subcommand 'trian'", "did you mean 'train'?", "preprocess")


def test_an_empty_data_path_is_named(build_dir):
    user_errors.assert_user_error(run(build_dir, *TINY, "--data-path", ""), "--data-path", "empty dataset prefix")


def test_blend_weights_near_the_top_of_the_double_range_still_blend(build_dir, tmp_path):
    write_indexed(tmp_path / "a", docs_with(1))
    write_indexed(tmp_path / "b", docs_with(2))
    r = run(build_dir, *TINY, "--data-path", "1e308", str(tmp_path / "a"), "1.7e308", str(tmp_path / "b"),
            "--vocab-size", "200", "--split", "100,0,0")
    assert r.returncode == 0, r.stderr


def test_preprocess_with_a_json_key_given_twice_is_refused_before_writing(build_dir, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "hello world"}\n')
    r = megatron(build_dir, "preprocess", "--input", str(tmp_path / "in.jsonl"), "--output-prefix",
                 str(tmp_path / "pp"), "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model",
                 BUNDLED_TOKENIZER, "--json-keys", "text", "text")
    user_errors.assert_user_error(r, "--json-keys", '"text" is given twice')
    assert list(tmp_path.glob("pp*")) == []


def test_a_longer_seq_length_than_the_checkpoints_position_table_names_the_checkpoint(build_dir, tmp_path):
    base = ["--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--micro-batch-size", "1",
            "--global-batch-size", "1", "--eval-iters", "0"]
    r = run(build_dir, *base, "--seq-length", "16", "--train-iters", "1", "--save", str(tmp_path / "ck"))
    assert r.returncode == 0, r.stderr
    r = run(build_dir, *base, "--seq-length", "32", "--train-iters", "2", "--load", str(tmp_path / "ck"))
    user_errors.assert_user_error(r, "--seq-length 32", "position embeddings for 16 positions", "iter_0000001")
