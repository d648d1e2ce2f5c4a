// Test tool for the Hugging Face parity tests (tests/python/test_hf_gpt2_parity.py,
// test_hf_llama_parity.py), not a user command: loads a transformers model directory (GPT-2, Llama,
// Mistral, Qwen 2, Qwen 3) into our model and writes, for the batch in
// INPUT.safetensors ("input_ids", "labels": int64 [B, T]), a safetensors file with
//   "logits" [B, T, vocab] (fp32, eval mode), "loss" [1] (mean cross-entropy), and the gradient
//   of that loss for every parameter under "grad.<our name>" (our layout).
// With EXPORT_DIR, also writes the loaded model back out as a Hugging Face directory
// (save_hf_model, before the gradient step), for the conversion tests (test_hf_convert.py).
#include <cstdio>

#include "checkpoint/hf_export.h"
#include "checkpoint/hf_import.h"
#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "probe_output.h"

using namespace mt;

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: hf_probe HF_DIR INPUT.safetensors OUTPUT.safetensors [EXPORT_DIR]\n");
    return 2;
  }
  try {
    TransformerConfig cfg = read_hf_config(argv[1], DType::F32, 128);
    cfg.hidden_dropout = cfg.attention_dropout = 0.0f;
    GPTModel model(cfg, Device::cpu());
    load_hf_weights(argv[1], model);
    if (argc == 5) save_hf_model(model, argv[4]);
    SafetensorsReader in(argv[2]);
    Tensor tokens = probe::token_ids(in.get("input_ids")), labels = probe::token_ids(in.get("labels"));
    probe::write_output(model, tokens, labels, argv[3]);
  } catch (const UserError& e) {
    std::fprintf(stderr, "hf_probe: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
