// A helper for tests/python/test_indexed_dataset_numpy.py (not a test itself):
//   dump_indexed_dataset PREFIX            prints counts, the first tokens and a checksum
//   dump_indexed_dataset --copy SRC DST    rewrites SRC with IndexedDatasetWriter as DST
// The checksum is sum over the concatenated tokens t_k of (k + 1) * t_k, modulo 2^64.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/indexed_dataset.h"

int main(int argc, char** argv) {
  try {
    if (argc == 4 && std::strcmp(argv[1], "--copy") == 0) {
      mt::IndexedDataset src(argv[2]);
      mt::IndexedDatasetWriter w(argv[3], src.max_token_id() + 1);
      for (int64_t d = 0; d < src.num_documents(); ++d) {
        auto [b, e] = src.document_range(d);
        std::vector<int32_t> doc;
        for (int64_t s = b; s < e; ++s) {
          auto seq = src.read(s);
          doc.insert(doc.end(), seq.begin(), seq.end());
        }
        w.add_document(doc);
      }
      w.finalize();
      return 0;
    }
    if (argc != 2) {
      std::fprintf(stderr, "usage: dump_indexed_dataset PREFIX | --copy SRC DST\n");
      return 2;
    }
    mt::IndexedDataset ds(argv[1]);
    uint64_t checksum = 0, k = 0;
    std::vector<int32_t> first;
    for (int64_t s = 0; s < ds.num_sequences(); ++s) {
      for (int32_t t : ds.read(s)) {
        checksum += (++k) * uint64_t(int64_t(t));
        if (first.size() < 16) first.push_back(t);
      }
    }
    std::printf("dtype %s\nsequences %lld\ndocuments %lld\ntokens %lld\nmax_token %lld\nchecksum %llu\nfirst",
                mt::index_dtype_name(ds.dtype()), (long long)ds.num_sequences(), (long long)ds.num_documents(),
                (long long)ds.num_tokens(), (long long)ds.max_token_id(), (unsigned long long)checksum);
    for (int32_t t : first) std::printf(" %d", t);
    std::printf("\n");
    return 0;
  } catch (const mt::UserError& e) {
    std::fprintf(stderr, "megatron: error: %s\n", e.what());
    return 2;
  }
}
