#pragma once
// PyTorch distributed checkpoints (torch.distributed.checkpoint, Megatron-LM's `torch_dist`
// format): DIR/.metadata, a pickled Metadata naming every tensor's dtype, global size and chunks
// (offsets, sizes), and where each chunk lies (relative file, byte offset, length) in the
// DIR/__<rank>_<n>.distcp files, each chunk one torch.save archive. Bytes items (Megatron's
// ShardedObjects: _extra_state, rng state) are listed but not read.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/file_io.h"
#include "core/tensor.h"

namespace mt {

class TorchDistReader {
 public:
  struct Chunk {
    Shape offsets, sizes;
    std::string file;  // relative to the directory
    uint64_t begin = 0, length = 0;
  };
  struct TensorMeta {
    std::string dtype;  // "torch.float32", ...
    Shape size;
    std::vector<Chunk> chunks;
  };

  // Reads and checks DIR/.metadata; UserError naming it and what was expected.
  explicit TorchDistReader(const std::string& dir);
  ~TorchDistReader();
  const std::string& dir() const { return dir_; }
  const std::map<std::string, TensorMeta>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

  // The box [offsets, offsets + sizes) of tensor `name`, assembled from the chunks that overlap
  // it, as an owned host tensor of the stored dtype (fp32, bf16 or fp16). UserError naming the
  // file and tensor for a dtype we do not hold, a chunk missing, truncated or shaped otherwise.
  Tensor read(const std::string& name, const Shape& offsets, const Shape& sizes) const;
  Tensor read(const std::string& name) const;  // the whole tensor

 private:
  const MappedFile& file(const std::string& rel) const;
  std::string dir_;
  std::map<std::string, TensorMeta> tensors_;
  mutable std::map<std::string, std::unique_ptr<MappedFile>> files_;
};

// Copies the box `sizes` at `src_off` of contiguous `src` to `dst_off` of contiguous `dst`
// (same dtype and rank).
void copy_box(const Tensor& src, const Shape& src_off, const Tensor& dst, const Shape& dst_off, const Shape& sizes);

}  // namespace mt
