"""The GPTDataset indices `megatron train` builds (read back from its .npy index cache) are the
ones Megatron-Core builds: a reference written here from Megatron's gpt_dataset.py and
helpers.cpp semantics, with numpy's RandomState, must agree element for element. Also: blends
ask each dataset for ceil(n * w * 1.005) samples, the bundled corpus is what our preprocess
makes of its text with its tokenizer.json, and --eod-mask-loss needs a tokenizer."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_cli_errors import write_indexed

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = ["--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "16",
         "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "30", "--eval-interval", "10",
         "--eval-iters", "2", "--log-interval", "100"]


def reference_indices(sizes, docs, num_samples, seq_length, seed):
    """Megatron-Core GPTDataset._build_document_sample_shuffle_indices, add_extra_token = 1."""
    docs = np.asarray(docs, dtype=np.int32)
    tokens_per_epoch = int(np.sum(sizes[docs]))
    num_epochs, tokens = 1, tokens_per_epoch
    while tokens < num_samples * seq_length + 1:
        num_epochs += 1
        tokens += tokens_per_epoch
    separate = False
    if num_epochs > 1:
        sans = ((num_epochs - 1) * tokens_per_epoch - 1) // seq_length
        per_epoch = (tokens_per_epoch - 1) // seq_length
        separate = num_samples - sans < int(0.80 * per_epoch)
    rng = np.random.RandomState(seed)

    def document_index(epochs, sep):
        if not sep or epochs == 1:
            d = np.mgrid[0:epochs, 0:len(docs)][1]
            d[:] = docs
            d = d.reshape(-1).astype(np.int32)
            rng.shuffle(d)
            return d
        return np.concatenate([document_index(epochs - 1, False), document_index(1, False)])

    doc_idx = document_index(num_epochs, separate)
    n = (num_epochs * tokens_per_epoch - 1) // seq_length
    sample_idx = np.zeros((n + 1, 2), dtype=np.int64)
    pos, offset = 0, 0
    for s in range(1, n + 1):
        remaining = seq_length + 1
        while remaining != 0:
            length = sizes[doc_idx[pos]] - offset
            remaining -= length
            if remaining <= 0:
                offset += remaining + length - 1
                remaining = 0
            else:
                if pos == len(doc_idx) - 1:
                    offset = sizes[doc_idx[pos]] - 1
                    break
                pos += 1
                offset = 0
        sample_idx[s] = (pos, offset)
    first = ((num_epochs - 1) * tokens_per_epoch - 1) // seq_length if separate else n
    shuffle = np.arange(first, dtype=np.int64)
    rng.shuffle(shuffle)
    if first < n:
        last = np.arange(first, n, dtype=np.int64)
        rng.shuffle(last)
        shuffle = np.concatenate([shuffle, last])
    return doc_idx, sample_idx, shuffle


def cached(cache, split):
    desc = glob.glob(os.path.join(cache, f"*-GPTDataset-{split}-description.txt"))
    assert len(desc) == 1, os.listdir(cache)
    p = desc[0][: -len("description.txt")]
    text = open(desc[0]).read()
    requested = int(text.split("samples requested: ")[1].split("\n")[0])
    return (np.load(p + "document_index.npy"), np.load(p + "sample_index.npy"), np.load(p + "shuffle_index.npy"),
            requested)


def train(build_dir, *flags):
    r = subprocess.run([str(build_dir / "megatron"), "train", *MODEL, *flags], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("seed", [1234, 7])
def test_indices_equal_megatrons(build_dir, tmp_path, seed):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 500, size=int(rng.integers(1, 60))) for _ in range(40)]
    write_indexed(tmp_path / "d", docs)
    cache = str(tmp_path / "cache")
    train(build_dir, "--data-path", str(tmp_path / "d"), "--split", "80,20,0", "--data-cache-path", cache,
          "--seed", str(seed))
    sizes = np.array([len(d) for d in docs], dtype=np.int32)
    # train: 30 iterations x 4 samples; valid: (30 // 10 + 1) * 2 evaluations x 4 samples
    for split, rng_docs, n in (("train", range(0, 32), 120), ("valid", range(32, 40), 32)):
        doc_idx, sample_idx, shuffle, requested = cached(cache, split)
        assert requested == n
        want = reference_indices(sizes, list(rng_docs), n, 16, seed)
        np.testing.assert_array_equal(doc_idx, want[0])
        np.testing.assert_array_equal(sample_idx, want[1])
        np.testing.assert_array_equal(shuffle, want[2])


def test_second_run_reuses_the_cache(build_dir, tmp_path):
    docs = [np.arange(i, i + 30) % 100 for i in range(20)]
    write_indexed(tmp_path / "d", docs)
    cache = str(tmp_path / "cache")
    train(build_dir, "--data-path", str(tmp_path / "d"), "--data-cache-path", cache, "--split", "90,10,0")
    stamp = {f: os.path.getmtime(os.path.join(cache, f)) for f in os.listdir(cache)}
    train(build_dir, "--data-path", str(tmp_path / "d"), "--data-cache-path", cache, "--split", "90,10,0")
    assert {f: os.path.getmtime(os.path.join(cache, f)) for f in os.listdir(cache)} == stamp


def test_default_cache_is_beside_the_data(build_dir, tmp_path):
    write_indexed(tmp_path / "d", [np.arange(50) for _ in range(10)])
    train(build_dir, "--data-path", str(tmp_path / "d"), "--split", "90,10,0")
    assert glob.glob(str(tmp_path / "cache" / "GPTDataset_indices" / "*-GPTDataset-train-shuffle_index.npy"))


def test_blend_asks_each_dataset_for_its_share_plus_half_a_percent(build_dir, tmp_path):
    for name in "ab":
        write_indexed(tmp_path / name, [np.arange(40) for _ in range(30)])
    cache = tmp_path / "cache"
    train(build_dir, "--data-path", "0.25", str(tmp_path / "a"), "0.75", str(tmp_path / "b"), "--split", "90,10,0",
          "--data-cache-path", str(cache))
    requested = sorted(int(open(f).read().split("samples requested: ")[1].split("\n")[0])
                       for f in glob.glob(str(cache / "*-train-description.txt")))
    assert requested == [31, 91]  # ceil(120 * 0.25 * 1.005), ceil(120 * 0.75 * 1.005)


def test_per_split_paths(build_dir, tmp_path):
    for name in "abc":
        write_indexed(tmp_path / name, [np.arange(40) for _ in range(10)])
    cache = tmp_path / "cache"
    train(build_dir, "--train-data-path", str(tmp_path / "a"), "--valid-data-path", "1", str(tmp_path / "b"),
          "2", str(tmp_path / "c"), "--data-cache-path", str(cache))
    assert len(glob.glob(str(cache / "*-train-description.txt"))) == 1
    assert len(glob.glob(str(cache / "*-valid-description.txt"))) == 2


def test_eod_mask_loss_needs_a_tokenizer(build_dir, tmp_path):
    write_indexed(tmp_path / "d", [np.arange(40) for _ in range(10)])
    r = subprocess.run([str(build_dir / "megatron"), "train", *MODEL, "--data-path", str(tmp_path / "d"),
                        "--eod-mask-loss"], capture_output=True, text=True)
    assert r.returncode == 2 and "--eod-mask-loss" in r.stderr and r.stderr.count("\n") == 1


def test_bundled_corpus_is_our_preprocess_of_its_text(build_dir, tmp_path):
    """data/kjv_bpe4k_text_document was made by the `tokenizers` package (data/make_bpe_data.py);
    our preprocess of the same chapters with the same tokenizer.json gives the same bytes."""
    sys.path.insert(0, os.path.join(ROOT, "data"))
    from make_bpe_data import bundled_chapters  # decoded with tokenizers: our encoder must give the ids back
    with open(tmp_path / "kjv.jsonl", "w") as f:
        for text in bundled_chapters():
            f.write(json.dumps({"text": text}) + "\n")
    r = subprocess.run([str(build_dir / "megatron"), "preprocess", "--input", str(tmp_path / "kjv.jsonl"),
                        "--output-prefix", str(tmp_path / "kjv"), "--tokenizer-type", "HuggingFaceTokenizer",
                        "--tokenizer-model", os.path.join(ROOT, "data", "kjv_bpe4k_tokenizer.json"), "--append-eod",
                        "--workers", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for ext in (".bin", ".idx"):
        ours = open(tmp_path / f"kjv_text_document{ext}", "rb").read()
        assert ours == open(os.path.join(ROOT, "data", f"kjv_bpe4k_text_document{ext}"), "rb").read()
