#include "checkpoint/hf_weights.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "checkpoint/hf_mapping.h"
#include "core/file_io.h"
#include "core/json_depth.h"
#include "kernels/elementwise.h"

namespace mt {

namespace fs = std::filesystem;

nlohmann::json read_hf_config_json(const std::string& dir) {
  const std::string file = (fs::path(dir) / "config.json").string();
  std::error_code ec;
  if (!fs::exists(file, ec)) MT_USER_ERROR("{}: cannot open (expected a Hugging Face model directory)", file);
  const std::string text = read_regular_file(file);
  check_json_depth(text, file);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    MT_USER_ERROR("{}: invalid JSON: {}", file, e.what());
  }
  if (!j.is_object()) MT_USER_ERROR("{}: not a JSON object", file);
  return j;
}

HfWeights::HfWeights(const std::string& dir, std::string optional_prefix) : dir_(dir), prefix_(std::move(optional_prefix)) {
  const fs::path single = fs::path(dir) / "model.safetensors", index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) {
    readers_[single.filename().string()] = std::make_unique<SafetensorsReader>(single.string());
  } else if (fs::exists(index)) {
    const std::string text = read_regular_file(index.string());
    check_json_depth(text, index.string());
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
      for (const auto& [key, file] : j.at("weight_map").items()) file_of_[key] = file.get<std::string>();
    } catch (const std::exception& e) {
      MT_USER_ERROR("{}: not a safetensors index (a \"weight_map\" of tensor names to files): {}", index.string(),
                    e.what());
    }
  } else {
    MT_USER_ERROR("{}: neither model.safetensors nor model.safetensors.index.json is there", dir);
  }
  // The files hold names without the prefix when none of theirs starts with it.
  if (!prefix_.empty()) {
    strip_prefix_ = true;
    auto starts = [&](const std::string& k) { return k.rfind(prefix_, 0) == 0; };
    if (file_of_.empty()) {
      for (const std::string& k : readers_.begin()->second->names()) strip_prefix_ = strip_prefix_ && !starts(k);
    } else {
      for (const auto& kv : file_of_) strip_prefix_ = strip_prefix_ && !starts(kv.first);
    }
  }
}

std::string HfWeights::key_of(const std::string& name) const {
  return strip_prefix_ && name.rfind(prefix_, 0) == 0 ? name.substr(prefix_.size()) : name;
}

const SafetensorsReader* HfWeights::reader_for(const std::string& key) const {
  if (file_of_.empty()) {
    const SafetensorsReader* r = readers_.begin()->second.get();
    return r->contains(key) ? r : nullptr;
  }
  auto it = file_of_.find(key);
  if (it == file_of_.end()) return nullptr;
  auto& r = readers_[it->second];
  if (!r) {
    const fs::path file = fs::path(dir_) / it->second;
    if (it->second.find('/') != std::string::npos || !fs::exists(file))
      MT_USER_ERROR("{}: the index names {} for {}, which is not a file beside it", dir_, it->second, key);
    r = std::make_unique<SafetensorsReader>(file.string());
  }
  return r->contains(key) ? r.get() : nullptr;
}

bool HfWeights::contains(const std::string& name) const { return reader_for(key_of(name)) != nullptr; }

Tensor HfWeights::get(const std::string& name, const Shape& expect) const {
  const std::string key = key_of(name);
  const SafetensorsReader* r = reader_for(key);
  if (!r) MT_USER_ERROR("{}: tensor {} is missing", dir_, key);
  Tensor t = r->get(key);
  if (t.shape() != expect)
    MT_USER_ERROR("{}: tensor {} has shape {}, expected {}", r->path(), key, shape_str(t.shape()), shape_str(expect));
  return t;
}

void HfWeights::release(const std::string& name) const {
  const std::string key = key_of(name);
  if (const SafetensorsReader* r = reader_for(key)) r->release(key);
}

void HfWeights::prefetch(const std::string& name) const {
  const std::string key = key_of(name);
  if (const SafetensorsReader* r = reader_for(key)) r->prefetch(key);
}

namespace {

// Whether m's tensors come from its alt_name: the per-expert names absent, the fused one there.
bool from_alt(const HfWeights& src, const HfTensorMap& m) {
  return !m.alt_name.empty() && !src.contains(m.hf_names[0]) && src.contains(m.alt_name);
}

}  // namespace

std::vector<Tensor> read_hf_tensors(const HfWeights& src, const HfTensorMap& m) {
  std::vector<Tensor> out;
  if (!from_alt(src, m)) {
    for (size_t i = 0; i < m.hf_names.size(); ++i) out.push_back(src.get(m.hf_names[i], m.hf_shapes[i]));
    return out;
  }
  Tensor t = src.get(m.alt_name, m.alt_shape);
  if (m.alt_index >= 0) t = t.narrow0(m.alt_index, 1);  // [1, rows of every HF tensor, ...]
  int64_t at = 0;
  for (const Shape& s : m.hf_shapes) {
    out.push_back(t.flat_slice(at, shape_numel(s), s));
    at += shape_numel(s);
  }
  MT_CHECK(at == t.numel(), "{}: {} elements of {} cut into {}", m.name, at, m.alt_name, t.numel());
  return out;
}

void release_hf_tensors(const HfWeights& src, const HfTensorMap& m) {
  if (from_alt(src, m)) {
    src.release(m.alt_name);
    return;
  }
  for (const std::string& n : m.hf_names) src.release(n);
}

void prefetch_hf_tensors(const HfWeights& src, const HfTensorMap& m) {
  if (from_alt(src, m)) {
    src.prefetch(m.alt_name);
    return;
  }
  for (const std::string& n : m.hf_names) src.prefetch(n);
}

void assign_param(const Tensor& src, const Tensor& dst) {
  if (dst.device().is_cpu()) {
    cast(src, dst);
    return;
  }
  Tensor tmp = Tensor::empty(dst.shape(), dst.dtype());
  cast(src, tmp);
  dst.copy_from(tmp);
}

namespace {

// Rows [start, start + n) of dimension d of the fp32 host tensor g ([outer, g_d, inner] blocks),
// zero where they run past g's rows (vocabulary padding).
Tensor slice_dim(const Tensor& g, int d, int64_t start, int64_t n) {
  const Shape& gs = g.shape();
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < d; ++i) outer *= gs[size_t(i)];
  for (size_t i = size_t(d) + 1; i < gs.size(); ++i) inner *= gs[i];
  Shape ls = gs;
  ls[size_t(d)] = n;
  Tensor out = Tensor::zeros(ls, DType::F32);
  const float* src = g.data<float>();
  float* dst = out.data<float>();
  const int64_t rows = std::max<int64_t>(0, std::min(n, gs[size_t(d)] - start));
  for (int64_t o = 0; o < outer; ++o)
    std::copy(src + (o * gs[size_t(d)] + start) * inner, src + (o * gs[size_t(d)] + start + rows) * inner,
              dst + o * n * inner);
  return out;
}

}  // namespace

Tensor param_box(const Tensor& whole, const ParamInfo& p) {
  Tensor g = whole;
  if (g.dtype() != DType::F32 || !g.is_contiguous()) {
    g = Tensor::empty(whole.shape(), DType::F32);
    cast(whole, g);
  }
  if (p.shard_dim >= 0) g = slice_dim(g, p.shard_dim, p.shard_start, p.shape[size_t(p.shard_dim)]);
  else if (!g.shape().empty() && g.shape()[0] != p.shape[0]) g = slice_dim(g, 0, 0, p.shape[0]);
  return g.view(p.shape);
}

}  // namespace mt
