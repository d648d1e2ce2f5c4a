#include "checkpoint/hf_convert.h"

#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint_stream.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/hf_weights.h"
#include "core/error.h"
#include "kernels/elementwise.h"

namespace fs = std::filesystem;

namespace mt {

HfConvertStats convert_hf_to_checkpoint(const std::string& hf_dir, const std::string& out_dir,
                                        const TransformerConfig& cfg, const nlohmann::json& common,
                                        const CheckpointLayout& layout, std::optional<DType> dtype) {
  HfConvertStats stats;
  const nlohmann::json hf_config = read_hf_config_json(hf_dir);
  stats.family = hf_family_of(hf_config, (fs::path(hf_dir) / "config.json").string());
  HfWeights src(hf_dir, stats.family == HfFamily::Gpt2 ? "transformer." : "");
  const std::vector<HfTensorMap> maps = hf_tensor_maps(stats.family, cfg);

  // Every tensor is checked (present, shaped as the config says) before anything is written.
  std::vector<SafetensorsSpec> specs;
  for (const HfTensorMap& m : maps) {
    DType dt = dtype.value_or(DType::F32);
    const std::vector<Tensor> hf = read_hf_tensors(src, m);
    for (size_t i = 0; i < hf.size(); ++i) {
      if (hf[i].dtype() != DType::F32 && hf[i].dtype() != DType::BF16 && hf[i].dtype() != DType::F16)
        MT_USER_ERROR("{}: tensor {} is {}, not a float type", hf_dir, m.hf_names[i], dtype_name(hf[i].dtype()));
      if (i == 0 && !dtype) dt = hf[i].dtype();
    }
    specs.push_back({m.name, dt, m.shape});
  }

  CheckpointStreamWriter out(out_dir, 0, specs, common, layout);
  const std::vector<size_t>& order = out.order();
  // The writer works in the background: a tensor's mapped pages are dropped once the next write()
  // has returned (it waits for the previous tensor to be written), not before.
  const HfTensorMap* written = nullptr;
  auto release = [&](const HfTensorMap* m) {
    if (m) release_hf_tensors(src, *m);
  };
  for (size_t j = 0; j < order.size(); ++j) {
    const size_t k = order[j];
    const HfTensorMap& m = maps[k];
    if (j + 1 < order.size())  // read the next tensor from disk while this one is converted and written
      prefetch_hf_tensors(src, maps[order[j + 1]]);
    const std::vector<Tensor> hf = read_hf_tensors(src, m);
    for (const Tensor& t : hf) stats.bytes_read += t.nbytes();
    Tensor ours = hf_to_ours(m, hf);
    if (ours.dtype() != specs[k].dtype) {
      Tensor c = Tensor::empty(m.shape, specs[k].dtype);
      cast(ours, c);
      ours = c;
    }
    out.write(ours);
    release(written);
    written = &m;
    ++stats.tensors;
  }
  stats.bytes_written = out.finish();
  release(written);

  // The files that are not weights, for the way back.
  const fs::path assets = fs::path(out_dir) / kHfAssetsDir;
  std::error_code ec;
  fs::create_directories(assets, ec);
  if (ec) MT_USER_ERROR("cannot create {}: {}", assets.string(), ec.message());
  fs::copy_file(fs::path(hf_dir) / "config.json", assets / "config.json", fs::copy_options::overwrite_existing, ec);
  if (ec) MT_USER_ERROR("cannot copy {}/config.json to {}: {}", hf_dir, assets.string(), ec.message());
  copy_hf_assets(hf_dir, assets.string());
  return stats;
}

HfConvertStats convert_checkpoint_to_hf(const std::string& ckpt_dir, const std::string& out_dir,
                                        const TransformerConfig& cfg, std::optional<DType> dtype,
                                        HfExportOptions opt, const std::string& assets_dir) {
  CheckpointReader reader(ckpt_dir, -1, nullptr);
  // OUT/hf/ of a converted checkpoint: beside the iteration directories (ckpt_dir is the save
  // directory or one of its iteration directories).
  std::string assets = assets_dir;
  if (!assets.empty() && !fs::is_regular_file(fs::path(assets) / "config.json"))
    MT_USER_ERROR("--hf-assets {}: no config.json there (expected a Hugging Face model directory)", assets);
  for (const fs::path& d : {fs::path(ckpt_dir), fs::path(reader.path()).parent_path()})
    if (assets.empty() && fs::is_regular_file(d / kHfAssetsDir / "config.json")) assets = (d / kHfAssetsDir).string();
  if (!assets.empty() && opt.base_config.is_null()) opt.base_config = read_hf_config_json(assets);

  const std::string emb = "embedding.word_embeddings.weight";
  if (!reader.contains(emb)) MT_USER_ERROR("{}: the checkpoint has no tensor \"{}\"", reader.path(), emb);
  const DType dt = dtype.value_or(reader.tensors().at(emb).dtype);
  HfConvertStats stats;
  // The tensors in the order write_hf_model asks for them, to read the next one ahead.
  std::vector<std::string> order;
  for (const HfTensorMap& m : hf_tensor_maps(hf_family_for(cfg), cfg)) order.push_back(m.name);
  size_t next = 0;
  const HfExportStats e = write_hf_model(
      out_dir, cfg, dt,
      [&](const HfTensorMap& m) {
        while (next < order.size() && order[next] != m.name) ++next;
        if (++next < order.size()) prefetch_checkpoint_tensor(reader, order[next]);
        auto it = reader.tensors().find(m.name);
        if (it == reader.tensors().end())
          MT_USER_ERROR("{}: the checkpoint has no tensor \"{}\" (another architecture than its arguments say?)",
                        reader.path(), m.name);
        Shape want = m.shape;
        const Shape& have = it->second.global_shape;
        // A checkpoint written before padding was stripped holds padded vocabulary rows.
        const bool extra_rows = m.vocab_rows && have.size() == 2 && have[0] >= want[0] && have[1] == want[1];
        if (have != want && !extra_rows)
          MT_USER_ERROR("{}: tensor \"{}\" is {} in the checkpoint but {} for its arguments' architecture",
                        reader.path(), m.name, shape_str(have), shape_str(want));
        Tensor t = read_checkpoint_tensor(reader, m.name, m.vocab_rows ? cfg.vocab_size : -1);
        stats.bytes_read += t.nbytes();
        ++stats.tensors;
        return t;
      },
      opt);
  stats.bytes_written = e.bytes;
  stats.family = e.family;
  if (!assets.empty()) copy_hf_assets(assets, out_dir);
  return stats;
}

}  // namespace mt
