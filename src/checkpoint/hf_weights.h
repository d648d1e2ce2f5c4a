#pragma once
// Reading a Hugging Face model directory, shared by the family importers: config.json, and the
// weights in model.safetensors or sharded as model.safetensors.index.json + its files (each
// file mapped once, on first use), fetched by name as fp32 host copies with their shape checked.
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "core/tensor.h"

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
  // prefixes: tried in order on the first lookup (e.g. "transformer." for GPT2LMHeadModel's keys).
  explicit HfWeights(const std::string& dir, std::vector<std::string> prefixes = {""});
  bool contains(const std::string& name) const;
  // fp32 host copy of `name` (any float dtype in the file); UserError when missing or shaped otherwise.
  Tensor get(const std::string& name, const Shape& expect) const;

 private:
  const SafetensorsReader* reader_for(const std::string& key) const;
  std::string dir_, prefix_;
  std::map<std::string, std::string> file_of_;  // sharded: key -> file name
  mutable std::map<std::string, std::unique_ptr<SafetensorsReader>> readers_;
};

// Writes an fp32 host tensor into a parameter of any dtype on any device.
void assign_param(const Tensor& src, const Tensor& dst);

}  // namespace mt
