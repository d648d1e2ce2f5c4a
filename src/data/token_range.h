#pragma once
// The token id range of an indexed dataset, cached on disk across runs: checking the data's ids
// against the vocabulary at start-up needs one scan of the .bin, which for a large corpus takes
// seconds to minutes, so the result is kept beside the GPTDataset index cache, keyed by the
// .bin's absolute path, size and modification time (a changed file is scanned again).
#include <string>

#include "data/indexed_dataset.h"

namespace mt {

// ds.token_id_range(), read from CACHE_DIR/<key>-token_id_range.txt when there and valid, else
// scanned and written there (atomically; a cache that cannot be written is skipped). An empty
// cache_dir: no disk cache.
IndexedDataset::TokenIdRange cached_token_id_range(const IndexedDataset& ds, const std::string& cache_dir);

}  // namespace mt
