#pragma once
// A native checkpoint written and read one whole tensor at a time, for conversions of models
// larger than memory (`megatron convert`): host memory stays near the largest tensor.
//
// CheckpointStreamWriter makes the same single-rank checkpoint save_checkpoint does (one shard
// file of whole tensors, common.json, metadata.json, then the tracker), but takes the tensors one
// by one in a declared order; the shard's header is written first and its checksums patched in
// at the end. read_checkpoint_tensor reads one tensor whole with pread (not the reader's map, so
// pages read do not stay resident), from whatever pieces hold it, checking their checksums.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/safetensors.h"

namespace mt {

class CheckpointStreamWriter {
 public:
  // Starts DIR/iter_<iteration> (replacing one there) with the tensors `specs` (global names,
  // dtypes and shapes, each written whole) and the common state `common`.
  CheckpointStreamWriter(std::string dir, int64_t iteration, std::vector<SafetensorsSpec> specs,
                         const nlohmann::json& common, const CheckpointLayout& layout);
  ~CheckpointStreamWriter();
  // The tensors' order: write() takes specs[order()[k]] on its k-th call.
  const std::vector<size_t>& order() const;
  void write(const Tensor& t);
  // Completes the checkpoint (metadata.json, then the tracker); returns the bytes of its files.
  uint64_t finish();

 private:
  std::string dir_;
  int64_t iteration_;
  CheckpointLayout layout_;
  std::vector<SafetensorsSpec> specs_;
  nlohmann::json shard_meta_;  // the shard's __metadata__ entry, checksums filled in as written
  std::unique_ptr<SafetensorsWriter> shard_;
  size_t written_ = 0;
};

// The whole tensor `name` of a checkpoint in its stored dtype (host), assembled from its pieces;
// with `rows` >= 0 only its first `rows` rows (a checkpoint that stored vocabulary padding).
// UserError naming the file and tensor when missing, incomplete or corrupt.
Tensor read_checkpoint_tensor(const CheckpointReader& reader, const std::string& name, int64_t rows = -1);
// Starts reading tensor `name`'s pieces from disk in the background (posix_fadvise WILLNEED), for
// a reader that asks for the next tensor while it works on this one. Nothing when absent.
void prefetch_checkpoint_tensor(const CheckpointReader& reader, const std::string& name);

}  // namespace mt
