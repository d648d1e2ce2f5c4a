#pragma once
// Where a tensor lives, and the stream its ops are ordered on.
#include <string>

namespace mt {

struct Device {
  enum class Kind : unsigned char { CPU, CUDA };
  Kind kind = Kind::CPU;
  int index = 0;

  static Device cpu() { return {Kind::CPU, 0}; }
  static Device cuda(int i = 0) { return {Kind::CUDA, i}; }
  bool is_cpu() const { return kind == Kind::CPU; }
  bool is_cuda() const { return kind == Kind::CUDA; }
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

// A CUDA stream handle (cudaStream_t) or null for the default stream; ignored on CPU.
struct Stream {
  void* handle = nullptr;
};

}  // namespace mt
