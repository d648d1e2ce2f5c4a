"""The .bin/.idx layout, checked from outside: an independent numpy reader and writer that
follow Megatron's byte layout (megatron/core/datasets/indexed_dataset.py) read the bundled
data and exchange datasets with the C++ reader/writer through tests/data/dump_indexed_dataset.

The helper is found as $MT_DUMP_INDEXED_DATASET or build*/tests/dump_indexed_dataset; the
tests that need it are skipped when it is not built.
"""
import glob
import math
import os
import subprocess

import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUNDLED = os.path.join(ROOT, "data", "kjv_bpe4k_text_document")
EOD = 0  # <|endoftext|> in data/kjv_bpe4k_tokenizer.json
MAGIC = b"MMIDIDX\x00\x00"
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
          8: np.uint16}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}


def read_index(prefix):
    raw = open(prefix + ".idx", "rb").read()
    assert raw[:9] == MAGIC
    version = np.frombuffer(raw, "<u8", 1, 9)[0]
    code = raw[17]
    s, d = (int(x) for x in np.frombuffer(raw, "<u8", 2, 18))
    lengths = np.frombuffer(raw, "<i4", s, 34)
    pointers = np.frombuffer(raw, "<i8", s, 34 + 4 * s)
    doc_idx = np.frombuffer(raw, "<i8", d, 34 + 12 * s)
    assert version == 1 and len(raw) == 34 + 12 * s + 8 * d
    return DTYPES[code], lengths, pointers, doc_idx


def read_sequences(prefix):
    dtype, lengths, pointers, doc_idx = read_index(prefix)
    data = np.memmap(prefix + ".bin", dtype=np.uint8, mode="r")
    isz = np.dtype(dtype).itemsize
    seqs = [np.frombuffer(data, dtype, int(n), int(p)) for n, p in zip(lengths, pointers)]
    for p, n in zip(pointers, lengths):
        assert p % isz == 0 and p + n * isz <= len(data)
    return seqs, doc_idx


def write_dataset(prefix, documents, dtype):
    """documents: lists of sequences (lists of ints); several sequences per document allowed."""
    seqs = [np.asarray(s, dtype=dtype) for doc in documents for s in doc]
    lengths = np.array([len(s) for s in seqs], dtype="<i4")
    pointers = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)]).astype("<i8")
    pointers *= np.dtype(dtype).itemsize
    doc_idx = np.concatenate([[0], np.cumsum([len(doc) for doc in documents])]).astype("<i8")
    with open(prefix + ".bin", "wb") as f:
        for s in seqs:
            f.write(s.astype(np.dtype(dtype).newbyteorder("<")).tobytes())
    with open(prefix + ".idx", "wb") as f:
        f.write(MAGIC)
        f.write(np.array([1], "<u8").tobytes())
        f.write(bytes([CODES[np.dtype(dtype)]]))
        f.write(np.array([len(seqs), len(doc_idx)], "<u8").tobytes())
        f.write(lengths.tobytes() + pointers.tobytes() + doc_idx.tobytes())


def checksum(seqs):
    """sum over the concatenated tokens t_k of (k + 1) * t_k, modulo 2^64."""
    tokens = np.concatenate([s.astype(np.int64) for s in seqs]).astype(np.uint64)
    weights = np.arange(1, len(tokens) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return int(np.sum(tokens * weights, dtype=np.uint64))


def dump_tool():
    exe = os.environ.get("MT_DUMP_INDEXED_DATASET")
    if exe:
        return exe
    found = sorted(glob.glob(os.path.join(ROOT, "build*", "tests", "dump_indexed_dataset")), key=os.path.getmtime)
    if not found:
        pytest.skip("dump_indexed_dataset is not built (cmake --build BUILD --target dump_indexed_dataset)")
    return found[-1]


def dump(prefix):
    out = subprocess.run([dump_tool(), prefix], check=True, capture_output=True, text=True).stdout
    fields = dict(line.split(" ", 1) for line in out.strip().split("\n"))
    return fields


def random_documents(rng, n, vocab, max_sequences=3, max_len=50):
    return [[rng.integers(0, vocab, rng.integers(0, max_len)).tolist() for _ in range(rng.integers(1, max_sequences + 1))]
            for _ in range(n)]


def test_bundled_data_is_one_chapter_per_document_ending_in_eod():
    dtype, lengths, pointers, doc_idx = read_index(BUNDLED)
    assert dtype == np.uint16
    assert len(lengths) == 1189 and len(doc_idx) == 1190
    assert list(doc_idx) == list(range(1190))
    assert int(lengths.sum()) == 1045411
    assert list(pointers) == list(np.concatenate([[0], 2 * np.cumsum(lengths[:-1])]))
    seqs, _ = read_sequences(BUNDLED)
    assert all(s[-1] == EOD and (s[:-1] != EOD).all() and (s < 4096).all() for s in seqs)
    sys.path.insert(0, os.path.join(ROOT, "data"))
    from make_bpe_data import bundled_chapters
    chapters = bundled_chapters()
    assert chapters[0].startswith("Genesis 1\n\nIn the beginning") and chapters[-1].startswith("Revelation 22\n")
    assert sum(len(c.encode()) for c in chapters) == 4152019


def test_bundled_data_unigram_entropy_matches_the_readme():
    seqs, _ = read_sequences(BUNDLED)
    counts = np.bincount(np.concatenate(seqs), minlength=4096).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    assert math.isclose(-(p * np.log(p)).sum(), 6.0040, abs_tol=5e-5)


def test_cpp_reads_the_bundled_data_like_numpy():
    seqs, _ = read_sequences(BUNDLED)
    d = dump(BUNDLED)
    assert d["dtype"] == "uint16"
    assert int(d["sequences"]) == 1189 and int(d["documents"]) == 1189
    assert int(d["tokens"]) == 1045411 and int(d["max_token"]) == 4095
    assert int(d["checksum"]) == checksum(seqs)
    assert [int(t) for t in d["first"].split()] == seqs[0][:16].tolist()


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.uint8])
def test_cpp_reads_what_numpy_writes(tmp_path, dtype):
    rng = np.random.default_rng(0)
    vocab = 200 if dtype == np.uint8 else 60000
    docs = random_documents(rng, 30, vocab)
    prefix = str(tmp_path / "np")
    write_dataset(prefix, docs, dtype)
    seqs, _ = read_sequences(prefix)
    d = dump(prefix)
    assert d["dtype"] == np.dtype(dtype).name
    assert int(d["sequences"]) == sum(len(doc) for doc in docs)
    assert int(d["documents"]) == len(docs)
    assert int(d["tokens"]) == sum(len(s) for s in seqs)
    assert int(d["max_token"]) == max(int(s.max()) for s in seqs if len(s))
    assert int(d["checksum"]) == checksum(seqs)


@pytest.mark.parametrize("vocab", [300, 70000])
def test_cpp_writer_output_is_byte_identical_to_numpys(tmp_path, vocab):
    rng = np.random.default_rng(1)
    docs = random_documents(rng, 25, vocab, max_sequences=1)
    docs[3] = [[vocab - 1]]  # so the C++ side infers this vocabulary from the largest token
    src, out, ref = (str(tmp_path / n) for n in ("src", "cpp", "ref"))
    write_dataset(src, docs, np.int32)
    subprocess.run([dump_tool(), "--copy", src, out], check=True)
    write_dataset(ref, docs, np.uint16 if vocab < 65500 else np.int32)
    for ext in (".bin", ".idx"):
        assert open(out + ext, "rb").read() == open(ref + ext, "rb").read()


def test_cpp_names_the_file_of_a_corrupt_index(tmp_path):
    prefix = str(tmp_path / "bad")
    write_dataset(prefix, [[[1, 2, 3]]], np.uint16)
    raw = bytearray(open(prefix + ".idx", "rb").read())
    raw[17] = 9
    open(prefix + ".idx", "wb").write(bytes(raw))
    r = subprocess.run([dump_tool(), prefix], capture_output=True, text=True)
    assert r.returncode == 2
    assert prefix + ".idx" in r.stderr and "dtype code 9" in r.stderr
