#!/usr/bin/env python3
"""Builds PREFIX.{bin,idx}: the King James Bible as a byte-level Megatron indexed dataset (token = byte value 0..255, end of document = 256, vocabulary 257),
one document per chapter.

Source: Debian's bible-kjv-text package (the text, public domain) read with the `bible`
program from the bible-kjv package. Needs apt-get and dpkg-deb (any Debian-based machine;
nothing is installed: the packages are downloaded and unpacked into a temporary folder) and
libreadline8, which `bible` links; run `apt-get update` first on a fresh machine. Python
standard library only.

    python3 scripts/make_bundled_data.py --out PREFIX

data/make_bpe_data.py runs it to get the text it trains the bundled BPE tokenizer on; the
byte-level dataset itself is not kept in the repository (data/README.md).

Each chapter becomes "Book N\\n\\n" followed by its verses, one per line without verse
numbers, then the eod token. Prints the counts, the unigram entropy and the files' sha256.
"""
import argparse
import array
import hashlib
import math
import os
import re
import struct
import subprocess
import sys
import tempfile

EOD = 256
VOCAB = 257
DTYPE_UINT16 = 8  # Megatron's DType code


def fetch_text(work):
    os.chmod(work, 0o755)  # apt-get download runs as the _apt user where it can
    subprocess.run(["apt-get", "download", "bible-kjv", "bible-kjv-text"], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    versions = {}
    for deb in sorted(os.listdir(work)):
        if deb.endswith(".deb"):
            subprocess.run(["dpkg-deb", "-x", deb, "root"], cwd=work, check=True)
            versions[deb.split("_")[0]] = deb.split("_")[1]
    root = os.path.join(work, "root")
    # -l: no line breaking within a verse; the default pretty-printed form has "Book N" headings.
    out = subprocess.run([os.path.join(root, "usr/bin/bible"), "-l", "1000000", "-p",
                          os.path.join(root, "usr/lib"), "Gen1:1-Rev22:21"],
                         check=True, capture_output=True)
    return out.stdout.decode("ascii"), versions


def chapters(text):
    """Yields (title, [verse, ...]) for every chapter, in order."""
    title, verses = None, []
    for line in text.split("\n"):
        if not line:
            continue
        m = re.fullmatch(r"\s+(\d+) (.*)", line)
        if m:
            if title is None:
                raise SystemExit(f"verse before any chapter heading: {line!r}")
            verses.append(m.group(2))
            continue
        if not re.fullmatch(r"[1-3A-Z][A-Za-z ]* \d+", line):
            raise SystemExit(f"unexpected line in the bible output: {line!r}")
        if title is not None:
            yield title, verses
        title, verses = line, []
    if title is not None:
        yield title, verses


def write_dataset(prefix, docs):
    """docs: lists of token ids < 65536. Writes PREFIX.bin/.idx (uint16), atomically."""
    lengths, pointers, offset = [], [], 0
    tmp_bin, tmp_idx = prefix + ".bin.tmp", prefix + ".idx.tmp"
    with open(tmp_bin, "wb") as f:
        for d in docs:
            a = array.array("H", d)
            if sys.byteorder != "little":
                a.byteswap()
            f.write(a.tobytes())
            lengths.append(len(d))
            pointers.append(offset)
            offset += 2 * len(d)
        f.flush()
        os.fsync(f.fileno())
    s = len(docs)
    with open(tmp_idx, "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<QBQQ", 1, DTYPE_UINT16, s, s + 1))
        f.write(struct.pack(f"<{s}i", *lengths))
        f.write(struct.pack(f"<{s}q", *pointers))
        f.write(struct.pack(f"<{s + 1}q", *range(s + 1)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_bin, prefix + ".bin")
    os.replace(tmp_idx, prefix + ".idx")


def entropy_nats(counts):
    n = sum(counts)
    return -sum(c / n * math.log(c / n) for c in counts if c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output prefix (PREFIX.bin and PREFIX.idx)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as work:
        text, versions = fetch_text(work)
    docs = []
    verses = 0
    for title, vs in chapters(text):
        body = title + "\n\n" + "".join(v + "\n" for v in vs)
        docs.append(list(body.encode("ascii")) + [EOD])
        verses += len(vs)
    if len(docs) != 1189 or verses != 31102:
        raise SystemExit(f"expected 1189 chapters and 31102 verses, got {len(docs)} and {verses}")
    write_dataset(args.out, docs)

    counts = [0] * VOCAB
    for d in docs:
        for t in d:
            counts[t] += 1
    tokens = sum(counts)
    print(f"packages: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    print(f"documents (chapters): {len(docs)}, verses: {verses}")
    print(f"tokens: {tokens} (text bytes {tokens - len(docs)} + {len(docs)} eod)")
    print(f"distinct tokens: {sum(1 for c in counts if c)}")
    print(f"unigram entropy: {entropy_nats(counts):.4f} nats/token "
          f"(bytes alone: {entropy_nats(counts[:256]):.4f})")
    for ext in ("bin", "idx"):
        path = f"{args.out}.{ext}"
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        print(f"{os.path.basename(path)}: {os.path.getsize(path)} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
