#include "checkpoint/megatron_lm_import.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "checkpoint/torch_dist_reader.h"
#include "checkpoint/torch_pickle.h"
#include "core/error.h"
#include "core/file_io.h"
#include "model/gpt_model.h"

namespace fs = std::filesystem;

namespace mt {

namespace {

constexpr const char* kTracker = "latest_checkpointed_iteration.txt";
constexpr const char* kLayers = "decoder.layers.";

bool is_iteration_dir(const fs::path& d) {
  std::error_code ec;
  if (fs::is_regular_file(d / ".metadata", ec)) return true;
  if (!fs::is_directory(d, ec)) return false;
  for (const auto& e : fs::directory_iterator(d, ec))
    if (e.is_directory() && e.path().filename().string().rfind("mp_rank_", 0) == 0) return true;
  return false;
}

// The iteration directory DIR names, and its iteration (-1 for release).
fs::path locate(const std::string& dir, int64_t& iteration) {
  const fs::path d(dir);
  std::error_code ec;
  if (!fs::exists(d, ec)) MT_USER_ERROR("{}: no such directory", dir);
  iteration = -1;
  if (fs::is_regular_file(d / kTracker, ec)) {
    std::ifstream f(d / kTracker);
    std::string s;
    f >> s;
    fs::path it;
    if (s == "release") {
      it = d / "release";
    } else {
      try {
        size_t used = 0;
        iteration = std::stoll(s, &used);
        if (used != s.size() || iteration < 0) throw std::invalid_argument(s);
      } catch (const std::exception&) {
        MT_USER_ERROR("{}/{}: \"{}\" (expected an iteration number or \"release\")", dir, kTracker, s.substr(0, 40));
      }
      it = d / fmt::format("iter_{:07d}", iteration);
    }
    if (!is_iteration_dir(it))
      MT_USER_ERROR("{}: named by {}/{} but missing or holding neither .metadata nor mp_rank_* directories",
                    it.string(), dir, kTracker);
    return it;
  }
  if (is_iteration_dir(d)) {
    const std::string name = d.lexically_normal().filename().string();
    if (name.rfind("iter_", 0) == 0) {
      try {
        iteration = std::stoll(name.substr(5));
      } catch (const std::exception&) {
      }
    }
    return d;
  }
  MT_USER_ERROR("{}: not a Megatron-LM checkpoint (expected {} or an iter_* directory holding .metadata or "
                "mp_rank_*/model_optim_rng.pt)",
                dir, kTracker);
}

// A pickled value as JSON, for the saved arguments: numbers, strings, booleans, None, lists;
// torch dtypes and other names as their dotted name; other objects as null.
nlohmann::json to_json(const PyObj* o, int depth = 0) {
  if (depth > 8) return nullptr;
  switch (o->kind) {
    case PyObj::None: return nullptr;
    case PyObj::Bool: return o->b;
    case PyObj::Int: return o->i;
    case PyObj::Float: return o->f;
    case PyObj::Str: return o->s;
    case PyObj::Global: return o->s;
    case PyObj::Tuple:
    case PyObj::List: {
      nlohmann::json a = nlohmann::json::array();
      for (const PyObj* x : o->items) a.push_back(to_json(x, depth + 1));
      return a;
    }
    case PyObj::Dict: {
      nlohmann::json j = nlohmann::json::object();
      for (const auto& [k, v] : o->dict)
        if (k->is_str()) j[k->s] = to_json(v, depth + 1);
      return j;
    }
    default: return nullptr;
  }
}

nlohmann::json args_json(const PyObj* root, const std::string& what) {
  const PyObj* args = root->get("args");
  if (!args || !args->attrs())
    MT_USER_ERROR("{}: no \"args\" (argparse.Namespace) saved (expected a checkpoint written by Megatron-LM's "
                  "training loop)",
                  what);
  return to_json(args->attrs());
}

// Megatron's layer-number components: "decoder.layers.<n>.<rest>".
bool split_layer(const std::string& name, int64_t& layer, std::string& rest) {
  if (name.rfind(kLayers, 0) != 0) return false;
  const size_t at = std::strlen(kLayers), dot = name.find('.', at);
  if (dot == std::string::npos || dot == at) return false;
  for (size_t i = at; i < dot; ++i)
    if (name[i] < '0' || name[i] > '9') return false;
  if (dot - at > 9) return false;
  layer = std::stoll(name.substr(at, dot - at));
  rest = name.substr(dot + 1);
  return true;
}

bool ends_with(const std::string& s, const std::string& t) {
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

// Where a legacy tensor-parallel shard of Megatron-Core's state dict is split: 0 (column-parallel
// and vocabulary-parallel), 1 (row-parallel), -1 (replicated).
int tp_split_dim(const std::string& name) {
  for (const char* s : {"word_embeddings.weight", "output_layer.weight", "linear_qkv.weight", "linear_qkv.bias",
                        "linear_fc1.weight", "linear_fc1.bias"})
    if (ends_with(name, s)) return 0;
  for (const char* s : {"linear_proj.weight", "linear_fc2.weight"})
    if (ends_with(name, s)) return 1;
  return -1;
}

Tensor cat0(const std::vector<Tensor>& parts) {
  Shape s = parts[0].shape();
  s[0] = 0;
  for (const Tensor& t : parts) s[0] += t.size(0);
  Tensor out = Tensor::empty(s, parts[0].dtype());
  size_t at = 0;
  for (const Tensor& t : parts) {
    std::memcpy(static_cast<uint8_t*>(out.raw()) + at, t.raw(), t.nbytes());
    at += t.nbytes();
  }
  return out;
}

}  // namespace

// ---- the two formats, as Megatron-Core's global tensors under per-layer names ----------------

struct MlmSource {
  virtual ~MlmSource() = default;
  // Megatron's per-layer global names of the model's tensors (no _extra_state, no optimizer).
  virtual std::vector<std::string> names() const = 0;
  virtual bool has(const std::string& name) const = 0;
  virtual DType dtype(const std::string& name) const = 0;
  virtual Tensor get(const std::string& name) const = 0;  // the global tensor
  virtual Shape shape(const std::string& name) const = 0;  // get(name)'s, without reading data
};

namespace {

class DistSource : public MlmSource {
 public:
  DistSource(const fs::path& dir, int num_layers) : r_(dir.string()), layers_(num_layers) {
    for (const auto& [k, m] : r_.tensors()) {
      if (!is_model_key(k)) continue;
      int64_t l;
      std::string rest;
      if (split_layer(k, l, rest)) {
        if (l >= num_layers)
          MT_USER_ERROR("{}/.metadata: tensor {} is of layer {}, the args have {} layers", dir.string(), k, l,
                        num_layers);
        names_[k] = {k, -1};
      } else if (k.rfind(kLayers, 0) == 0) {  // stacked: [num_layers, ...] along a leading layer axis
        if (m.size.empty() || m.size[0] != num_layers)
          MT_USER_ERROR("{}/.metadata: tensor {} is {}, expected {} layers along its first dimension", dir.string(), k,
                        shape_str(m.size), num_layers);
        for (int64_t i = 0; i < num_layers; ++i)
          names_[fmt::format("{}{}.{}", kLayers, i, k.substr(std::strlen(kLayers)))] = {k, i};
      } else {
        names_[k] = {k, -1};
      }
    }
  }
  static bool is_model_key(const std::string& k) {
    return k.rfind("embedding.", 0) == 0 || k.rfind("decoder.", 0) == 0 || k.rfind("output_layer.", 0) == 0 ||
           k.rfind("mtp.", 0) == 0;
  }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const auto& [k, v] : names_) out.push_back(k);
    return out;
  }
  bool has(const std::string& n) const override { return names_.count(n) != 0; }
  DType dtype(const std::string& n) const override {
    const std::string& t = r_.tensors().at(names_.at(n).first).dtype;
    if (t == "torch.bfloat16") return DType::BF16;
    if (t == "torch.float16") return DType::F16;
    if (t == "torch.float32") return DType::F32;
    MT_USER_ERROR("{}/.metadata: tensor {} is {} (expected torch.float32, torch.bfloat16 or torch.float16)", r_.dir(),
                  names_.at(n).first, t);
  }
  Shape shape(const std::string& n) const override {
    const auto& [key, layer] = names_.at(n);
    const Shape& s = r_.tensors().at(key).size;
    return layer < 0 ? s : Shape(s.begin() + 1, s.end());
  }
  Tensor get(const std::string& n) const override {
    const auto& [key, layer] = names_.at(n);
    if (layer < 0) return r_.read(key);
    Shape size = r_.tensors().at(key).size, off(size.size(), 0);
    off[0] = layer;
    size[0] = 1;
    Tensor t = r_.read(key, off, size);
    return t.view(Shape(size.begin() + 1, size.end()));
  }

 private:
  TorchDistReader r_;
  int layers_;
  std::map<std::string, std::pair<std::string, int64_t>> names_;  // per-layer name -> (key, layer or -1)
};

class LegacySource : public MlmSource {
 public:
  struct File {
    std::unique_ptr<MappedFile> map;
    std::unique_ptr<TorchSaveFile> pt;
  };
  struct Piece {
    const File* file;
    const PyObj* tensor;
    std::string local;  // its name in that file's state dict
  };

  LegacySource(const fs::path& dir, const TransformerConfig& cfg, int tp, int pp, std::vector<File> files,
               const std::vector<std::pair<int, int>>& coords)
      : dir_(dir), cfg_(cfg), tp_(tp), files_(std::move(files)) {
    // Model chunks in layer order: virtual stage v outer, pipeline stage p inner.
    std::vector<std::string> chunk_keys;
    const File& first = files_[0];
    if (first.pt->root()->get("model")) {
      chunk_keys = {"model"};
    } else {
      for (int v = 0; first.pt->root()->get("model" + std::to_string(v)); ++v) chunk_keys.push_back("model" + std::to_string(v));
      if (chunk_keys.empty())
        MT_USER_ERROR("{}: no \"model\" state dict (a checkpoint saved with --no-save-... or not by Megatron-LM?)",
                      first.pt->what());
    }
    std::map<std::pair<int, int>, const File*> at;
    for (size_t i = 0; i < coords.size(); ++i) at[coords[i]] = &files_[i];
    int64_t offset = 0;
    for (const std::string& ck : chunk_keys)
      for (int p = 0; p < pp; ++p) {
        int64_t layers = 0;
        for (int t = 0; t < tp; ++t) {
          const File& f = *at.at({t, p});
          const PyObj* sd = f.pt->root()->get(ck);
          if (!sd || sd->kind != PyObj::Dict)
            MT_USER_ERROR("{}: no \"{}\" state dict (expected one per model chunk, like the other ranks)",
                          f.pt->what(), ck);
          int64_t here = 0;
          for (const auto& [k, v] : sd->dict) {
            if (!k->is_str()) MT_USER_ERROR("{}: a key of \"{}\" is not a string", f.pt->what(), ck);
            const std::string& name = k->s;
            if (ends_with(name, "._extra_state")) continue;
            if (v->kind != PyObj::Tensor)
              MT_USER_ERROR("{}: \"{}\" of \"{}\" is not a tensor", f.pt->what(), name, ck);
            if (name.rfind("language_model.", 0) == 0)
              MT_USER_ERROR("{}: tensor {} is of the legacy (pre-Megatron-Core) GPT model; expected Megatron-Core "
                            "names (decoder.layers..., --use-mcore-models)",
                            f.pt->what(), name);
            int64_t l;
            std::string rest, global = name;
            if (split_layer(name, l, rest)) {
              here = std::max(here, l + 1);
              global = fmt::format("{}{}.{}", kLayers, l + offset, rest);
            }
            auto& pieces = pieces_[global];
            if (p > 0 && int(pieces.size()) == tp && pieces[0].file != at.at({0, p})) continue;  // an earlier stage's
            if (int(pieces.size()) != t)
              MT_USER_ERROR("{}: tensor {} is missing from tensor-parallel rank(s) before {} of stage {}", f.pt->what(),
                            name, t, p);
            pieces.push_back({&f, v, name});
          }
          if (t == 0) layers = here;
          else if (here != layers)
            MT_USER_ERROR("{}: {} layers in \"{}\", tensor-parallel rank 0 of the stage has {}", f.pt->what(), here, ck,
                          layers);
        }
        offset += layers;
      }
    if (offset != cfg.num_layers)
      MT_USER_ERROR("{}: the model state dicts hold {} layers, the args say num_layers {}", dir.string(), offset,
                    cfg.num_layers);
    for (const auto& [g, ps] : pieces_)
      if (int(ps.size()) != tp)
        MT_USER_ERROR("{}: tensor {} is in {} of the {} tensor-parallel ranks' files", dir.string(), g, ps.size(), tp);
  }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const auto& [k, v] : pieces_) out.push_back(k);
    return out;
  }
  bool has(const std::string& n) const override { return pieces_.count(n) != 0; }
  DType dtype(const std::string& n) const override {
    const Piece& p = pieces_.at(n)[0];
    DType dt;
    if (!torch_storage_dtype(p.tensor->tensor->storage_type, dt))
      MT_USER_ERROR("{}: tensor {} is a {} (expected FloatStorage, BFloat16Storage or HalfStorage)", p.file->pt->what(),
                    p.local, p.tensor->tensor->storage_type);
    return dt;
  }
  Shape shape(const std::string& n) const override {
    const std::vector<Piece>& ps = pieces_.at(n);
    Shape s = ps[0].tensor->tensor->size;
    const int dim = ps.size() > 1 ? tp_split_dim(n) : -1;
    if (dim >= 0 && int(s.size()) > dim) s[size_t(dim)] *= int64_t(ps.size());
    return s;
  }
  Tensor get(const std::string& n) const override {
    const std::vector<Piece>& ps = pieces_.at(n);
    std::vector<Tensor> parts;
    for (const Piece& p : ps) {
      parts.push_back(p.file->pt->tensor(p.tensor, p.local));
      if (parts.back().shape() != parts[0].shape() || parts.back().dtype() != parts[0].dtype())
        MT_USER_ERROR("{}: tensor {} is {} {}, on tensor-parallel rank 0 {} {}", p.file->pt->what(), p.local,
                      dtype_name(parts.back().dtype()), shape_str(parts.back().shape()), dtype_name(parts[0].dtype()),
                      shape_str(parts[0].shape()));
    }
    const int dim = ps.size() > 1 ? tp_split_dim(n) : -1;
    if (dim < 0) return parts[0];
    if (parts[0].dim() <= dim)
      MT_USER_ERROR("{}: tensor {} is {}, expected at least {} dimensions", ps[0].file->pt->what(), ps[0].local,
                    shape_str(parts[0].shape()), dim + 1);
    const bool gated_fc1 = cfg_.gated_linear_unit && (ends_with(n, "mlp.linear_fc1.weight") || ends_with(n, "mlp.linear_fc1.bias"));
    if (dim == 0 && !gated_fc1) return cat0(parts);
    if (dim == 0) {  // each rank's [gate_r; up_r] -> [gate_0 .. gate_T-1; up_0 .. up_T-1]
      if (parts[0].size(0) % 2)
        MT_USER_ERROR("{}: tensor {} has {} rows, expected [gate; up] halves", ps[0].file->pt->what(), ps[0].local,
                      parts[0].size(0));
      std::vector<Tensor> halves;
      for (int h = 0; h < 2; ++h)
        for (const Tensor& t : parts) halves.push_back(t.narrow0(h * t.size(0) / 2, t.size(0) / 2));
      return cat0(halves);
    }
    // dim 1: rows of the parts side by side.
    Shape s = parts[0].shape();
    const int64_t cols = s[1];
    s[1] *= int64_t(parts.size());
    Tensor out = Tensor::empty(s, parts[0].dtype());
    const Shape zero(s.size(), 0);
    for (size_t i = 0; i < parts.size(); ++i) {
      Shape off = zero;
      off[1] = int64_t(i) * cols;
      copy_box(parts[i], zero, out, off, parts[i].shape());
    }
    return out;
  }

 private:
  fs::path dir_;
  TransformerConfig cfg_;
  int tp_;
  std::vector<File> files_;
  std::map<std::string, std::vector<Piece>> pieces_;  // global name -> one piece per tensor-parallel rank
};

}  // namespace

// ---- the checkpoint -------------------------------------------------------------------------

struct MegatronLmCheckpoint::Impl {
  std::string path, format;
  int64_t iteration = -1;
  nlohmann::json args;
  TransformerConfig cfg;
  int tp = 1, pp = 1;
  std::unique_ptr<MlmSource> src;
  std::vector<SafetensorsSpec> specs;
  std::map<std::string, Shape> want;  // our global shapes
  std::map<std::string, std::vector<std::string>> sources;  // ours -> the Megatron names it is read from
  mutable std::set<std::string> used;
  std::set<std::string> ignored;  // tied models' output_layer.weight copy on the last stage

  // The Megatron tensors our `name` comes from (one; or fc1's _w and _v halves).
  std::vector<std::string> find(const std::string& name) const {
    std::vector<std::string> cands{name};
    auto alias = [&](const char* ours, const char* theirs) {
      if (ends_with(name, ours)) cands.push_back(name.substr(0, name.size() - std::strlen(ours)) + theirs);
    };
    alias("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight");
    alias("input_layernorm.bias", "self_attention.linear_qkv.layer_norm_bias");
    alias("pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight");
    alias("pre_mlp_layernorm.bias", "mlp.linear_fc1.layer_norm_bias");
    std::vector<std::string> found;
    for (const std::string& c : cands)
      if (src->has(c)) found.push_back(c);
    if (found.size() > 1)
      MT_USER_ERROR("{}: both {} and {} are there (expected one of them)", path, found[0], found[1]);
    if (found.empty() && src->has(name + "_w") && src->has(name + "_v")) return {name + "_w", name + "_v"};
    if (found.empty())
      MT_USER_ERROR("{}: no tensor {} (the args describe {}; another architecture, or an incomplete checkpoint?)", path,
                    name, describe_architecture(cfg));
    return found;
  }
};

bool is_megatron_lm_checkpoint(const std::string& dir) {
  const fs::path d(dir);
  std::error_code ec;
  if (fs::is_regular_file(d / kTracker, ec)) {
    std::ifstream f(d / kTracker);
    std::string s;
    f >> s;
    if (s == "release") return is_iteration_dir(d / "release");
    try {
      return is_iteration_dir(d / fmt::format("iter_{:07d}", std::stoll(s)));
    } catch (const std::exception&) {
      return false;
    }
  }
  return is_iteration_dir(d);
}

MegatronLmCheckpoint::MegatronLmCheckpoint(const std::string& dir) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const fs::path it = locate(dir, m.iteration);
  m.path = it.string();
  std::error_code ec;
  if (fs::is_regular_file(it / ".metadata", ec)) {
    m.format = "torch_dist";
    if (fs::is_regular_file(it / "metadata.json", ec)) {
      nlohmann::json j;
      try {
        std::ifstream f(it / "metadata.json");
        j = nlohmann::json::parse(f);
      } catch (const std::exception&) {
        MT_USER_ERROR("{}/metadata.json: not JSON", m.path);
      }
      const std::string backend = j.is_object() ? j.value("sharded_backend", std::string()) : "";
      if (backend != "torch_dist")
        MT_USER_ERROR("{}/metadata.json: sharded_backend \"{}\" (expected torch_dist)", m.path, backend);
    }
    const std::string common = (it / "common.pt").string();
    if (!fs::is_regular_file(common, ec))
      MT_USER_ERROR("{}: missing (a torch_dist checkpoint keeps its args there)", common);
    const MappedFile cf(common);
    const TorchSaveFile pt(cf.data(), cf.size(), common);
    if (pt.root()->kind != PyObj::Dict) MT_USER_ERROR("{}: not a dict (expected Megatron-LM's common state)", common);
    m.args = args_json(pt.root(), common);
    if (m.iteration < 0 && pt.root()->get("iteration") && pt.root()->get("iteration")->is_int())
      m.iteration = pt.root()->get("iteration")->i;
    m.cfg = megatron_lm_args_to_config(m.args, common);
    m.tp = m.args.value("tensor_model_parallel_size", 1);
    m.pp = m.args.value("pipeline_model_parallel_size", 1);
    m.src = std::make_unique<DistSource>(it, m.cfg.num_layers);
  } else {
    m.format = "torch";
    // mp_rank_TT (one stage) or mp_rank_TT_PPP; a third number is an expert-parallel rank.
    std::vector<std::pair<int, int>> coords;
    std::vector<fs::path> files;
    int max_t = -1, max_p = -1;
    bool with_pp = false, seen = false;
    for (const auto& e : fs::directory_iterator(it, ec)) {
      const std::string n = e.path().filename().string();
      if (!e.is_directory() || n.rfind("mp_rank_", 0) != 0) continue;
      int t = -1, p = 0, ep = -1;
      char extra = 0;
      const int got = std::sscanf(n.c_str(), "mp_rank_%d_%d_%d%c", &t, &p, &ep, &extra);
      if (got < 1 || got > 2 || t < 0 || p < 0 || t > 4095 || p > 4095 ||
          n != (got == 1 ? fmt::format("mp_rank_{:02d}", t) : fmt::format("mp_rank_{:02d}_{:03d}", t, p)))
        MT_USER_ERROR("{}: directory {} (expected mp_rank_TT or mp_rank_TT_PPP; expert-parallel checkpoints are not "
                      "supported yet)",
                      m.path, n);
      if (seen && with_pp != (got == 2))
        MT_USER_ERROR("{}: both mp_rank_TT and mp_rank_TT_PPP directories", m.path);
      seen = true;
      with_pp = got == 2;
      const fs::path f = e.path() / "model_optim_rng.pt";
      if (!fs::is_regular_file(f, ec)) MT_USER_ERROR("{}: missing", f.string());
      coords.emplace_back(t, p);
      files.push_back(f);
      max_t = std::max(max_t, t);
      max_p = std::max(max_p, p);
    }
    m.tp = max_t + 1;
    m.pp = max_p + 1;
    if (int64_t(coords.size()) != int64_t(m.tp) * m.pp)
      MT_USER_ERROR("{}: {} mp_rank_* directories for a {} x {} (tensor x pipeline) layout: some are missing", m.path,
                    coords.size(), m.tp, m.pp);
    std::vector<LegacySource::File> opened;
    for (const fs::path& f : files) {
      LegacySource::File lf;
      lf.map = std::make_unique<MappedFile>(f.string());
      lf.pt = std::make_unique<TorchSaveFile>(lf.map->data(), lf.map->size(), f.string());
      lf.pt->drop_pages_after_read();
      if (lf.pt->root()->kind != PyObj::Dict)
        MT_USER_ERROR("{}: not a dict (expected Megatron-LM's model_optim_rng state)", f.string());
      opened.push_back(std::move(lf));
    }
    // The args of tensor rank 0, stage 0.
    size_t first = 0;
    for (size_t i = 0; i < coords.size(); ++i)
      if (coords[i] == std::make_pair(0, 0)) first = i;
    const TorchSaveFile& pt0 = *opened[first].pt;
    m.args = args_json(pt0.root(), pt0.what());
    if (m.iteration < 0 && pt0.root()->get("iteration") && pt0.root()->get("iteration")->is_int())
      m.iteration = pt0.root()->get("iteration")->i;
    m.cfg = megatron_lm_args_to_config(m.args, pt0.what());
    const int a_tp = m.args.value("tensor_model_parallel_size", 1), a_pp = m.args.value("pipeline_model_parallel_size", 1);
    if (a_tp != m.tp || a_pp != m.pp)
      MT_USER_ERROR("{}: the files are a {} x {} (tensor x pipeline) layout, the args say {} x {}", m.path, m.tp, m.pp,
                    a_tp, a_pp);
    if (first != 0) {
      std::swap(opened[0], opened[first]);
      std::swap(coords[0], coords[first]);
    }
    m.src = std::make_unique<LegacySource>(it, m.cfg, m.tp, m.pp, std::move(opened), coords);
  }

  // Our tensors: the parameters of a whole model of this architecture (registered, not allocated).
  ParamAndGradBuffer buf, experts;
  GPTModel model(m.cfg, Device::cpu(), ModelParallelConfig{}, ModelChunkConfig{}, buf, &experts);
  for (const ParamAndGradBuffer* b : {&buf, &experts})
    for (const ParamInfo& p : b->infos()) {
      if (p.pipeline_duplicate) continue;
      const std::vector<std::string> from = m.find(p.name);
      m.sources[p.name] = from;
      m.want[p.name] = p.global_shape;
      m.specs.push_back({p.name, m.src->dtype(from[0]), p.global_shape});
    }
  if (!m.cfg.untie_embeddings_and_output_weights && m.src->has("output_layer.weight"))
    m.ignored.insert("output_layer.weight");  // the last stage's copy of the tied word embeddings
}

MegatronLmCheckpoint::~MegatronLmCheckpoint() = default;

const std::string& MegatronLmCheckpoint::path() const { return impl_->path; }
const std::string& MegatronLmCheckpoint::format() const { return impl_->format; }
int64_t MegatronLmCheckpoint::iteration() const { return impl_->iteration; }
const nlohmann::json& MegatronLmCheckpoint::args() const { return impl_->args; }
const TransformerConfig& MegatronLmCheckpoint::config() const { return impl_->cfg; }
int MegatronLmCheckpoint::tp() const { return impl_->tp; }
int MegatronLmCheckpoint::pp() const { return impl_->pp; }
const std::vector<SafetensorsSpec>& MegatronLmCheckpoint::tensors() const { return impl_->specs; }

namespace {

// Megatron's shape `have` (of `from`, its halves cut along dim 0 when two) for our `want`: the
// same, or for a gated MLP's linear_fc1 Megatron's [2F, ...] as our [2, F, ...] (the same bytes).
void check_shape(const MegatronLmCheckpoint::Impl& m, const std::string& name, const std::vector<std::string>& from,
                 Shape have, const Shape& want);
void check_all_used(const MegatronLmCheckpoint::Impl& m);

}  // namespace

Tensor MegatronLmCheckpoint::read(const std::string& name) const {
  const Impl& m = *impl_;
  auto it = m.sources.find(name);
  if (it == m.sources.end())
    MT_USER_ERROR("{}: no tensor for our {} (the checkpoint is a {} model)", m.path, name, describe_architecture(m.cfg));
  std::vector<Tensor> parts;
  for (const std::string& s : it->second) {
    parts.push_back(m.src->get(s));
    m.used.insert(s);
  }
  Tensor t = parts.size() == 1 ? parts[0] : cat0(parts);
  const Shape want = m.want.at(name);
  check_shape(m, name, it->second, t.shape(), want);
  return t.view(want);
}

void MegatronLmCheckpoint::check() const {
  const Impl& m = *impl_;
  for (const auto& [name, from] : m.sources) {
    Shape have = m.src->shape(from[0]);
    if (from.size() == 2 && !have.empty()) have[0] += m.src->shape(from[1])[0];
    check_shape(m, name, from, have, m.want.at(name));
    for (const std::string& s : from) m.used.insert(s);
  }
  check_all_used(m);
}

namespace {

void check_shape(const MegatronLmCheckpoint::Impl& m, const std::string& name, const std::vector<std::string>& from,
                 Shape have, const Shape& want) {
  const bool fc1 = m.cfg.gated_linear_unit && (ends_with(name, "linear_fc1.weight") || ends_with(name, "linear_fc1.bias"));
  if (have == want || (fc1 && shape_numel(have) == shape_numel(want) && have.size() + 1 == want.size() &&
                       have[0] == want[0] * want[1]))
    return;
  Shape theirs = want;
  if (fc1) {
    theirs.erase(theirs.begin());
    theirs[0] *= 2;
  }
  MT_USER_ERROR("{}: tensor {} is {}, the args' architecture ({}) needs {}", m.path, from[0], shape_str(have),
                describe_architecture(m.cfg), shape_str(theirs));
}

}  // namespace

namespace {
void check_all_used(const MegatronLmCheckpoint::Impl& m) {
  std::vector<std::string> left;
  for (const std::string& n : m.src->names())
    if (!m.used.count(n) && !m.ignored.count(n)) left.push_back(n);
  if (!left.empty())
    MT_USER_ERROR("{}: tensor {} {}is not part of the architecture its args describe ({})", m.path, left[0],
                  left.size() > 1 ? fmt::format("(and {} more) ", left.size() - 1) : "", describe_architecture(m.cfg));
}
}  // namespace

// ---- the arguments --------------------------------------------------------------------------

TransformerConfig megatron_lm_args_to_config(const nlohmann::json& a, const std::string& where) {
  auto has = [&](const char* k) { return a.contains(k) && !a[k].is_null(); };
  auto num = [&](const char* k) -> double {
    if (!has(k)) MT_USER_ERROR("{}: the saved args lack \"{}\"", where, k);
    if (!a[k].is_number()) MT_USER_ERROR("{}: the saved args' \"{}\" is not a number", where, k);
    return a[k].get<double>();
  };
  auto integer = [&](const char* k) -> int64_t {
    const double v = num(k);
    if (v != double(int64_t(v)) || v < 0) MT_USER_ERROR("{}: the saved args' \"{}\" is {}, not a count", where, k, v);
    return int64_t(v);
  };
  auto flag = [&](const char* k) { return has(k) && a[k].is_boolean() && a[k].get<bool>(); };
  auto str = [&](const char* k, const char* dflt) {
    return has(k) && a[k].is_string() ? a[k].get<std::string>() : std::string(dflt);
  };
  auto unsupported = [&](const std::string& what) {
    MT_USER_ERROR("{}: {}: not supported yet (GPT and Llama-style models: LayerNorm or RMSNorm, learned or rotary "
                  "positions, GeLU or SwiGLU, grouped-query attention)",
                  where, what);
  };
  if (flag("use_legacy_models")) unsupported("a legacy (pre-Megatron-Core) model (use_legacy_models)");
  if (has("num_experts") && num("num_experts") > 0)
    unsupported(fmt::format("a Mixture-of-Experts model (num_experts {})", integer("num_experts")));
  if (flag("multi_latent_attention")) unsupported("multi-latent attention");
  if (flag("rotary_interleaved")) unsupported("interleaved rotary embeddings (rotary_interleaved)");
  if (flag("apply_layernorm_1p")) unsupported("zero-centered layer norms (apply_layernorm_1p)");
  if (flag("squared_relu")) unsupported("squared ReLU");
  if (flag("apply_residual_connection_post_layernorm")) unsupported("apply_residual_connection_post_layernorm");
  if (has("mtp_num_layers") && num("mtp_num_layers") > 0) unsupported("multi-token prediction layers");
  if (has("heterogeneous_layers_config_path") || has("heterogeneous_layers_config_encoded_json"))
    unsupported("heterogeneous layers");
  TransformerConfig c;
  c.num_layers = int(integer("num_layers"));
  c.hidden_size = int(integer("hidden_size"));
  c.num_attention_heads = int(integer("num_attention_heads"));
  c.ffn_hidden_size = has("ffn_hidden_size") ? int(integer("ffn_hidden_size")) : 4 * c.hidden_size;
  c.kv_channels = has("kv_channels") ? int(integer("kv_channels")) : c.hidden_size / std::max(1, c.num_attention_heads);
  c.num_query_groups = flag("group_query_attention") ? int(integer("num_query_groups")) : c.num_attention_heads;
  if (c.num_layers < 1 || c.hidden_size < 1 || c.num_attention_heads < 1 || c.num_query_groups < 1 ||
      c.num_attention_heads % c.num_query_groups != 0 || c.kv_channels < 1)
    MT_USER_ERROR("{}: the saved args describe no model (num_layers {}, hidden_size {}, heads {}, query groups {})",
                  where, c.num_layers, c.hidden_size, c.num_attention_heads, c.num_query_groups);
  c.seq_length = has("seq_length") ? int(integer("seq_length")) : int(integer("max_position_embeddings"));
  c.max_position_embeddings = has("max_position_embeddings") ? int(integer("max_position_embeddings")) : c.seq_length;
  c.vocab_size = c.padded_vocab_size = integer("padded_vocab_size");
  c.init_method_std = has("init_method_std") ? float(num("init_method_std")) : c.init_method_std;
  c.hidden_dropout = has("hidden_dropout") ? float(num("hidden_dropout")) : c.hidden_dropout;
  c.attention_dropout = has("attention_dropout") ? float(num("attention_dropout")) : c.attention_dropout;
  c.layernorm_epsilon = has("norm_epsilon")        ? float(num("norm_epsilon"))
                        : has("layernorm_epsilon") ? float(num("layernorm_epsilon"))
                                                   : 1e-5f;
  const std::string norm = str("normalization", "LayerNorm");
  if (norm != "LayerNorm" && norm != "RMSNorm") unsupported("normalization " + norm);
  c.normalization = norm == "RMSNorm" ? Normalization::RMSNorm : Normalization::LayerNorm;
  c.gated_linear_unit = flag("swiglu");
  c.activation = c.gated_linear_unit ? Activation::Silu : Activation::Gelu;
  const std::string pos = str("position_embedding_type", "learned_absolute");
  if (pos == "learned_absolute") c.position_embedding_type = PositionEmbedding::LearnedAbsolute;
  else if (pos == "rope") c.position_embedding_type = PositionEmbedding::Rope;
  else if (pos == "none") c.position_embedding_type = PositionEmbedding::None;
  else unsupported("position_embedding_type " + pos);
  if (has("rotary_base")) c.rotary_base = float(num("rotary_base"));
  if (has("rotary_percent")) c.rotary_percent = float(num("rotary_percent"));
  c.rope_scaling = flag("use_rope_scaling");
  if (has("rope_scaling_factor")) c.rope_scaling_factor = float(num("rope_scaling_factor"));
  c.untie_embeddings_and_output_weights = flag("untie_embeddings_and_output_weights");
  c.add_bias_linear = has("add_bias_linear") ? flag("add_bias_linear") : !flag("disable_bias_linear");
  c.add_qkv_bias = flag("add_qkv_bias");
  c.qk_layernorm = flag("qk_layernorm");
  if (c.qk_layernorm && c.normalization == Normalization::LayerNorm)
    unsupported("q/k LayerNorm (ours is RMSNorm: qk_layernorm with normalization RMSNorm)");
  c.params_dtype = flag("bf16") ? DType::BF16 : flag("fp16") ? DType::F16 : DType::F32;
  return c;
}

}  // namespace mt
