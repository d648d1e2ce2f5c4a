#include "checkpoint/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace mt {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors is little-endian");

// The reference implementation refuses headers over 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Bytes per element of every dtype the format defines (0: unknown, or not a whole byte).
size_t element_bytes(const std::string& d) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"I64", 8}, {"U64", 8}, {"F64", 8},     {"C64", 8}};
  auto it = sizes.find(d);
  return it == sizes.end() ? 0 : it->second;
}

}  // namespace

bool safetensors_dtype(const std::string& name, DType& out) {
  if (name == "F32") out = DType::F32;
  else if (name == "BF16") out = DType::BF16;
  else if (name == "F16") out = DType::F16;
  else if (name == "I64") out = DType::I64;
  else if (name == "I32") out = DType::I32;
  else if (name == "U16") out = DType::U16;
  else return false;
  return true;
}

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::U16: return "U16";
  }
  return "?";
}

SafetensorsReader::SafetensorsReader(const std::string& path) : file_(path) {
  const uint8_t* p = file_.data();
  const uint64_t size = file_.size();
  if (size < 8) MT_USER_ERROR("{}: truncated safetensors file ({} bytes, no header length)", path, size);
  uint64_t n;
  std::memcpy(&n, p, 8);
  if (n > kMaxHeaderBytes) MT_USER_ERROR("{}: header length {} is implausible (not a safetensors file?)", path, n);
  if (n > size - 8) MT_USER_ERROR("{}: truncated: header length {} but only {} bytes follow", path, n, size - 8);
  data_ = p + 8 + n;
  const uint64_t data_bytes = size - 8 - n;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(reinterpret_cast<const char*>(p + 8), reinterpret_cast<const char*>(p + 8 + n));
  } catch (const nlohmann::json::exception& e) {
    MT_USER_ERROR("{}: the header is not valid JSON ({})", path, e.what());
  }
  if (!header.is_object()) MT_USER_ERROR("{}: the header is not a JSON object", path);

  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) MT_USER_ERROR("{}: __metadata__ is not an object", path);
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) MT_USER_ERROR("{}: __metadata__ value of \"{}\" is not a string", path, k);
        metadata_[k] = s.get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) { MT_USER_ERROR("{}: tensor \"{}\": {}", path, name, why); };
    if (!v.is_object()) bad("entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) bad("missing or non-string \"dtype\"");
    if (!v.contains("shape") || !v["shape"].is_array()) bad("missing or non-array \"shape\"");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      bad("\"data_offsets\" is not [begin, end]");
    SafetensorsEntry e;
    e.dtype = v["dtype"].get<std::string>();
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) bad("shape has a dimension that is not a non-negative integer");
      uint64_t x = d.get<uint64_t>();
      if (x != 0 && numel > (uint64_t(1) << 62) / x) overflow = true;
      numel *= x;
      e.shape.push_back(int64_t(x));
    }
    for (const auto& o : v["data_offsets"])
      if (!o.is_number_unsigned()) bad("data_offsets are not non-negative integers");
    e.begin = v["data_offsets"][0].get<uint64_t>();
    e.end = v["data_offsets"][1].get<uint64_t>();
    if (e.begin > e.end || e.end > data_bytes)
      bad(fmt::format("data_offsets [{}, {}) out of range: the data section has {} bytes{}", e.begin, e.end,
                      data_bytes, e.end > data_bytes ? " (file truncated?)" : ""));
    size_t es = element_bytes(e.dtype);
    if (es && (overflow || numel * es != e.end - e.begin))
      bad(fmt::format("shape {} of {} needs {} bytes but data_offsets span {}", shape_str(e.shape), e.dtype,
                      overflow ? "too many" : std::to_string(numel * es), e.end - e.begin));
    entries_.emplace(name, std::move(e));
  }
}

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> v;
  v.reserve(entries_.size());
  for (const auto& kv : entries_) v.push_back(kv.first);
  return v;
}

const SafetensorsEntry& SafetensorsReader::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) MT_USER_ERROR("{}: no tensor named \"{}\"", path(), name);
  return it->second;
}

Tensor SafetensorsReader::get(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  DType dt;
  if (!safetensors_dtype(e.dtype, dt))
    MT_USER_ERROR("{}: tensor \"{}\" has dtype {}, which megatron.cpp does not read (F32, BF16, F16, I64, I32, U16)",
                  path(), name, e.dtype);
  const uint8_t* src = data_ + e.begin;
  if (reinterpret_cast<uintptr_t>(src) % dtype_size(dt) == 0)
    return Tensor::from_blob(const_cast<uint8_t*>(src), e.shape, dt);
  Tensor t = Tensor::empty(e.shape, dt);
  if (t.nbytes()) std::memcpy(t.raw(), src, t.nbytes());
  return t;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") MT_USER_ERROR("{}: \"__metadata__\" cannot name a tensor", path);
    if (!seen.insert(name).second) MT_USER_ERROR("{}: tensor name \"{}\" given twice", path, name);
    MT_CHECK(t.defined() && t.is_contiguous(), "{}: tensor \"{}\" must be defined and contiguous", path, name);
  }
  // Largest elements first keeps every tensor aligned to its element size.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });

  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    header[name] = {{"dtype", safetensors_dtype_name(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // the data section starts 8-aligned
  uint64_t n = text.size();

  AtomicFileWriter out(path);
  out.write(&n, 8);
  out.write(text.data(), text.size());
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    if (t.device().is_cpu()) {
      out.write(t.raw(), t.nbytes());
    } else {
      Tensor host = t.to(Device::cpu());
      out.write(host.raw(), host.nbytes());
    }
  }
  out.commit();
}

}  // namespace mt
