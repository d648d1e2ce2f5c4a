#pragma once
// Builds the train and validation sample sources from the arguments: --mock-data, a
// Megatron indexed dataset (--data-path PREFIX, split by --split), or the bundled corpus.
#include <memory>

#include "data/gpt_dataset.h"
#include "data/indexed_dataset.h"
#include "train/arguments.h"

namespace mt {

struct Datasets {
  std::shared_ptr<IndexedDataset> indexed;  // kept alive for the windows that read it
  std::unique_ptr<SampleSource> train, valid;
  int64_t vocab_size = 0;  // --vocab-size, or inferred from the data
  std::string description;
};

// The prefix of the corpus bundled in data/ (an absolute path fixed at build time).
std::string bundled_data_prefix();

Datasets build_datasets(const TrainingArgs& args);

}  // namespace mt
