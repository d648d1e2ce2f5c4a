"""`megatron preprocess` and `megatron merge-datasets` write what Megatron's tools write: read
back by an independent numpy reader of the .bin/.idx layout, with the token ids of Hugging Face
tokenizers and Megatron's document/sequence structure."""
import gzip
import json
import os
import subprocess

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from test_indexed_dataset_numpy import read_index, read_sequences  # noqa: E402

DOCS = [
    {"text": "In the beginning God created the heaven and the earth.", "title": ["Genesis", "1"]},
    {"text": "", "title": []},  # an empty text is an empty document (no sequence)
    {"text": "It's 2024: ünïcödé, 日本語, emoji 😀 and   spaces\n\nnewlines", "title": ["x"]},
    {"text": "<|endoftext|> inside", "title": ["", "y"]},
] * 50


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([d["text"] for d in DOCS], trainer)
    tok.save(str(d / "tokenizer.json"))
    return str(d / "tokenizer.json")


def write_jsonl(path, docs, extra_lines=()):
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def megatron(build_dir, *args):
    return subprocess.run([str(build_dir / "megatron"), *args], capture_output=True, text=True)


def preprocess(build_dir, inp, prefix, tok_path, *extra):
    return megatron(build_dir, "preprocess", "--input", str(inp), "--output-prefix", str(prefix), "--tokenizer-type",
                    "HuggingFaceTokenizer", "--tokenizer-model", tok_path, *extra)


def test_output_matches_hf_ids_and_megatron_document_structure(build_dir, tmp_path, tok_path):
    write_jsonl(tmp_path / "in.jsonl", DOCS)
    r = preprocess(build_dir, tmp_path / "in.jsonl", tmp_path / "out", tok_path, "--json-keys", "text", "title",
                   "--append-eod", "--workers", "3")
    assert r.returncode == 0, r.stderr
    assert "docs/s" in r.stderr and "MB/s" in r.stderr
    tok = Tokenizer.from_file(tok_path)
    eod = tok.token_to_id("<|endoftext|>")
    for key in ("text", "title"):
        prefix = str(tmp_path / f"out_{key}_document")
        dtype, lengths, pointers, doc_idx = read_index(prefix)
        assert dtype == np.uint16
        seqs, _ = read_sequences(prefix)
        assert len(doc_idx) == len(DOCS) + 1
        for d, doc in enumerate(DOCS):
            sentences = doc[key] if isinstance(doc[key], list) else [doc[key]]
            want = [tok.encode(s).ids for s in sentences]
            want = [w for w in want if w]  # empty sentences make no sequence
            if want:
                want[-1] = want[-1] + [eod]
            got = [seqs[s].tolist() for s in range(doc_idx[d], doc_idx[d + 1])]
            assert got == want, (key, d)


def test_gzip_input_and_worker_count_give_identical_bytes(build_dir, tmp_path, tok_path):
    write_jsonl(tmp_path / "in.jsonl", DOCS * 20)
    with open(tmp_path / "in.jsonl", "rb") as f, gzip.open(tmp_path / "in.jsonl.gz", "wb") as g:
        g.write(f.read())
    outs = []
    for name, inp, workers in [("a", "in.jsonl", "1"), ("b", "in.jsonl.gz", "4")]:
        r = preprocess(build_dir, tmp_path / inp, tmp_path / name, tok_path, "--workers", workers, "--append-eod")
        assert r.returncode == 0, r.stderr
        outs.append([(tmp_path / f"{name}_text_document{ext}").read_bytes() for ext in (".bin", ".idx")])
    assert outs[0] == outs[1]


def test_large_vocabulary_writes_int32_tokens(build_dir, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "1 70000 65535"}\n{"text": "5"}\n')
    r = megatron(build_dir, "preprocess", "--input", str(tmp_path / "in.jsonl"), "--output-prefix",
                 str(tmp_path / "o"), "--tokenizer-type", "NullTokenizer", "--vocab-size", "70000", "--append-eod")
    assert r.returncode == 0, r.stderr
    seqs, _ = read_sequences(str(tmp_path / "o_text_document"))
    assert seqs[0].dtype == np.int32
    assert [s.tolist() for s in seqs] == [[1, 70000, 65535, 70000], [5, 70000]]


@pytest.mark.parametrize("bad_line,why", [("{not json", "not valid JSON"), ('{"body": "x"}', 'no key "text"'),
                                          ('{"text": 3}', "not a string"), ("[1, 2]", "not a JSON object")])
def test_bad_line_is_one_error_with_its_line_number_and_no_output(build_dir, tmp_path, tok_path, bad_line, why):
    write_jsonl(tmp_path / "in.jsonl", DOCS * 30, [bad_line, '{"text": 5}'])
    r = preprocess(build_dir, tmp_path / "in.jsonl", tmp_path / "out", tok_path, "--workers", "2")
    assert r.returncode == 2
    lines = r.stderr.strip().split("\n")
    assert len(lines) == 1 and f"in.jsonl:{len(DOCS) * 30 + 1}:" in lines[0] and why in lines[0]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("out")]


def test_skip_bad_lines_leaves_them_out(build_dir, tmp_path, tok_path):
    write_jsonl(tmp_path / "in.jsonl", DOCS[:3], ["{oops", '{"text": null}'])
    r = preprocess(build_dir, tmp_path / "in.jsonl", tmp_path / "out", tok_path, "--skip-bad-lines")
    assert r.returncode == 0, r.stderr
    assert "in.jsonl:4: not valid JSON" in r.stderr and "2 bad lines" in r.stderr
    _, _, _, doc_idx = read_index(str(tmp_path / "out_text_document"))
    assert len(doc_idx) == 4


def test_merge_datasets_concatenates_documents(build_dir, tmp_path, tok_path):
    write_jsonl(tmp_path / "a.jsonl", DOCS[:5])
    write_jsonl(tmp_path / "b.jsonl", DOCS[5:12])
    for n in "ab":
        assert preprocess(build_dir, tmp_path / f"{n}.jsonl", tmp_path / n, tok_path, "--append-eod").returncode == 0
    write_jsonl(tmp_path / "ab.jsonl", DOCS[:12])
    assert preprocess(build_dir, tmp_path / "ab.jsonl", tmp_path / "ab", tok_path, "--append-eod").returncode == 0
    r = megatron(build_dir, "merge-datasets", "--input", str(tmp_path / "a_text_document"), str(tmp_path / "b_text_document"),
                 "--output-prefix", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"merged{ext}").read_bytes() == (tmp_path / f"ab_text_document{ext}").read_bytes()


def test_merge_of_different_dtypes_is_refused(build_dir, tmp_path, tok_path):
    (tmp_path / "n.jsonl").write_text('{"text": "1 2"}\n')
    megatron(build_dir, "preprocess", "--input", str(tmp_path / "n.jsonl"), "--output-prefix", str(tmp_path / "big"),
             "--tokenizer-type", "NullTokenizer", "--vocab-size", "70000")
    write_jsonl(tmp_path / "a.jsonl", DOCS[:2])
    preprocess(build_dir, tmp_path / "a.jsonl", tmp_path / "a", tok_path)
    r = megatron(build_dir, "merge-datasets", "--input", str(tmp_path / "a_text_document"),
                 str(tmp_path / "big_text_document"), "--output-prefix", str(tmp_path / "m"))
    assert r.returncode == 2 and "dtype" in r.stderr and r.stderr.count("\n") == 1
