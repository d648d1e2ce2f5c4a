#pragma once
// `megatron preprocess` and `megatron merge-datasets`: Megatron's tools/preprocess_data.py and
// tools/merge_datasets.py. JSON lines in (plain or gzip), one indexed dataset per JSON key out:
// PREFIX_<key>_document.bin/.idx, one document per line (a key holding a list of strings gives
// one sequence per string), byte-compatible with Megatron's.
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer/tokenizer.h"

namespace mt {

struct PreprocessOptions {
  std::string input;                          // --input: .jsonl or .jsonl.gz
  std::string output_prefix;                  // --output-prefix
  std::vector<std::string> json_keys{"text"};  // --json-keys
  bool append_eod = false;                    // --append-eod
  int workers = 1;                            // --workers: tokenizing threads
  bool skip_bad_lines = false;                // --skip-bad-lines: warn and go on instead of failing
  double log_interval_s = 2.0;                // seconds between progress lines on stderr (0: none)
  TokenizerOptions tokenizer;
};

struct PreprocessStats {
  int64_t documents = 0, tokens = 0, bad_lines = 0;
  int64_t input_bytes = 0;  // bytes of JSON read (uncompressed)
  double seconds = 0;
};

// Reads `o.input` as a stream (memory bounded by a few MB per worker whatever the input size),
// tokenizes on `o.workers` threads, writes documents in input order, and renames the outputs
// into place only when everything succeeded. A line that is not JSON, lacks a key, or holds a
// non-string is a UserError naming the file and line (with skip_bad_lines: a warning, and the
// line is left out).
PreprocessStats preprocess_data(const PreprocessOptions& o);

// Concatenates the datasets at `inputs` (prefixes) into `output_prefix`, in order; they must
// share a token dtype.
void merge_datasets(const std::vector<std::string>& inputs, const std::string& output_prefix);

// "<prefix>_<key>_document": the dataset preprocess writes for `key`.
std::string preprocess_output_prefix(const std::string& output_prefix, const std::string& key);

}  // namespace mt
