#!/usr/bin/env bash
# A bad --load is one clear line and exit 2: a corrupted shard (naming the file and tensor), a
# truncated shard, a mismatched architecture (sizes or family), a tracker naming an iteration without metadata.
# Usage: bad_load.sh MEGATRON_BINARY
set -u
bin=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
common=(train --device cpu --mock-data --vocab-size 300 --hidden-size 32 --num-attention-heads 4
        --seq-length 16 --micro-batch-size 2 --global-batch-size 4 --train-iters 2 --eval-iters 0)
"$bin" "${common[@]}" --num-layers 2 --save "$dir/ck" > "$dir/save.log" 2>&1 || { echo "save failed"; cat "$dir/save.log"; exit 1; }
fail=0
layers=2
expect_error() {  # name, needle, extra args...
  local name=$1 needle=$2
  shift 2
  "$bin" "${common[@]}" --num-layers $layers --load "$dir/ck" "$@" > "$dir/out" 2> "$dir/err"
  local rc=$? lines
  lines=$(wc -l < "$dir/err")
  if [[ $rc -ne 2 || $lines -ne 1 ]] || ! grep -q -- "$needle" "$dir/err"; then
    echo "FAIL $name: rc $rc, $lines stderr line(s), wanted '$needle':"
    cat "$dir/err"
    fail=1
  else
    echo "ok $name: $(cat "$dir/err")"
  fi
}
shard=$(ls "$dir"/ck/iter_0000002/shard_*.safetensors | head -1)
cp "$shard" "$dir/shard.orig"
# Flip a byte near the end of the file (tensor data, not the header).
size=$(stat -c %s "$shard")
python3 - "$shard" $((size - 100)) <<'PY'
import sys
p, off = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xFF]))
PY
expect_error corrupted "$(basename "$shard")"
truncate -s $((size / 2)) "$shard"
expect_error truncated "$(basename "$shard")"
cp "$dir/shard.orig" "$shard"
layers=3 expect_error architecture "--num-layers: checkpoint 2, now 3"
# A GPT checkpoint does not load into a Llama of the same sizes: the family is part of the record.
expect_error family '--normalization: checkpoint "LayerNorm", now "RMSNorm"' --normalization RMSNorm --swiglu \
  --ffn-hidden-size 128 --position-embedding-type rope --untie-embeddings-and-output-weights
mv "$dir/ck/iter_0000002/metadata.json" "$dir/metadata.json"
expect_error missing-metadata "metadata.json"
exit $fail
