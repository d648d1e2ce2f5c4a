#include "convert_cmd.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>

#include "checkpoint/hf_config.h"
#include "checkpoint/hf_convert.h"
#include "checkpoint/hf_import.h"
#include "checkpoint/hf_weights.h"
#include "checkpoint/megatron_lm_convert.h"
#include "core/error.h"
#include "train/checkpoint_architecture.h"

namespace fs = std::filesystem;

namespace mt {
namespace {

// "5GB", "500MB", "2GiB", "100KB", "123" (bytes), as transformers' max_shard_size.
uint64_t parse_size(const std::string& s) {
  size_t end = 0;
  double v = 0;
  try {
    v = std::stod(s, &end);
  } catch (const std::exception&) {
    end = 0;
  }
  const std::string unit = s.substr(end);
  static const std::vector<std::pair<std::string, double>> units = {
      {"", 1},      {"B", 1},       {"KB", 1e3},    {"MB", 1e6},    {"GB", 1e9},   {"TB", 1e12},
      {"KiB", 1024}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1099511627776.0}};
  for (const auto& [u, m] : units)
    if (end > 0 && unit == u && v > 0) return uint64_t(std::llround(v * m));
  MT_USER_ERROR("--max-shard-size \"{}\": expected a size such as 5GB, 500MB or 2GiB", s);
}

std::optional<DType> parse_dtype(const std::string& s) {
  if (s.empty()) return std::nullopt;
  if (s == "bf16") return DType::BF16;
  if (s == "fp16") return DType::F16;
  if (s == "fp32") return DType::F32;
  MT_USER_ERROR("--dtype \"{}\": expected bf16, fp16 or fp32", s);
}

// config.json's "dtype" (transformers 5) or "torch_dtype" (4), as ours; F32 when neither.
DType config_dtype(const nlohmann::json& j) {
  const std::string d = j.value("dtype", j.value("torch_dtype", std::string("float32")));
  return d == "bfloat16" ? DType::BF16 : d == "float16" ? DType::F16 : DType::F32;
}

double peak_rss_gb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) * 1024.0 / 1e9;  // Linux: kB
}

void check_output(const std::string& out) {
  std::error_code ec;
  if (fs::exists(out, ec) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec)))
    MT_USER_ERROR("--output {}: exists and is not an empty directory (convert writes a new one)", out);
}

// A model that tensor parallelism of size tp can split (GPTModel's and the parallel linears' rules).
void check_target_tp(const TransformerConfig& c, int tp) {
  if (tp < 1) MT_USER_ERROR("--target-tensor-parallel-size {}: must be at least 1", tp);
  auto need = [&](int64_t n, const char* what) {
    if (n % tp != 0)
      MT_USER_ERROR("--target-tensor-parallel-size {} does not divide the model's {} ({})", tp, what, n);
  };
  need(c.num_attention_heads, "attention heads");
  need(c.query_groups(), "query groups");
  need(c.ffn_hidden_size, "MLP hidden size");
  if (c.is_moe()) need(c.moe_ffn_size(), "experts' hidden size");
}

}  // namespace

ConvertCommand add_convert_command(CLI::App& app) {
  ConvertCommand c;
  c.opts = std::make_shared<ConvertCommand::Options>();
  auto& o = *c.opts;
  c.app = app.add_subcommand("convert",
                             "Convert a Hugging Face model to a megatron.cpp checkpoint or back, or a Megatron-LM "
                             "checkpoint to ours (CPU, streaming)");
  c.app->add_option("--from", o.from,
                    "The input's format: hf, megatron, or megatron-lm (a Megatron-LM / Megatron-Core checkpoint, "
                    "torch_dist or torch format, any tensor/pipeline layout)")
      ->required()
      ->check(CLI::IsMember({"hf", "megatron", "megatron-lm"}));
  c.app->add_option("--to", o.to, "The output's format: megatron or hf")
      ->required()
      ->check(CLI::IsMember({"hf", "megatron"}));
  c.app->add_option("--input", o.input,
                    "A Hugging Face model directory (config.json, model.safetensors or an index), or a checkpoint "
                    "(a --save directory: its latest iteration; or an iter_* directory; Megatron-LM's likewise)")
      ->required();
  c.app->add_option("--output", o.output, "The directory to write (new, or empty)")->required();
  c.app->add_option("--target-tensor-parallel-size", o.target_tp,
                    "--to megatron: the tensor-parallel size to record (checked against the model's heads, query "
                    "groups and MLP; the checkpoint loads under any layout)")
      ->capture_default_str();
  c.app->add_option("--target-pipeline-parallel-size", o.target_pp, "--to megatron: only 1 (no pipelining yet)")
      ->capture_default_str();
  c.app->add_option("--max-shard-size", o.max_shard_size,
                    "--to hf: the largest weight file (5GB, 500MB, 2GiB); more become model-0000k-of-0000n.safetensors "
                    "with model.safetensors.index.json")
      ->capture_default_str();
  c.app->add_option("--hf-assets", o.hf_assets,
                    "--to hf: a Hugging Face directory whose config.json (keys other than the architecture), "
                    "generation config and tokenizer files the output takes (default: INPUT/hf/, kept by --to megatron)");
  c.app->add_option("--dtype", o.dtype, "The output's weights: bf16, fp16 or fp32 (default: the input's)");
  return c;
}

void run_convert(const ConvertCommand& c) {
  const ConvertCommand::Options& o = *c.opts;
  if (o.from == o.to) MT_USER_ERROR("--from {} --to {}: nothing to convert", o.from, o.to);
  if (o.target_pp != 1) MT_USER_ERROR("--target-pipeline-parallel-size {}: only 1 (no pipelining yet)", o.target_pp);
  const std::optional<DType> dtype = parse_dtype(o.dtype);
  const uint64_t shard_bytes = parse_size(o.max_shard_size);
  check_output(o.output);
  const auto t0 = std::chrono::steady_clock::now();
  HfConvertStats st;
  std::string what;
  if (o.from == "hf") {
    const nlohmann::json hf = read_hf_config_json(o.input);
    TransformerConfig cfg = read_hf_config(o.input, dtype.value_or(config_dtype(hf)), 128 * int64_t(o.target_tp));
    check_target_tp(cfg, o.target_tp);
    nlohmann::json common = {{"iteration", 0},
                             {"args", checkpoint_args_for(cfg, o.target_tp)},
                             {"converted_from", {{"format", "hf"}, {"path", fs::absolute(o.input).string()}}}};
    CheckpointLayout layout;
    layout.tp = o.target_tp;
    st = convert_hf_to_checkpoint(o.input, o.output, cfg, common, layout, dtype);
    what = fmt::format("{} {} -> megatron checkpoint {}/iter_0000000", hf_architecture(st.family), o.input, o.output);
  } else if (o.from == "megatron-lm") {
    const MegatronLmCheckpoint in(o.input);
    TransformerConfig cfg = in.config();
    if (dtype) cfg.params_dtype = *dtype;
    if (!cfg.gated_linear_unit && !in.args().value("openai_gelu", false) &&
        !(in.args().value("bias_gelu_fusion", false) && cfg.add_bias_linear))
      fmt::print(stderr, "warning: {}: Megatron computed this MLP's GeLU exactly (no bias_gelu_fusion, no "
                         "openai_gelu); ours is the tanh approximation (logits differ by ~1e-3)\n",
                 in.path());
    if (o.to == "hf") {  // straight into the Hugging Face writer, one tensor at a time
      hf_family_for(cfg);  // a class that holds the model, or the one-line error naming what none has
      in.check();
      HfExportOptions opt;
      opt.max_shard_bytes = shard_bytes;
      if (!o.hf_assets.empty()) opt.base_config = read_hf_config_json(o.hf_assets);
      HfExportStats e;
      try {
        e = write_hf_model(o.output, cfg, dtype.value_or(in.tensors().front().dtype),
                           [&](const HfTensorMap& m) {
                             Tensor t = in.read(m.name);
                             st.bytes_read += t.nbytes();
                             ++st.tensors;
                             return t;
                           },
                           opt);
      } catch (const UserError&) {
        std::error_code ec;
        fs::remove_all(o.output, ec);
        throw;
      }
      st.bytes_written = e.bytes;
      st.family = e.family;
      if (!o.hf_assets.empty()) copy_hf_assets(o.hf_assets, o.output);
      what = fmt::format("Megatron-LM {} checkpoint {} (iteration {}, TP {} x PP {}) -> {} {}", in.format(), in.path(),
                         in.iteration(), in.tp(), in.pp(), hf_architecture(st.family), o.output);
    } else {
      check_target_tp(cfg, o.target_tp);
      nlohmann::json common = {{"iteration", 0},
                               {"args", checkpoint_args_for(cfg, o.target_tp)},
                               {"converted_from",
                                {{"format", "megatron-lm"},
                                 {"ckpt_format", in.format()},
                                 {"path", fs::absolute(in.path()).string()},
                                 {"iteration", in.iteration()},
                                 {"tensor_model_parallel_size", in.tp()},
                                 {"pipeline_model_parallel_size", in.pp()}}}};
      CheckpointLayout layout;
      layout.tp = o.target_tp;
      MegatronLmConvertStats m;
      try {
        m = convert_megatron_lm_to_checkpoint(in, o.output, common, layout, dtype);
      } catch (const UserError&) {
        std::error_code ec;  // check_output() saw it new or empty: leave nothing half-written
        fs::remove_all(o.output, ec);
        throw;
      }
      st.tensors = m.tensors;
      st.bytes_read = m.bytes_read;
      st.bytes_written = m.bytes_written;
      what = fmt::format("Megatron-LM {} checkpoint {} (iteration {}, TP {} x PP {}) -> megatron checkpoint "
                         "{}/iter_0000000",
                         in.format(), in.path(), in.iteration(), in.tp(), in.pp(), o.output);
    }
  } else {
    const CheckpointReader reader(o.input, -1, nullptr);
    if (!reader.common().contains("args"))
      MT_USER_ERROR("{}: common.json records no arguments: the architecture is unknown", reader.path());
    const TransformerConfig cfg = config_from_checkpoint_args(reader.common()["args"], reader.path());
    HfExportOptions opt;
    opt.max_shard_bytes = shard_bytes;
    st = convert_checkpoint_to_hf(o.input, o.output, cfg, dtype, opt, o.hf_assets);
    what = fmt::format("megatron checkpoint {} -> {} {}", reader.path(), hf_architecture(st.family), o.output);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("converted {}: {} tensors, {:.3f} GB read, {:.3f} GB written in {:.2f} s ({:.2f} GB/s written), "
             "peak RSS {:.3f} GB\n",
             what, st.tensors, double(st.bytes_read) / 1e9, double(st.bytes_written) / 1e9, s,
             double(st.bytes_written) / 1e9 / std::max(s, 1e-9), peak_rss_gb());
}

}  // namespace mt
