#include "checkpoint/hf_import.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "checkpoint/hf_config.h"
#include "checkpoint/hf_mapping.h"
#include "checkpoint/hf_weights.h"
#include "kernels/elementwise.h"

namespace mt {

TransformerConfig read_hf_config(const std::string& dir, DType params_dtype, int64_t divisible_by) {
  const std::string file = (std::filesystem::path(dir) / "config.json").string();
  TransformerConfig c = hf_config_to_ours(read_hf_config_json(dir), file);
  c.padded_vocab_size = pad_vocab_size(c.vocab_size, divisible_by);
  c.params_dtype = params_dtype;
  return c;
}

void load_hf_weights(const std::string& dir, GPTModel& model) {
  MT_CHECK(model.parallel().tp_size() == 1 && model.chunk().pre_process && model.chunk().post_process &&
               model.chunk().first_layer == 0,
           "load_hf_weights: a single-rank whole model");
  const HfFamily f = hf_family_of(read_hf_config_json(dir), (std::filesystem::path(dir) / "config.json").string());
  const TransformerConfig& c = model.config();
  HfWeights src(dir, f == HfFamily::Gpt2 ? "transformer." : "");
  auto& buf = model.buffer();
  const std::vector<HfTensorMap> maps = hf_tensor_maps(f, c);
  MT_CHECK(maps.size() == buf.infos().size(), "the {} table maps {} tensors, the model has {}", hf_architecture(f),
           maps.size(), buf.infos().size());
  for (const HfTensorMap& m : maps) {
    const int id = buf.find(m.name);
    MT_CHECK(id >= 0, "no parameter {}", m.name);
    std::vector<Tensor> hf;
    for (size_t i = 0; i < m.hf_names.size(); ++i) hf.push_back(src.get(m.hf_names[i], m.hf_shapes[i]));
    Tensor dst = buf.param(id);
    if (m.vocab_rows) {  // padding rows beyond the real vocabulary are zero
      if (c.padded_vocab_size > c.vocab_size) fill(dst.narrow0(c.vocab_size, c.padded_vocab_size - c.vocab_size), 0.0f);
      dst = dst.narrow0(0, c.vocab_size);
    }
    assign_param(hf_to_ours(m, hf), dst);
    for (const std::string& n : m.hf_names) src.release(n);
  }
}

namespace {

// Rows [start, start + n) of dimension d of the host tensor g ([outer, g_d, inner] blocks),
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

void load_hf_weights_into(const std::string& dir, const TransformerConfig& cfg, ParamAndGradBuffer& buf) {
  const HfFamily f = hf_family_of(read_hf_config_json(dir), (std::filesystem::path(dir) / "config.json").string());
  HfWeights src(dir, f == HfFamily::Gpt2 ? "transformer." : "");
  std::map<std::string, const HfTensorMap*> by_name;
  const std::vector<HfTensorMap> maps = hf_tensor_maps(f, cfg);
  for (const HfTensorMap& m : maps) by_name[m.name] = &m;
  for (int id = 0; id < int(buf.infos().size()); ++id) {
    const ParamInfo& p = buf.info(id);
    auto it = by_name.find(p.name);
    if (it == by_name.end())
      MT_USER_ERROR("{}: the {} mapping has no tensor for our {}", dir, hf_architecture(f), p.name);
    const HfTensorMap& m = *it->second;
    std::vector<Tensor> hf;
    for (size_t i = 0; i < m.hf_names.size(); ++i) hf.push_back(src.get(m.hf_names[i], m.hf_shapes[i]));
    Tensor whole = hf_to_ours(m, hf);  // [m.shape]: real vocabulary rows
    if (whole.dtype() != DType::F32 || !whole.is_contiguous()) whole = whole.to(Device::cpu());
    // This rank's box: its shard along shard_dim (vocabulary rows past the real ones are zero).
    Tensor mine = whole.view(m.shape);
    if (p.shard_dim >= 0)
      mine = slice_dim(mine, p.shard_dim, p.shard_start, p.shape[size_t(p.shard_dim)]);
    else if (m.vocab_rows && p.shape[0] != m.shape[0])
      mine = slice_dim(mine, 0, 0, p.shape[0]);
    assign_param(mine.view(p.shape), buf.param(id));
    for (const std::string& n : m.hf_names) src.release(n);
  }
}

}  // namespace mt
