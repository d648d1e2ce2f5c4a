#include "train/model_presets.h"

#include <set>

#include "core/error.h"

namespace mt {

namespace {

using Flags = std::vector<std::pair<std::string, std::string>>;

// Llama's common part: RMSNorm, SwiGLU, RoPE, no biases, no dropout.
Flags llama(Flags extra) {
  Flags f = {{"--normalization", "RMSNorm"}, {"--swiglu", ""}, {"--position-embedding-type", "rope"},
             {"--disable-bias-linear", ""}, {"--hidden-dropout", "0"}, {"--attention-dropout", "0"}};
  f.insert(f.end(), extra.begin(), extra.end());
  return f;
}

}  // namespace

const std::vector<ModelPreset>& model_presets() {
  static const std::vector<ModelPreset> presets = {
      {"gpt2-124m", "GPT-2 small",
       {{"--num-layers", "12"}, {"--hidden-size", "768"}, {"--num-attention-heads", "12"}, {"--seq-length", "1024"},
        {"--max-position-embeddings", "1024"}}},
      {"gpt2-350m", "GPT-2 medium",
       {{"--num-layers", "24"}, {"--hidden-size", "1024"}, {"--num-attention-heads", "16"}, {"--seq-length", "1024"},
        {"--max-position-embeddings", "1024"}}},
      {"llama2-7b", "Llama 2 7B",
       llama({{"--num-layers", "32"}, {"--hidden-size", "4096"}, {"--ffn-hidden-size", "11008"},
              {"--num-attention-heads", "32"}, {"--seq-length", "4096"}, {"--max-position-embeddings", "4096"},
              {"--rotary-base", "10000"}, {"--norm-epsilon", "1e-5"}, {"--untie-embeddings-and-output-weights", ""}})},
      {"llama3.2-1b", "Llama 3.2 1B",
       llama({{"--num-layers", "16"}, {"--hidden-size", "2048"}, {"--ffn-hidden-size", "8192"},
              {"--num-attention-heads", "32"}, {"--group-query-attention", ""}, {"--num-query-groups", "8"},
              {"--seq-length", "2048"}, {"--max-position-embeddings", "131072"}, {"--rotary-base", "500000"},
              {"--use-rope-scaling", ""}, {"--rope-scaling-factor", "32"}, {"--norm-epsilon", "1e-5"}})},
      {"llama3.2-3b", "Llama 3.2 3B",
       llama({{"--num-layers", "28"}, {"--hidden-size", "3072"}, {"--ffn-hidden-size", "8192"},
              {"--num-attention-heads", "24"}, {"--group-query-attention", ""}, {"--num-query-groups", "8"},
              {"--seq-length", "2048"}, {"--max-position-embeddings", "131072"}, {"--rotary-base", "500000"},
              {"--use-rope-scaling", ""}, {"--rope-scaling-factor", "32"}, {"--norm-epsilon", "1e-5"}})},
      {"llama3.1-8b", "Llama 3.1 8B",
       llama({{"--num-layers", "32"}, {"--hidden-size", "4096"}, {"--ffn-hidden-size", "14336"},
              {"--num-attention-heads", "32"}, {"--group-query-attention", ""}, {"--num-query-groups", "8"},
              {"--seq-length", "8192"}, {"--max-position-embeddings", "131072"}, {"--rotary-base", "500000"},
              {"--use-rope-scaling", ""}, {"--rope-scaling-factor", "8"}, {"--norm-epsilon", "1e-5"},
              {"--untie-embeddings-and-output-weights", ""}})},
      {"mistral-7b", "Mistral 7B v0.3 (full attention; no sliding window)",
       llama({{"--num-layers", "32"}, {"--hidden-size", "4096"}, {"--ffn-hidden-size", "14336"},
              {"--num-attention-heads", "32"}, {"--group-query-attention", ""}, {"--num-query-groups", "8"},
              {"--seq-length", "4096"}, {"--max-position-embeddings", "32768"}, {"--rotary-base", "1000000"},
              {"--norm-epsilon", "1e-5"}, {"--untie-embeddings-and-output-weights", ""}})},
      {"qwen2.5-0.5b", "Qwen 2.5 0.5B",
       llama({{"--num-layers", "24"}, {"--hidden-size", "896"}, {"--ffn-hidden-size", "4864"},
              {"--num-attention-heads", "14"}, {"--group-query-attention", ""}, {"--num-query-groups", "2"},
              {"--seq-length", "4096"}, {"--max-position-embeddings", "32768"}, {"--rotary-base", "1000000"},
              {"--add-qkv-bias", ""}, {"--norm-epsilon", "1e-6"}})},
      {"qwen3-0.6b", "Qwen 3 0.6B",
       llama({{"--num-layers", "28"}, {"--hidden-size", "1024"}, {"--ffn-hidden-size", "3072"},
              {"--num-attention-heads", "16"}, {"--group-query-attention", ""}, {"--num-query-groups", "8"},
              {"--kv-channels", "128"}, {"--seq-length", "4096"}, {"--max-position-embeddings", "40960"},
              {"--rotary-base", "1000000"}, {"--qk-layernorm", ""}, {"--norm-epsilon", "1e-6"}})},
      {"qwen3-8b", "Qwen 3 8B",
       llama({{"--num-layers", "36"}, {"--hidden-size", "4096"}, {"--ffn-hidden-size", "12288"},
              {"--num-attention-heads", "32"}, {"--group-query-attention", ""}, {"--num-query-groups", "8"},
              {"--kv-channels", "128"}, {"--seq-length", "4096"}, {"--max-position-embeddings", "40960"},
              {"--rotary-base", "1000000"}, {"--qk-layernorm", ""}, {"--norm-epsilon", "1e-6"},
              {"--untie-embeddings-and-output-weights", ""}})},
      {"mixtral-8x7b", "Mixtral 8x7B (8 experts, top-2; full attention, no sliding window)",
       llama({{"--num-layers", "32"}, {"--hidden-size", "4096"}, {"--ffn-hidden-size", "14336"},
              {"--num-attention-heads", "32"}, {"--group-query-attention", ""}, {"--num-query-groups", "8"},
              {"--seq-length", "4096"}, {"--max-position-embeddings", "32768"}, {"--rotary-base", "1000000"},
              {"--norm-epsilon", "1e-5"}, {"--untie-embeddings-and-output-weights", ""}, {"--num-experts", "8"},
              {"--moe-router-topk", "2"}, {"--moe-aux-loss-coeff", "0.02"}})},
      {"qwen3-30b-a3b", "Qwen3-MoE 30B-A3B (128 experts, top-8)",
       llama({{"--num-layers", "48"}, {"--hidden-size", "2048"}, {"--ffn-hidden-size", "6144"},
              {"--moe-ffn-hidden-size", "768"}, {"--num-attention-heads", "32"}, {"--group-query-attention", ""},
              {"--num-query-groups", "4"}, {"--kv-channels", "128"}, {"--seq-length", "4096"},
              {"--max-position-embeddings", "40960"}, {"--rotary-base", "1000000"}, {"--qk-layernorm", ""},
              {"--norm-epsilon", "1e-6"}, {"--untie-embeddings-and-output-weights", ""}, {"--num-experts", "128"},
              {"--moe-router-topk", "8"}, {"--moe-aux-loss-coeff", "0.001"}})},
  };
  return presets;
}

const ModelPreset* find_model_preset(const std::string& name) {
  for (const ModelPreset& p : model_presets())
    if (p.name == name) return &p;
  return nullptr;
}

std::string model_preset_names() {
  std::string s;
  for (const ModelPreset& p : model_presets()) s += (s.empty() ? "" : ", ") + p.name;
  return s;
}

std::vector<std::string> expand_model_preset(const std::vector<std::string>& args, std::string* expanded) {
  // The flags given explicitly (a preset's flag with another spelling, e.g. --layernorm-epsilon
  // for --norm-epsilon, is an alias CLI11 would reject twice: treat the two as one).
  std::set<std::string> given;
  for (const std::string& a : args) {
    if (a.rfind("--", 0) != 0) continue;
    std::string f = a.substr(0, a.find('='));
    given.insert(f == "--layernorm-epsilon" ? "--norm-epsilon" : f);
  }
  std::vector<std::string> out;
  bool expanded_one = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name;
    if (args[i] == "--model-preset") {
      if (i + 1 >= args.size()) MT_USER_ERROR("--model-preset needs a name: one of {}", model_preset_names());
      name = args[++i];
    } else if (args[i].rfind("--model-preset=", 0) == 0) {
      name = args[i].substr(15);
    } else {
      out.push_back(args[i]);
      continue;
    }
    if (expanded_one) MT_USER_ERROR("--model-preset is given twice (the second: '{}')", name);
    expanded_one = true;
    const ModelPreset* p = find_model_preset(name);
    if (!p) MT_USER_ERROR("--model-preset '{}' is not one of {}", name, model_preset_names());
    out.push_back("--model-preset");  // kept, so the run knows its name
    out.push_back(name);
    for (const auto& [flag, value] : p->flags) {
      if (given.count(flag)) continue;
      out.push_back(flag);
      if (!value.empty()) out.push_back(value);
      if (expanded) *expanded += (expanded->empty() ? "" : " ") + flag + (value.empty() ? "" : " " + value);
    }
  }
  return out;
}

}  // namespace mt
