#include "checkpoint/hf_import.h"

#include <filesystem>

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

}  // namespace mt
