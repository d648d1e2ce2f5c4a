// `megatron preprocess` and `megatron merge-datasets`: flags of Megatron's
// tools/preprocess_data.py and tools/merge_datasets.py.
#include "preprocess.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include "data/preprocess.h"
#include "data/tokenizer/tokenizer.h"

namespace mt {

void add_tokenizer_flags(CLI::App& app, TokenizerOptions& t, const char* group) {
  app.add_option("--tokenizer-type", t.type, std::string("Tokenizer: ") + tokenizer_types())->group(group);
  app.add_option("--vocab-file", t.vocab_file, "vocab.json (GPT2BPETokenizer)")->group(group);
  app.add_option("--merge-file", t.merge_file, "merges.txt (GPT2BPETokenizer)")->group(group);
  app.add_option("--tokenizer-model", t.model,
                 "tokenizer.json or its folder (HuggingFaceTokenizer), .model (SentencePiece tokenizers)")
      ->group(group);
}

PreprocessCommand add_preprocess_command(CLI::App& app) {
  PreprocessCommand c;
  c.opts = std::make_shared<PreprocessOptions>();
  PreprocessOptions& o = *c.opts;
  c.app = app.add_subcommand("preprocess", "Tokenize JSON lines into an indexed dataset (Megatron's preprocess_data.py)");
  CLI::App& s = *c.app;
  s.add_option("--input", o.input, "Input .jsonl or .jsonl.gz (one JSON object per line)")->required();
  s.add_option("--output-prefix", o.output_prefix, "Writes PREFIX_<key>_document.bin/.idx per JSON key")->required();
  s.add_option("--json-keys", o.json_keys, "Keys to tokenize")->capture_default_str();
  s.add_flag("--append-eod", o.append_eod, "Append the end-of-document token to every non-empty document");
  s.add_option("--workers", o.workers, "Tokenizing threads")->capture_default_str();
  s.add_flag("--skip-bad-lines", o.skip_bad_lines, "Warn about malformed lines and leave them out instead of failing");
  s.add_option("--log-interval-seconds", o.log_interval_s, "Seconds between progress lines (0: none)")->capture_default_str();
  add_tokenizer_flags(s, o.tokenizer, "Tokenizer");
  s.add_option("--vocab-size", o.tokenizer.vocab_size, "Vocabulary size (NullTokenizer)")->group("Tokenizer");
  return c;
}

void run_preprocess(const PreprocessOptions& o) {
  PreprocessStats st = preprocess_data(o);
  std::fprintf(stderr,
               "preprocess: done: %lld documents, %lld tokens, %.1f MB in %.1f s (%.0f docs/s, %.2f MB/s)%s\n",
               (long long)st.documents, (long long)st.tokens, double(st.input_bytes) / 1e6, st.seconds,
               double(st.documents) / std::max(st.seconds, 1e-9), double(st.input_bytes) / 1e6 / std::max(st.seconds, 1e-9),
               st.bad_lines ? fmt::format(", {} bad lines left out", st.bad_lines).c_str() : "");
  for (const auto& key : o.json_keys)
    std::fprintf(stderr, "preprocess: wrote %s.bin/.idx\n", preprocess_output_prefix(o.output_prefix, key).c_str());
}

MergeCommand add_merge_command(CLI::App& app) {
  MergeCommand c;
  c.inputs = std::make_shared<std::vector<std::string>>();
  c.output = std::make_shared<std::string>();
  c.app = app.add_subcommand("merge-datasets", "Concatenate indexed datasets (Megatron's merge_datasets.py)");
  c.app->add_option("--input", *c.inputs, "Dataset prefixes to concatenate, in order")->required();
  c.app->add_option("--output-prefix", *c.output, "Prefix of the merged dataset")->required();
  return c;
}

void run_merge(const MergeCommand& c) {
  merge_datasets(*c.inputs, *c.output);
  std::fprintf(stderr, "merge-datasets: wrote %s.bin/.idx from %zu datasets\n", c.output->c_str(), c.inputs->size());
}

}  // namespace mt
