#include "train/data_setup.h"

#include <filesystem>
#include <map>

#include <fmt/ranges.h>

#include "core/error.h"
#include "data/blended_dataset.h"
#include "data/token_range.h"

namespace mt {
namespace {

// One split's source from a blend: a GPTDataset per prefix over `ranges(prefix)[split]`,
// blended by the weights (or by the datasets' token counts when none are given).
struct SplitBuilder {
  const TrainingArgs& args;
  Datasets& d;
  GPTDatasetConfig cfg;
  bool bundled = false;
  std::map<std::string, std::shared_ptr<IndexedDataset>> open;

  std::shared_ptr<IndexedDataset> dataset(const std::string& prefix) {
    auto& ds = open[prefix];
    if (!ds) {
      ds = std::make_shared<IndexedDataset>(prefix);
      d.indexed.push_back(ds);
    }
    return ds;
  }

  std::string cache_dir(const std::string& prefix) const {
    if (!args.data_cache_path.empty()) return args.data_cache_path;
    if (bundled) return "";  // the source tree stays clean; the indices take milliseconds
    // Megatron's default: beside the data.
    auto dir = std::filesystem::path(prefix).parent_path();
    return (dir.empty() ? std::filesystem::path("cache") : dir / "cache").string() + "/GPTDataset_indices";
  }

  std::unique_ptr<SampleSource> build(const Blend& blend, Split split, int64_t num_samples, bool use_split) {
    if (num_samples <= 0) return nullptr;
    std::vector<std::shared_ptr<IndexedDataset>> sets;
    std::vector<DocumentRange> ranges;
    for (const auto& p : blend.prefixes) {
      auto ds = dataset(p);
      DocumentRange r{0, ds->num_sequences()};
      if (use_split) r = split_documents(ds->num_sequences(), args.split)[size_t(split)];
      sets.push_back(ds);
      ranges.push_back(r);
    }
    std::vector<double> weights = blend.weights;
    if (weights.empty() && blend.prefixes.size() > 1) {
      for (size_t i = 0; i < sets.size(); ++i) {
        int64_t t = 0;
        for (int64_t s = ranges[i].begin; s < ranges[i].end; ++s) t += sets[i]->sequence_length(s);
        weights.push_back(double(t));
      }
    }
    auto make = [&](size_t i, int64_t n) -> std::unique_ptr<SampleSource> {
      if (ranges[i].empty()) return nullptr;
      GPTDatasetConfig c = cfg;
      c.cache_dir = cache_dir(blend.prefixes[i]);
      return std::make_unique<GPTDataset>(sets[i], ranges[i], n, c, split);
    };
    if (weights.empty()) return make(0, num_samples);
    std::vector<double> w = normalized_weights(weights);
    std::vector<int64_t> sizes = samples_per_dataset(w, num_samples);
    std::vector<std::unique_ptr<SampleSource>> parts;
    std::vector<double> kept;
    for (size_t i = 0; i < sets.size(); ++i) {
      if (w[i] <= 0) continue;
      auto part = make(i, sizes[i]);
      if (!part) {
        if (split == Split::Train)
          MT_USER_ERROR("the train split of {} is empty under --split {}", blend.prefixes[i], args.split);
        continue;
      }
      parts.push_back(std::move(part));
      kept.push_back(w[i]);
    }
    if (parts.empty()) return nullptr;
    return std::make_unique<BlendedDataset>(std::move(parts), kept, num_samples);
  }
};

}  // namespace

std::string bundled_data_prefix() { return MT_BUNDLED_DATA_PREFIX; }
std::string bundled_tokenizer_path() { return MT_BUNDLED_TOKENIZER; }

std::array<int64_t, 3> samples_per_split(const TrainingArgs& a) {
  const int64_t gbs = a.global_batch_size;
  const int64_t evals = a.eval_interval > 0 ? a.train_iters / a.eval_interval + 1 : 1;
  return {a.train_iters * gbs, evals * a.eval_iters * gbs, a.eval_iters * gbs};
}

Datasets build_datasets(const TrainingArgs& args) {
  Datasets d;
  if (args.mock_data) {
    d.vocab_size = args.vocab_size;
    d.train = std::make_unique<MockGPTDataset>(args.vocab_size, args.seq_length, args.seed);
    d.valid = std::make_unique<MockGPTDataset>(args.vocab_size, args.seq_length, args.seed + 1);
    d.eod = int32_t(args.vocab_size - 1);
    d.description = "mock data";
    return d;
  }
  const bool per_split = !args.train_data_path.empty() || !args.valid_data_path.empty() || !args.test_data_path.empty();
  if (per_split && !args.data_path.empty())
    MT_USER_ERROR("--data-path and --train-data-path/--valid-data-path/--test-data-path are mutually exclusive");
  if (per_split && args.train_data_path.empty())
    MT_USER_ERROR("--valid-data-path/--test-data-path need --train-data-path too");
  const bool bundled = !per_split && args.data_path.empty();

  TokenizerOptions t{args.tokenizer_type, args.vocab_file, args.merge_file, args.tokenizer_model, args.vocab_size};
  if (!args.tokenizer_type.empty()) d.tokenizer = build_tokenizer(t);
  else if (bundled) d.tokenizer = build_tokenizer({"HuggingFaceTokenizer", "", "", bundled_tokenizer_path(), 0});
  d.eod = d.tokenizer ? d.tokenizer->eod() : -1;
  if (args.eod_mask_loss && d.eod < 0)
    MT_USER_ERROR("--eod-mask-loss needs a tokenizer with an end-of-document token: give --tokenizer-type and its files");
  for (const auto& [on, flag] : {std::pair{args.reset_position_ids, "--reset-position-ids"},
                                 std::pair{args.reset_attention_mask, "--reset-attention-mask"}})
    if (on && d.eod < 0)
      MT_USER_ERROR("{} needs a tokenizer with an end-of-document token: give --tokenizer-type and its files", flag);

  SplitBuilder b{args, d, {}, bundled, {}};
  b.cfg.seq_length = args.seq_length;
  b.cfg.seed = args.seed;
  b.cfg.eod = d.eod;
  b.cfg.eod_mask_loss = args.eod_mask_loss;
  b.cfg.split = per_split ? "per-split paths" : args.split;
  const auto n = samples_per_split(args);
  std::unique_ptr<SampleSource>* out[3] = {&d.train, &d.valid, &d.test};
  if (per_split) {
    const std::vector<std::string>* lists[3] = {&args.train_data_path, &args.valid_data_path, &args.test_data_path};
    const char* flags[3] = {"--train-data-path", "--valid-data-path", "--test-data-path"};
    for (int s = 0; s < 3; ++s)
      if (!lists[s]->empty()) *out[s] = b.build(parse_blend(*lists[s], flags[s]), Split(s), n[size_t(s)], false);
    d.description = fmt::format("train {}", fmt::join(args.train_data_path, " "));
  } else {
    Blend blend = bundled ? Blend{{bundled_data_prefix()}, {}} : parse_blend(args.data_path, "--data-path");
    for (int s = 0; s < 3; ++s) *out[s] = b.build(blend, Split(s), n[size_t(s)], true);
    d.description = bundled ? bundled_data_prefix() + " (bundled corpus)" : fmt::format("{}", fmt::join(args.data_path, " "));
  }
  if (!d.train) MT_USER_ERROR("the train split is empty (check --split and the data paths)");

  // Every token id must be a row of the embedding: checked now (one scan, cached beside the
  // dataset indices) rather than at the first batch that holds a bad one, hours in.
  int64_t max_id = -1;
  std::string where;
  for (const auto& ds : d.indexed) {
    const IndexedDataset::TokenIdRange r = cached_token_id_range(*ds, b.cache_dir(ds->prefix()));
    if (r.min < 0)
      MT_USER_ERROR("{}.bin: token id {} is negative (the file is corrupt, or not token ids of type {})", ds->prefix(),
                    r.min, index_dtype_name(ds->dtype()));
    if (r.max > max_id) max_id = r.max, where = ds->prefix();
  }
  if (d.tokenizer) {
    d.vocab_size = d.tokenizer->vocab_size();
    d.description += fmt::format(", {} with {} tokens", d.tokenizer->name(), d.vocab_size);
    if (max_id >= d.vocab_size)
      MT_USER_ERROR("{}.bin: token id {} is outside the vocabulary of the tokenizer ({}, {} tokens): the data was "
                    "tokenized with another tokenizer, or the file is corrupt", where, max_id, d.tokenizer->name(),
                    d.vocab_size);
  } else {
    if (args.vocab_size > 0) {
      if (args.vocab_size <= max_id)
        MT_USER_ERROR("--vocab-size {} is too small for {}: its largest token id is {}", args.vocab_size, where, max_id);
      d.vocab_size = args.vocab_size;
    } else {
      d.vocab_size = max_id + 1;
    }
  }
  return d;
}

}  // namespace mt
