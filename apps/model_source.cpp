#include "model_source.h"

#include <fmt/format.h>

#include "core/error.h"
#include "inference/inference_device.h"
#include "train/arguments.h"

namespace mt {

void add_model_source_flags(CLI::App& app, ModelSourceOptions& o) {
  const char* g = "Model";
  app.add_option("--load", o.load,
                 "Our checkpoint: a --save directory (latest iteration) or an iter_* directory; or Megatron-LM's "
                 "(torch_dist or torch format)")
      ->group(g);
  app.add_option("--load-hf", o.load_hf, "A Hugging Face model directory (config.json, *.safetensors, tokenizer.json)")
      ->group(g);
  app.add_option("--tokenizer-model", o.tokenizer_model, "A tokenizer.json (or a folder holding one) to use instead")
      ->group(g);
  app.add_option("--device", o.device, "auto (cuda when a GPU is present), cpu or cuda")->capture_default_str()->group(g);
  app.add_flag("--bf16", o.bf16, "bf16 weights and activations (default fp32)")->group(g);
}

void check_model_source(const ModelSourceOptions& o) {
  if (o.load.empty() == o.load_hf.empty()) throw ArgumentError("give one of --load DIR or --load-hf DIR");
  if (o.device != "auto" && o.device != "cpu" && o.device != "cuda")
    throw ArgumentError(fmt::format("--device {}: expected auto, cpu or cuda", o.device));
}

Device model_source_device(const ModelSourceOptions& o) {
  try {
    return inference_device(o.device);
  } catch (const ArgumentError&) {
    throw;
  } catch (const UserError& e) {
    throw ArgumentError(e.what());
  }
}

LoadedModel load_model_source(const ModelSourceOptions& o, Device device, const ModelParallelConfig& par) {
  LoadedModel m = !o.load_hf.empty() ? load_hf_model(o.load_hf, o.dtype(), device, par)
                                     : load_checkpoint_model(o.load, o.dtype(), device, par);
  if (!o.tokenizer_model.empty()) set_tokenizer(m, o.tokenizer_model);
  return m;
}

}  // namespace mt
