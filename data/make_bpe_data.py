#!/usr/bin/env python3
"""Trains the bundled corpus's BPE tokenizer and re-tokenizes the corpus with it.

Reads the chapters from a byte-level dataset (its tokens are the text's bytes, each chapter
ending in eod 256) that scripts/make_bundled_data.py builds from Debian's bible-kjv-text
(run for you into a temporary folder unless --source names one), trains a byte-level BPE
tokenizer.json
with the Hugging Face `tokenizers` package (GPT-2's pre-tokenizer, 4096 tokens, id 0 =
<|endoftext|>), and writes data/kjv_bpe4k_tokenizer.json and the indexed dataset
data/kjv_bpe4k_text_document.{bin,idx} (one document per chapter, ending in <|endoftext|>).
Prints the counts, the unigram entropy per token and the sha256 of the files; running it
again gives the same bytes.

    pip install tokenizers   # (scripts/setup.sh --python puts it in .venv)
    python3 data/make_bpe_data.py [--source PREFIX_OF_THE_BYTE_DATASET]

bundled_chapters() gives the chapters' text back from the bundled files (decoding is exact), for
the tests and benchmarks that need the text itself.
"""
import argparse
import array
import hashlib
import math
import os
import struct
import subprocess
import sys
import tempfile
from collections import Counter

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "kjv_bpe4k"
VOCAB = 4096
EOD = "<|endoftext|>"
TOKENIZER = os.path.join(HERE, f"{NAME}_tokenizer.json")
PREFIX = os.path.join(HERE, f"{NAME}_text_document")


def read_uint16_dataset(prefix):
    """The sequences of a uint16 Megatron indexed dataset, as lists of ints."""
    idx = open(prefix + ".idx", "rb").read()
    assert idx[:9] == b"MMIDIDX\x00\x00" and idx[17] == 8  # uint16 tokens
    s, d = struct.unpack_from("<QQ", idx, 18)
    lengths = struct.unpack_from(f"<{s}i", idx, 34)
    pointers = struct.unpack_from(f"<{s}q", idx, 34 + 4 * s)
    tokens = array.array("H")
    tokens.frombytes(open(prefix + ".bin", "rb").read())
    assert sys.byteorder == "little"
    return [tokens[p // 2: p // 2 + n].tolist() for n, p in zip(lengths, pointers)]


def read_byte_dataset(prefix):
    chapters = []
    for seq in read_uint16_dataset(prefix):
        assert seq[-1] == 256 and max(seq[:-1]) < 256
        chapters.append(bytes(seq[:-1]).decode("utf-8"))
    return chapters


def bundled_chapters():
    """The chapters' text, decoded from the bundled dataset with the bundled tokenizer.json."""
    tok = Tokenizer.from_file(TOKENIZER)
    eod = tok.token_to_id(EOD)
    docs = read_uint16_dataset(PREFIX)
    assert all(d[-1] == eod for d in docs)
    return tok.decode_batch([d[:-1] for d in docs], skip_special_tokens=False)


def source_chapters(source):
    if source:
        return read_byte_dataset(source)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "kjv_byte_text_document")
        subprocess.run([sys.executable, os.path.join(HERE, "..", "scripts", "make_bundled_data.py"), "--out", out],
                       check=True)
        return read_byte_dataset(out)


def write_atomic(path, data):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_dataset(prefix, docs):
    lengths = [len(d) for d in docs]
    pointers, at = [], 0
    for n in lengths:
        pointers.append(at)
        at += 2 * n
    bin_data = b"".join(array.array("H", d).tobytes() for d in docs)
    idx = b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, len(docs), len(docs) + 1)
    idx += struct.pack(f"<{len(docs)}i", *lengths) + struct.pack(f"<{len(docs)}q", *pointers)
    idx += struct.pack(f"<{len(docs) + 1}q", *range(len(docs) + 1))
    write_atomic(prefix + ".bin", bin_data)
    write_atomic(prefix + ".idx", idx)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", help="byte-level dataset prefix (default: build it with scripts/make_bundled_data.py)")
    chapters = source_chapters(ap.parse_args().source)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(chapters, trainer)
    tok_path = TOKENIZER
    write_atomic(tok_path, tok.to_str(pretty=False).encode("utf-8"))
    eod = tok.token_to_id(EOD)
    docs = [e.ids + [eod] for e in tok.encode_batch(chapters, add_special_tokens=False)]
    for c, d in zip(chapters[:3], docs):
        assert tok.decode(d[:-1]) == c
    prefix = PREFIX
    write_dataset(prefix, docs)

    counts = Counter(t for d in docs for t in d)
    total = sum(counts.values())
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    n = len(docs)
    b1, b2 = round(0.969 * n), round(0.999 * n)
    split_tokens = [sum(len(d) for d in docs[a:b]) for a, b in ((0, b1), (b1, b2), (b2, n))]
    print(f"vocabulary {tok.get_vocab_size()} (eod = {eod}), {n} documents, {total} tokens "
          f"({sum(len(c.encode()) for c in chapters)} text bytes, "
          f"{sum(len(c.encode()) for c in chapters) / (total - n):.3f} bytes per token)")
    print(f"distinct tokens used {len(counts)}; unigram entropy {entropy:.4f} nats per token")
    print(f"--split 969,30,1: train [0, {b1}) {split_tokens[0]}, valid [{b1}, {b2}) {split_tokens[1]}, "
          f"test [{b2}, {n}) {split_tokens[2]} tokens")
    for path in (tok_path, prefix + ".bin", prefix + ".idx"):
        print(f"{os.path.basename(path)}: {os.path.getsize(path)} bytes, sha256 "
              f"{hashlib.sha256(open(path, 'rb').read()).hexdigest()}")


if __name__ == "__main__":
    main()
