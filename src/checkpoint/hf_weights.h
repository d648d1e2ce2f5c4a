#pragma once
// Reading a Hugging Face model directory: config.json, and the weights in model.safetensors or
// sharded as model.safetensors.index.json + its files (each file mapped once, on first use),
// fetched by name as views of the mapping with their shape checked.
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "core/tensor.h"
#include "model/param_buffer.h"

namespace mt {

// DIR/config.json; UserError when missing or not JSON.
nlohmann::json read_hf_config_json(const std::string& dir);

// j[key] as T; UserError naming the file and key when absent, null or of another type.
template <class T>
T hf_json_get(const nlohmann::json& j, const char* key, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) MT_USER_ERROR("{}: missing \"{}\"", file, key);
  try {
    return j[key].template get<T>();
  } catch (const std::exception&) {
    MT_USER_ERROR("{}: \"{}\" has the wrong type", file, key);
  }
}

class HfWeights {
 public:
  // `optional_prefix`: names are looked up as given, or without this prefix when the files store
  // them so (GPT2Model's "h.0..." for GPT2LMHeadModel's "transformer.h.0...").
  explicit HfWeights(const std::string& dir, std::string optional_prefix = "");
  bool contains(const std::string& name) const;
  // `name` as a read-only view of the file (its own dtype); UserError when missing, shaped other
  // than `expect` or of a dtype we do not hold.
  Tensor get(const std::string& name, const Shape& expect) const;
  // Drops `name`'s pages from this process's resident memory (SafetensorsReader::release).
  void release(const std::string& name) const;
  // Starts reading `name` in the background (SafetensorsReader::prefetch); nothing when missing.
  void prefetch(const std::string& name) const;

 private:
  const SafetensorsReader* reader_for(const std::string& key) const;
  std::string key_of(const std::string& name) const;
  std::string dir_, prefix_;
  bool strip_prefix_ = false;
  std::map<std::string, std::string> file_of_;  // sharded: key -> file name
  mutable std::map<std::string, std::unique_ptr<SafetensorsReader>> readers_;
};

struct HfTensorMap;  // checkpoint/hf_mapping.h

// The Hugging Face tensors of one of our tensors (m.hf_names, shaped m.hf_shapes, as views of the
// files): by their names, or when those are absent and the files hold m.alt_name (transformers 5's
// in-memory layout: experts fused), cut from it. UserError naming the tensor when neither is there.
std::vector<Tensor> read_hf_tensors(const HfWeights& src, const HfTensorMap& m);
// release() / prefetch() of the tensors read_hf_tensors reads.
void release_hf_tensors(const HfWeights& src, const HfTensorMap& m);
void prefetch_hf_tensors(const HfWeights& src, const HfTensorMap& m);

// Writes a host tensor (any float dtype) into a parameter of any dtype on any device.
void assign_param(const Tensor& src, const Tensor& dst);

// This rank's box of parameter p (its tensor-parallel shard along shard_dim, or all of it) from the
// whole tensor (host, any float dtype, p's global shape but for vocabulary rows), as fp32: rows
// past `whole`'s along dimension 0 (vocabulary padding) are zero.
Tensor param_box(const Tensor& whole, const ParamInfo& p);

}  // namespace mt
