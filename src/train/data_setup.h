#pragma once
// Builds the train, validation and test sample sources from the arguments, as Megatron's
// BlendedMegatronDatasetBuilder does: --mock-data; --data-path "[weight] prefix ..." split by
// --split (one GPTDataset per prefix and split, blended when there are several); or
// --train-data-path / --valid-data-path / --test-data-path, one blend per split; or, with no
// data flag, the corpus bundled in data/ with its BPE tokenizer.
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "data/gpt_dataset.h"
#include "data/indexed_dataset.h"
#include "data/tokenizer/tokenizer.h"
#include "train/arguments.h"

namespace mt {

struct Datasets {
  std::vector<std::shared_ptr<IndexedDataset>> indexed;  // kept alive for the sources that read them
  std::unique_ptr<SampleSource> train, valid, test;     // valid/test null when not needed or empty
  std::shared_ptr<Tokenizer> tokenizer;                 // null without --tokenizer-type (and not bundled)
  int64_t vocab_size = 0;  // the tokenizer's, --vocab-size, or inferred from the data
  int32_t eod = -1;        // the tokenizer's end of document, -1 without a tokenizer
  std::string description;
};

// The prefix of the corpus bundled in data/ and its tokenizer.json (absolute paths fixed at
// build time).
std::string bundled_data_prefix();
std::string bundled_tokenizer_path();

// Megatron's sample counts: train_iters * global batch; (train_iters / eval_interval + 1) *
// eval_iters * global batch for valid; eval_iters * global batch for test.
std::array<int64_t, 3> samples_per_split(const TrainingArgs& args);

Datasets build_datasets(const TrainingArgs& args);

}  // namespace mt
