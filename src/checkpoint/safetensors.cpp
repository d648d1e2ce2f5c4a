#include "checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <condition_variable>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <mutex>
#include <set>
#include <thread>

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

void write_all(int fd, const void* p, size_t n, const std::string& path) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, std::min<size_t>(n, size_t(1) << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) MT_USER_ERROR("cannot write {}: {}", path, std::strerror(errno));
    c += w;
    n -= size_t(w);
  }
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

namespace {

// Parses the header, noting the first key that an object gives twice (nlohmann keeps the last
// silently; the format forbids it).
nlohmann::json parse_header(const std::string& path, const char* begin, const char* end) {
  std::vector<std::set<std::string>> keys;  // one per open object
  std::string duplicate;
  auto cb = [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (ev == E::object_start) keys.emplace_back();
    else if (ev == E::object_end && !keys.empty()) keys.pop_back();
    else if (ev == E::key && !keys.empty() && !keys.back().insert(parsed.get<std::string>()).second &&
             duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(begin, end, cb);
  } catch (const nlohmann::json::exception& e) {
    MT_USER_ERROR("{}: the header is not valid JSON ({})", path, e.what());
  }
  if (!duplicate.empty()) MT_USER_ERROR("{}: the header gives key \"{}\" twice", path, duplicate);
  if (!header.is_object()) MT_USER_ERROR("{}: the header is not a JSON object", path);
  return header;
}

}  // namespace

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
  const nlohmann::json header =
      parse_header(path, reinterpret_cast<const char*>(p + 8), reinterpret_cast<const char*>(p + 8 + n));

  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    const nlohmann::json& v = item.value();
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
    const size_t es = element_bytes(e.dtype);
    if (es == 0) bad(fmt::format("unknown dtype \"{}\"", e.dtype.substr(0, 40)));
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
    if (overflow || numel * es != e.end - e.begin)
      bad(fmt::format("shape {} of {} needs {} bytes but data_offsets span {}", shape_str(e.shape), e.dtype,
                      overflow ? "too many" : std::to_string(numel * es), e.end - e.begin));
    entries_.emplace(name, std::move(e));
  }

  // The byte ranges must tile the data section: sorted by start, each begins where the previous
  // one ended, and the last ends at the end of the file.
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> by_offset;
  for (const auto& [name, e] : entries_) by_offset.emplace_back(&name, &e);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto& a, const auto& b) {
    return std::pair(a.second->begin, a.second->end) < std::pair(b.second->begin, b.second->end);
  });
  uint64_t next = 0;
  const std::string* prev = nullptr;
  for (const auto& [name, e] : by_offset) {
    if (e->begin < next)
      MT_USER_ERROR("{}: tensor \"{}\": data_offsets [{}, {}) overlap tensor \"{}\" (which ends at {})", path, *name,
                    e->begin, e->end, *prev, next);
    if (e->begin > next)
      MT_USER_ERROR("{}: tensor \"{}\": data_offsets [{}, {}) leave a gap of {} bytes after {}", path, *name, e->begin,
                    e->end, e->begin - next, prev ? "tensor \"" + *prev + "\"" : std::string("the header"));
    next = e->end;
    prev = name;
  }
  if (next != data_bytes)
    MT_USER_ERROR("{}: the tensors cover {} bytes of the data section, but it has {} (extra bytes at the end)", path,
                  next, data_bytes);
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

DType SafetensorsReader::dtype(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  DType dt;
  if (!safetensors_dtype(e.dtype, dt))
    MT_USER_ERROR("{}: tensor \"{}\" has dtype {}, which megatron.cpp does not read (F32, BF16, F16, I64, I32, U16)",
                  path(), name, e.dtype);
  return dt;
}

Tensor SafetensorsReader::get(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const DType dt = dtype(name);
  const uint8_t* src = data_ + e.begin;
  if (reinterpret_cast<uintptr_t>(src) % dtype_size(dt) == 0)
    return Tensor::from_blob(const_cast<uint8_t*>(src), e.shape, dt);
  Tensor t = Tensor::empty(e.shape, dt);
  if (t.nbytes()) std::memcpy(t.raw(), src, t.nbytes());
  return t;
}

void SafetensorsReader::release(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  // Whole pages inside the tensor's range only: a neighbour's view on a shared page stays resident.
  const uintptr_t a = (reinterpret_cast<uintptr_t>(data_ + e.begin) + page - 1) / page * page;
  const uintptr_t b = reinterpret_cast<uintptr_t>(data_ + e.end) / page * page;
  if (b > a) ::madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
}

void SafetensorsReader::prefetch(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t a = reinterpret_cast<uintptr_t>(data_ + e.begin) / page * page;
  const uintptr_t b = reinterpret_cast<uintptr_t>(data_ + e.end);
  if (b > a) ::madvise(reinterpret_cast<void*>(a), b - a, MADV_WILLNEED);
}

// ---- writing -------------------------------------------------------------------------------

// The writer thread of a background SafetensorsWriter: one tensor at a time.
struct SafetensorsWriter::Background {
  std::mutex mu;
  std::condition_variable cv;
  Tensor job;  // handed over, not yet written
  bool busy = false, stop = false;
  std::exception_ptr error;
  std::thread thread;
};

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<SafetensorsSpec> specs,
                                     const std::map<std::string, std::string>& metadata, bool background)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp." + std::to_string(::getpid())), specs_(std::move(specs)) {
  std::set<std::string> seen;
  for (const SafetensorsSpec& s : specs_) {
    if (s.name == "__metadata__") MT_USER_ERROR("{}: \"__metadata__\" cannot name a tensor", path_);
    if (!seen.insert(s.name).second) MT_USER_ERROR("{}: tensor name \"{}\" given twice", path_, s.name);
  }
  // Largest elements first keeps every tensor aligned to its element size.
  order_.resize(specs_.size());
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = i;
  std::stable_sort(order_.begin(), order_.end(),
                   [&](size_t a, size_t b) { return dtype_size(specs_[a].dtype) > dtype_size(specs_[b].dtype); });
  offsets_.resize(specs_.size());
  uint64_t offset = 0;
  for (size_t i : order_) {
    offsets_[i] = offset;
    offset += uint64_t(shape_numel(specs_[i].shape)) * dtype_size(specs_[i].dtype);
  }
  std::string text = header_text(metadata);
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // the data section starts 8-aligned
  header_bytes_ = text.size();
  file_bytes_ = 8 + header_bytes_ + offset;

  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) MT_USER_ERROR("cannot create {}: {}", tmp_path_, std::strerror(errno));
  const uint64_t n = header_bytes_;
  write_all(fd_, &n, 8, tmp_path_);
  write_all(fd_, text.data(), text.size(), tmp_path_);
  if (background) {
    bg_ = std::make_unique<Background>();
    Background* b = bg_.get();
    b->thread = std::thread([this, b] {
      std::unique_lock<std::mutex> lock(b->mu);
      for (;;) {
        b->cv.wait(lock, [&] { return b->busy || b->stop; });
        if (!b->busy) return;
        Tensor t = std::move(b->job);
        lock.unlock();
        try {
          write_all(fd_, t.raw(), t.nbytes(), tmp_path_);
        } catch (...) {
          lock.lock();
          b->error = std::current_exception();
          lock.unlock();
        }
        t = Tensor();
        lock.lock();
        b->busy = false;
        b->cv.notify_all();
      }
    });
  }
}

void SafetensorsWriter::wait_idle() {
  if (!bg_) return;
  std::unique_lock<std::mutex> lock(bg_->mu);
  bg_->cv.wait(lock, [&] { return !bg_->busy; });
  if (bg_->error) std::rethrow_exception(std::exchange(bg_->error, nullptr));
}

SafetensorsWriter::~SafetensorsWriter() {
  if (bg_) {
    {
      std::lock_guard<std::mutex> lock(bg_->mu);
      bg_->stop = true;
    }
    bg_->cv.notify_all();
    bg_->thread.join();
  }
  if (fd_ >= 0) ::close(fd_);
  if (!finished_) ::unlink(tmp_path_.c_str());
}

std::string SafetensorsWriter::header_text(const std::map<std::string, std::string>& metadata) const {
  nlohmann::json header = nlohmann::json::object();
  for (size_t i = 0; i < specs_.size(); ++i) {
    const uint64_t bytes = uint64_t(shape_numel(specs_[i].shape)) * dtype_size(specs_[i].dtype);
    header[specs_[i].name] = {{"dtype", safetensors_dtype_name(specs_[i].dtype)},
                              {"shape", specs_[i].shape},
                              {"data_offsets", {offsets_[i], offsets_[i] + bytes}}};
  }
  nlohmann::json meta = metadata;
  if (!meta.contains("format")) meta["format"] = "pt";
  header["__metadata__"] = std::move(meta);
  return header.dump();
}

void SafetensorsWriter::write(const Tensor& t) {
  MT_CHECK(!finished_ && next_ < order_.size(), "{}: more tensors written than declared", path_);
  const SafetensorsSpec& s = specs_[order_[next_]];
  MT_CHECK(t.defined() && t.is_contiguous() && t.dtype() == s.dtype && t.shape() == s.shape,
           "{}: tensor \"{}\" written as {} {}, declared {} {}", path_, s.name, dtype_name(t.dtype()),
           shape_str(t.shape()), dtype_name(s.dtype), shape_str(s.shape));
  Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
  ++next_;
  if (!bg_) {
    write_all(fd_, host.raw(), host.nbytes(), tmp_path_);
    return;
  }
  wait_idle();
  {
    std::lock_guard<std::mutex> lock(bg_->mu);
    bg_->job = std::move(host);
    bg_->busy = true;
  }
  bg_->cv.notify_all();
}

void SafetensorsWriter::rewrite_metadata(const std::map<std::string, std::string>& metadata) {
  wait_idle();
  std::string text = header_text(metadata);
  if (text.size() > header_bytes_)
    MT_USER_ERROR("{}: the new __metadata__ makes the header {} bytes, more than the {} written", path_, text.size(),
                  header_bytes_);
  text.append(header_bytes_ - text.size(), ' ');
  if (::pwrite(fd_, text.data(), text.size(), 8) != ssize_t(text.size()))
    MT_USER_ERROR("cannot write {}: {}", tmp_path_, std::strerror(errno));
}

void SafetensorsWriter::finish() {
  wait_idle();
  MT_CHECK(!finished_ && next_ == order_.size(), "{}: {} of {} tensors written", path_, next_, order_.size());
  if (::fsync(fd_) != 0) MT_USER_ERROR("cannot write {}: {}", tmp_path_, std::strerror(errno));
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) MT_USER_ERROR("cannot write {}: {}", tmp_path_, std::strerror(errno));
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0)
    MT_USER_ERROR("cannot rename {} to {}: {}", tmp_path_, path_, std::strerror(errno));
  finished_ = true;
  const std::string dir = path_.find('/') == std::string::npos ? "." : path_.substr(0, path_.rfind('/') + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsSpec> specs;
  for (const auto& [name, t] : tensors) {
    MT_CHECK(t.defined() && t.is_contiguous(), "{}: tensor \"{}\" must be defined and contiguous", path, name);
    specs.push_back({name, t.dtype(), t.shape()});
  }
  SafetensorsWriter w(path, std::move(specs), metadata);
  for (size_t i : w.data_order()) w.write(tensors[i].second);
  w.finish();
}

}  // namespace mt
