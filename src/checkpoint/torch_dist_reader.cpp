#include "checkpoint/torch_dist_reader.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "checkpoint/torch_pickle.h"
#include "core/error.h"

namespace fs = std::filesystem;

namespace mt {

namespace {

bool dtype_of(const std::string& torch_dtype, DType& out) {
  if (torch_dtype == "torch.float32") out = DType::F32;
  else if (torch_dtype == "torch.bfloat16") out = DType::BF16;
  else if (torch_dtype == "torch.float16") out = DType::F16;
  else return false;
  return true;
}

}  // namespace

void copy_box(const Tensor& src, const Shape& src_off, const Tensor& dst, const Shape& dst_off, const Shape& sizes) {
  const size_t nd = sizes.size();
  MT_CHECK(src.dim() == int64_t(nd) && dst.dim() == int64_t(nd) && src.dtype() == dst.dtype(), "copy_box ranks");
  for (int64_t s : sizes)
    if (s <= 0) return;
  const size_t es = dtype_size(src.dtype());
  if (nd == 0) {
    std::memcpy(dst.raw(), src.raw(), es);
    return;
  }
  const Shape &ss = src.shape(), &ds = dst.shape();
  const int64_t row = sizes[nd - 1];
  std::vector<int64_t> idx(nd - 1, 0);
  const auto* s = static_cast<const uint8_t*>(src.raw());
  auto* d = static_cast<uint8_t*>(dst.raw());
  while (true) {
    int64_t so = 0, doff = 0;
    for (size_t k = 0; k < nd; ++k) {
      const int64_t i = k + 1 < nd ? idx[k] : 0;
      so = so * ss[k] + src_off[k] + i;
      doff = doff * ds[k] + dst_off[k] + i;
    }
    std::memcpy(d + size_t(doff) * es, s + size_t(so) * es, size_t(row) * es);
    size_t k = nd - 1;
    while (k > 0) {
      if (++idx[k - 1] < sizes[k - 1]) break;
      idx[k - 1] = 0;
      --k;
    }
    if (k == 0) break;
  }
}

TorchDistReader::~TorchDistReader() = default;

TorchDistReader::TorchDistReader(const std::string& dir) : dir_(dir) {
  const std::string path = (fs::path(dir) / ".metadata").string();
  const MappedFile mf(path);
  const Pickle pk(std::string_view(reinterpret_cast<const char*>(mf.data()), mf.size()), path);
  const PyObj* root = pk.root();
  auto bad = [&](const std::string& why) -> void {
    MT_USER_ERROR("{}: not torch.distributed.checkpoint metadata: {}", path, why);
  };
  if (root->kind != PyObj::Object || !root->callable->is_global("torch.distributed.checkpoint.metadata.Metadata"))
    bad("the pickle is not a torch.distributed.checkpoint.metadata.Metadata");
  const PyObj* sdm = root->get("state_dict_metadata");
  const PyObj* storage = root->get("storage_data");
  if (!sdm || sdm->kind != PyObj::Dict) bad("no state_dict_metadata dict");
  if (!storage || storage->kind != PyObj::Dict) bad("no storage_data dict");
  auto shape_of = [&](const PyObj* t, const std::string& what) {
    Shape s;
    if (!t || t->kind != PyObj::Tuple) bad(what + " is not a torch.Size");
    for (const PyObj* x : t->items) {
      if (!x->is_int() || x->i < 0) bad(what + " holds something not a size");
      s.push_back(x->i);
    }
    return s;
  };
  for (const auto& [k, v] : sdm->dict) {
    if (!k->is_str()) bad("a state_dict_metadata key is not a string");
    if (v->kind != PyObj::Object) bad("entry " + k->s + " is not a storage metadata object");
    if (v->callable->is_global("torch.distributed.checkpoint.metadata.BytesStorageMetadata")) continue;
    if (!v->callable->is_global("torch.distributed.checkpoint.metadata.TensorStorageMetadata"))
      bad("entry " + k->s + " is a " + v->callable->s);
    TensorMeta m;
    const PyObj* props = v->get("properties");
    const PyObj* dt = nullptr;
    if (props && props->kind == PyObj::Object && props->state) {  // TensorProperties: (dtype, layout, ...) or a dict
      if (props->state->kind == PyObj::Tuple && !props->state->items.empty()) dt = props->state->items[0];
      else dt = props->get("dtype");
    }
    if (!dt || dt->kind != PyObj::Global) bad("entry " + k->s + " has no dtype");
    m.dtype = dt->s;
    m.size = shape_of(v->get("size"), "entry " + k->s + "'s size");
    const PyObj* chunks = v->get("chunks");
    if (!chunks || chunks->kind != PyObj::List) bad("entry " + k->s + " has no chunk list");
    for (const PyObj* c : chunks->items) {
      Chunk ch;
      ch.offsets = shape_of(c->get("offsets"), "a chunk's offsets of " + k->s);
      ch.sizes = shape_of(c->get("sizes"), "a chunk's sizes of " + k->s);
      if (ch.offsets.size() != m.size.size() || ch.sizes.size() != m.size.size())
        bad("a chunk of " + k->s + " has another rank than the tensor");
      for (size_t d = 0; d < m.size.size(); ++d)
        if (ch.offsets[d] > m.size[d] || ch.sizes[d] > m.size[d] - ch.offsets[d])
          bad(fmt::format("a chunk of {} ({} at {}) lies outside its size {}", k->s, shape_str(ch.sizes),
                          shape_str(ch.offsets), shape_str(m.size)));
      m.chunks.push_back(std::move(ch));
    }
    tensors_[k->s] = std::move(m);
  }
  for (const auto& [k, v] : storage->dict) {
    const PyObj* fqn = k->get("fqn");
    if (!fqn || !fqn->is_str()) bad("a storage_data key has no fqn");
    auto it = tensors_.find(fqn->s);
    if (it == tensors_.end()) continue;  // a bytes item
    const PyObj* off = k->get("offset");
    const Shape offsets = shape_of(off, "the storage offset of " + fqn->s);
    const PyObj* rel = v->get("relative_path");
    const PyObj* begin = v->get("offset");
    const PyObj* length = v->get("length");
    if (!rel || !rel->is_str() || !begin || !begin->is_int() || !length || !length->is_int() || begin->i < 0 ||
        length->i < 0)
      bad("the storage of " + fqn->s + " has no relative_path, offset and length");
    const PyObj* tr = v->get("transform_descriptors");
    if (tr && tr->kind != PyObj::None && !(tr->kind == PyObj::List && tr->items.empty()) &&
        !(tr->kind == PyObj::Tuple && tr->items.empty()))
      MT_USER_ERROR("{}: tensor {} is stored with transforms (compression?); expected plain torch.save items", path,
                    fqn->s);
    if (rel->s.empty() || rel->s.find('/') != std::string::npos || rel->s == "." || rel->s == "..")
      bad("the storage of " + fqn->s + " names the file \"" + rel->s + "\" (expected a file in the directory)");
    bool found = false;
    for (Chunk& c : it->second.chunks)
      if (c.offsets == offsets && c.file.empty()) {
        c.file = rel->s;
        c.begin = uint64_t(begin->i);
        c.length = uint64_t(length->i);
        found = true;
        break;
      }
    if (!found) bad(fmt::format("storage for {} at {} matches none of its chunks", fqn->s, shape_str(offsets)));
  }
  for (const auto& [name, m] : tensors_)
    for (const Chunk& c : m.chunks)
      if (c.file.empty()) bad(fmt::format("chunk {} of {} has no storage entry", shape_str(c.offsets), name));
}

const MappedFile& TorchDistReader::file(const std::string& rel) const {
  auto it = files_.find(rel);
  if (it == files_.end()) {
    const std::string path = (fs::path(dir_) / rel).string();
    if (!fs::is_regular_file(path)) MT_USER_ERROR("{}: missing (named by {}/.metadata)", path, dir_);
    it = files_.emplace(rel, std::make_unique<MappedFile>(path)).first;
  }
  return *it->second;
}

Tensor TorchDistReader::read(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) MT_USER_ERROR("{}: no tensor {}", dir_, name);
  return read(name, Shape(it->second.size.size(), 0), it->second.size);
}

Tensor TorchDistReader::read(const std::string& name, const Shape& offsets, const Shape& sizes) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) MT_USER_ERROR("{}: no tensor {}", dir_, name);
  const TensorMeta& m = it->second;
  DType dt;
  if (!dtype_of(m.dtype, dt))
    MT_USER_ERROR("{}/.metadata: tensor {} is {} (expected torch.float32, torch.bfloat16 or torch.float16)", dir_,
                  name, m.dtype);
  MT_CHECK(offsets.size() == m.size.size() && sizes.size() == m.size.size(), "box rank");
  Tensor out = Tensor::empty(sizes, dt);
  int64_t covered = 0;
  for (const Chunk& c : m.chunks) {
    Shape lo(sizes.size()), n(sizes.size());
    bool overlap = true;
    for (size_t d = 0; d < sizes.size(); ++d) {
      lo[d] = std::max(offsets[d], c.offsets[d]);
      const int64_t hi = std::min(offsets[d] + sizes[d], c.offsets[d] + c.sizes[d]);
      n[d] = hi - lo[d];
      if (n[d] <= 0) overlap = false;
    }
    if (!overlap && !sizes.empty()) continue;
    const MappedFile& f = file(c.file);
    if (c.begin > f.size() || c.length > f.size() - c.begin)
      MT_USER_ERROR("{}: tensor {}'s chunk at {} needs bytes [{}, {}) of a {}-byte file (truncated?)", f.path(), name,
                    shape_str(c.offsets), c.begin, c.begin + c.length, f.size());
    const std::string what = fmt::format("{} (tensor {}, chunk at {}, bytes {}..{})", f.path(), name,
                                         shape_str(c.offsets), c.begin, c.begin + c.length);
    TorchSaveFile item(f.data() + c.begin, c.length, what);
    item.drop_pages_after_read();
    if (item.root()->kind != PyObj::Tensor) MT_USER_ERROR("{}: the item is not a tensor", what);
    const Tensor t = item.tensor(item.root(), name);
    if (t.shape() != c.sizes || t.dtype() != dt)
      MT_USER_ERROR("{}: the item is {} {}, the metadata says {} {}", what, dtype_name(t.dtype()), shape_str(t.shape()),
                    m.dtype, shape_str(c.sizes));
    Shape src_off(sizes.size()), dst_off(sizes.size());
    int64_t cells = 1;
    for (size_t d = 0; d < sizes.size(); ++d) {
      src_off[d] = lo[d] - c.offsets[d];
      dst_off[d] = lo[d] - offsets[d];
      cells *= n[d];
    }
    copy_box(t, src_off, out, dst_off, n);
    covered += cells;
  }
  if (covered != shape_numel(sizes))
    MT_USER_ERROR("{}/.metadata: tensor {}'s chunks cover {} of the {} elements asked for (missing or overlapping "
                  "chunks)",
                  dir_, name, covered, shape_numel(sizes));
  return out;
}

}  // namespace mt
