#pragma once
// Python's pickle format as torch.save writes it (protocols 2 to 5; the opcodes a state dict,
// argparse.Namespace, dataclasses, numpy arrays and torch.distributed.checkpoint's .metadata
// use), decoded into plain data, never executed: a GLOBAL is a name, a REDUCE/NEWOBJ of a name
// we do not know is an opaque Object holding its arguments and its BUILD state. A few names are
// understood: collections.OrderedDict (a dict), torch.Size (a tuple), _codecs.encode (bytes),
// torch._utils._rebuild_tensor_v2 / _rebuild_parameter (a TensorRef into a storage that the
// persistent id names). An opcode outside that set, a stack underflow, a memo miss or data that
// ends early is a UserError naming `what` and the byte offset.
//
// torch.save's zip layout (NAME/data.pkl, NAME/data/<storage key>, NAME/byteorder) is read by
// TorchSaveFile over a ZipArchive.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "checkpoint/zip_reader.h"
#include "core/tensor.h"

namespace mt {

// A tensor as torch.save records it: a view of one storage of the archive.
struct TorchTensorRef {
  std::string storage_key;   // NAME/data/<storage_key>
  std::string storage_type;  // "FloatStorage", "BFloat16Storage", ...
  size_t elem_size = 0;
  int64_t storage_numel = 0;
  int64_t offset = 0;  // elements
  Shape size, stride;
};

struct PyObj {
  enum Kind : uint8_t { None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Set, Global, Object, Tensor, Storage };
  Kind kind = None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;             // Str, Bytes; Global: "module.name"
  std::vector<PyObj*> items;  // Tuple, List, Set; Object: its arguments (and appended items)
  std::vector<std::pair<PyObj*, PyObj*>> dict;  // Dict; Object: items set on it (in order, repeats kept)
  PyObj* callable = nullptr;  // Object: the Global it was made from
  PyObj* state = nullptr;     // Object: BUILD's argument
  std::unique_ptr<TorchTensorRef> tensor;  // Tensor, Storage (storage_key, storage_type, numel)

  bool is_str() const { return kind == Str; }
  bool is_int() const { return kind == Int || kind == Bool; }
  bool is_number() const { return kind == Int || kind == Float || kind == Bool; }
  bool is_global(std::string_view name) const { return kind == Global && s == name; }
  // Dict (or an Object's BUILD state dict, e.g. argparse.Namespace, a dataclass) lookup by string
  // key (the last value set); null when absent.
  const PyObj* get(std::string_view key) const;
  // An Object's attributes: its BUILD state dict (or the dict of a (None, slots) state tuple).
  const PyObj* attrs() const;
};

// A decoded pickle: the objects live as long as it does (cycles are fine).
class Pickle {
 public:
  // Decodes `data`. `what` names it in errors.
  Pickle(std::string_view data, std::string what);
  const PyObj* root() const { return root_; }
  const std::string& what() const { return what_; }

 private:
  PyObj* make(PyObj::Kind k);
  std::string what_;
  std::vector<std::unique_ptr<PyObj>> arena_;
  PyObj* root_ = nullptr;
};

// A torch.save file (zip serialization) held in memory the caller keeps alive.
class TorchSaveFile {
 public:
  TorchSaveFile(const uint8_t* data, uint64_t size, std::string what);
  const PyObj* root() const { return pickle_->root(); }
  const std::string& what() const { return zip_.what(); }
  // The tensor `t` (a PyObj::Tensor of this file) as an owned contiguous host tensor; `name` is
  // used in errors. Float types only (fp32, bf16, fp16): another one is a UserError.
  Tensor tensor(const PyObj* t, const std::string& name) const;
  // The bytes are a read-only file mapping: after tensor() has copied a storage, its whole pages
  // are dropped from this process's resident memory (read again from the file if needed), so
  // converting a checkpoint larger than memory keeps memory near the largest tensor.
  void drop_pages_after_read() { drop_pages_ = true; }

 private:
  bool drop_pages_ = false;
  ZipArchive zip_;
  std::string prefix_;  // "NAME/"
  std::unique_ptr<Pickle> pickle_;
};

// The float dtype of a torch storage type name; false for others.
bool torch_storage_dtype(std::string_view storage_type, DType& out);

}  // namespace mt
