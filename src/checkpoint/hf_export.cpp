#include "checkpoint/hf_export.h"

#include <filesystem>

#include "checkpoint/hf_config.h"
#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "core/file_io.h"
#include "kernels/elementwise.h"

namespace fs = std::filesystem;

namespace mt {

namespace {

void write_text(const std::string& path, const std::string& text) {
  AtomicFileWriter w(path);
  w.write(text.data(), text.size());
  w.commit();
}

// The family to write: ours, or Mistral for a Llama architecture whose base config was Mistral's
// (the two hold the same tensors).
HfFamily family_for(const TransformerConfig& cfg, const nlohmann::json& base) {
  const HfFamily ours = hf_family_for(cfg);
  HfFamily f;
  if (ours == HfFamily::Llama && base.is_object() &&
      hf_family_from_model_type(base.value("model_type", std::string()), f) && f == HfFamily::Mistral)
    return f;
  return ours;
}

}  // namespace

HfExportStats write_hf_model(const std::string& dir, const TransformerConfig& cfg, DType dtype,
                             const OurTensorSource& source, const HfExportOptions& opt) {
  HfExportStats stats;
  stats.family = family_for(cfg, opt.base_config);
  const std::vector<HfTensorMap> maps = hf_tensor_maps(stats.family, cfg);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) MT_USER_ERROR("cannot create {}: {}", dir, ec.message());

  // Files planned up front (each file's header lists its tensors): tensors in model order, a new
  // file when the next one would pass max_shard_bytes.
  std::vector<std::vector<SafetensorsSpec>> files(1);
  uint64_t in_file = 0, total = 0;
  for (const HfTensorMap& m : maps)
    for (size_t i = 0; i < m.hf_names.size(); ++i) {
      const uint64_t bytes = uint64_t(shape_numel(m.hf_shapes[i])) * dtype_size(dtype);
      if (!files.back().empty() && in_file + bytes > opt.max_shard_bytes) {
        files.emplace_back();
        in_file = 0;
      }
      files.back().push_back({m.hf_names[i], dtype, m.hf_shapes[i]});
      in_file += bytes;
      total += bytes;
    }
  const int n = int(files.size());
  auto file_name = [&](int k) {
    return n == 1 ? std::string("model.safetensors") : fmt::format("model-{:05d}-of-{:05d}.safetensors", k + 1, n);
  };
  // A single file and an index must not both be there (readers would take the stale one).
  fs::remove(fs::path(dir) / (n == 1 ? "model.safetensors.index.json" : "model.safetensors"), ec);

  nlohmann::json weight_map = nlohmann::json::object();
  int k = -1;
  size_t next = 0;  // the next spec of file k
  std::unique_ptr<SafetensorsWriter> w;
  auto next_file = [&] {
    if (w) {
      w->finish();
      stats.bytes += w->file_bytes();
    }
    ++k;
    next = 0;
    w = std::make_unique<SafetensorsWriter>((fs::path(dir) / file_name(k)).string(), files[size_t(k)],
                                            std::map<std::string, std::string>{}, /*background=*/true);
    for (size_t i = 0; i < w->data_order().size(); ++i)
      MT_CHECK(w->data_order()[i] == i, "one dtype keeps the planned order");
  };
  for (const HfTensorMap& m : maps) {
    Tensor ours = source(m);
    MT_CHECK(ours.shape() == m.shape, "{}: the source gave {}, expected {}", m.name, shape_str(ours.shape()),
             shape_str(m.shape));
    if (ours.dtype() != dtype || !ours.device().is_cpu() || !ours.is_contiguous()) {
      Tensor c = Tensor::empty(m.shape, dtype);
      Tensor host = ours.device().is_cpu() ? ours : ours.to(Device::cpu());
      cast(host, c);
      ours = c;
    }
    std::vector<Tensor> hf = ours_to_hf(m, ours);
    ours = Tensor();
    for (size_t i = 0; i < hf.size(); ++i) {
      if (!w || next == files[size_t(k)].size()) next_file();
      MT_CHECK(files[size_t(k)][next].name == m.hf_names[i], "planned {}, writing {}", files[size_t(k)][next].name,
               m.hf_names[i]);
      w->write(hf[i]);
      hf[i] = Tensor();  // written: free it
      weight_map[m.hf_names[i]] = file_name(k);
      ++next;
    }
  }
  w->finish();
  stats.bytes += w->file_bytes();
  stats.files = n;
  if (n > 1)
    write_text((fs::path(dir) / "model.safetensors.index.json").string(),
               nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2) + "\n");
  write_text((fs::path(dir) / "config.json").string(),
             hf_config_from_ours(cfg, stats.family, dtype, opt.base_config).dump(2) + "\n");
  return stats;
}

HfExportStats save_hf_model(const GPTModel& model, const std::string& dir, const HfExportOptions& opt) {
  MT_CHECK(model.parallel().tp_size() == 1 && (!model.parallel().ep || model.parallel().ep->size() == 1) &&
               model.chunk().pre_process && model.chunk().post_process && model.chunk().first_layer == 0 &&
               model.chunk().num_layers == model.config().num_layers,
           "save_hf_model: a single-rank whole model");
  const TransformerConfig& c = model.config();
  return write_hf_model(
      dir, c, c.params_dtype,
      [&](const HfTensorMap& m) {
        const ParamAndGradBuffer* buf = m.expert ? model.expert_buffer() : &model.buffer();
        const int id = buf ? buf->find(m.name) : -1;
        MT_CHECK(id >= 0, "no parameter {}", m.name);
        Tensor p = buf->param(id);
        if (m.vocab_rows) p = p.narrow0(0, c.vocab_size);
        return p.device().is_cpu() ? p : p.to(Device::cpu());
      },
      opt);
}

std::vector<std::string> copy_hf_assets(const std::string& from, const std::string& to) {
  std::vector<std::string> copied;
  std::error_code ec;
  for (const char* name : {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                           "tokenizer.model", "chat_template.jinja"}) {
    const fs::path src = fs::path(from) / name;
    if (!fs::is_regular_file(src, ec)) continue;
    fs::create_directories(to, ec);
    fs::copy_file(src, fs::path(to) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) MT_USER_ERROR("cannot copy {} to {}: {}", src.string(), to, ec.message());
    copied.push_back(name);
  }
  return copied;
}

}  // namespace mt
