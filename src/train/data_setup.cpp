#include "train/data_setup.h"

#include "core/error.h"

namespace mt {

std::string bundled_data_prefix() { return MT_BUNDLED_DATA_PREFIX; }

Datasets build_datasets(const TrainingArgs& args) {
  Datasets d;
  if (args.mock_data) {
    d.vocab_size = args.vocab_size;
    d.train = std::make_unique<MockGPTDataset>(args.vocab_size, args.seq_length, args.seed);
    d.valid = std::make_unique<MockGPTDataset>(args.vocab_size, args.seq_length, args.seed + 1);
    d.description = "mock data";
    return d;
  }
  if (args.data_path.size() > 1)
    MT_USER_ERROR("--data-path with several prefixes (blending) is not supported yet; give one prefix");
  std::string prefix = args.data_path.empty() ? bundled_data_prefix() : args.data_path[0];
  d.indexed = std::make_shared<IndexedDataset>(prefix);
  int64_t max_id = d.indexed->max_token_id();
  if (args.vocab_size > 0) {
    if (args.vocab_size <= max_id)
      MT_USER_ERROR("--vocab-size {} is too small for {}: its largest token id is {}", args.vocab_size, prefix, max_id);
    d.vocab_size = args.vocab_size;
  } else {
    d.vocab_size = max_id + 1;
  }
  auto ranges = split_documents(d.indexed->num_documents(), args.split);
  d.train = std::make_unique<GPTWindowDataset>(*d.indexed, ranges[0], args.seq_length, args.seed, "train");
  if (args.eval_iters > 0)
    d.valid = std::make_unique<GPTWindowDataset>(*d.indexed, ranges[1], args.seq_length, args.seed, "valid");
  d.description = prefix;
  return d;
}

}  // namespace mt
