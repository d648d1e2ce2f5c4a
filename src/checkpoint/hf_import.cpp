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
  MT_CHECK(model.parallel().tp_size() == 1 && (!model.parallel().ep || model.parallel().ep->size() == 1) &&
               model.chunk().pre_process && model.chunk().post_process && model.chunk().first_layer == 0,
           "load_hf_weights: a single-rank whole model");
  const HfFamily f = hf_family_of(read_hf_config_json(dir), (std::filesystem::path(dir) / "config.json").string());
  const TransformerConfig& c = model.config();
  HfWeights src(dir, f == HfFamily::Gpt2 ? "transformer." : "");
  ParamAndGradBuffer& buf = model.buffer();
  ParamAndGradBuffer* experts = model.expert_buffer();
  const std::vector<HfTensorMap> maps = hf_tensor_maps(f, c);
  const size_t params = buf.infos().size() + (experts ? experts->infos().size() : 0);
  MT_CHECK(maps.size() == params, "the {} table maps {} tensors, the model has {}", hf_architecture(f), maps.size(),
           params);
  for (const HfTensorMap& m : maps) {
    ParamAndGradBuffer& b = m.expert ? *experts : buf;
    const int id = m.expert && !experts ? -1 : b.find(m.name);
    MT_CHECK(id >= 0, "no parameter {}", m.name);
    Tensor dst = b.param(id);
    if (m.vocab_rows) {  // padding rows beyond the real vocabulary are zero
      if (c.padded_vocab_size > c.vocab_size) fill(dst.narrow0(c.vocab_size, c.padded_vocab_size - c.vocab_size), 0.0f);
      dst = dst.narrow0(0, c.vocab_size);
    }
    assign_param(hf_to_ours(m, read_hf_tensors(src, m)), dst);
    release_hf_tensors(src, m);
  }
}

void load_hf_weights_into(const std::string& dir, const TransformerConfig& cfg, ParamAndGradBuffer& buf,
                          ParamAndGradBuffer* expert_buf) {
  const HfFamily f = hf_family_of(read_hf_config_json(dir), (std::filesystem::path(dir) / "config.json").string());
  HfWeights src(dir, f == HfFamily::Gpt2 ? "transformer." : "");
  std::map<std::string, const HfTensorMap*> by_name;
  const std::vector<HfTensorMap> maps = hf_tensor_maps(f, cfg);
  for (const HfTensorMap& m : maps) by_name[m.name] = &m;
  for (ParamAndGradBuffer* b : {&buf, expert_buf}) {
    if (!b) continue;
    for (int id = 0; id < int(b->infos().size()); ++id) {
      const ParamInfo& p = b->info(id);
      auto it = by_name.find(p.name);
      if (it == by_name.end())
        MT_USER_ERROR("{}: the {} mapping has no tensor for our {}", dir, hf_architecture(f), p.name);
      const HfTensorMap& m = *it->second;
      Tensor whole = hf_to_ours(m, read_hf_tensors(src, m));  // [m.shape]: real vocabulary rows
      assign_param(param_box(whole.view(m.shape), p), b->param(id));
      release_hf_tensors(src, m);
    }
  }
}

}  // namespace mt
