// Test tool for the Megatron-LM checkpoint tests (tests/python/test_megatron_lm_checkpoint.py), not a
// user command: loads the latest checkpoint of CKPT_DIR (a native checkpoint, e.g. one `megatron
// convert` wrote) into a single-rank model of the architecture its common.json records, and writes,
// for the batch in INPUT.safetensors ("input_ids", "labels": int64 [B, T]), the probe output
// (probe_output.h: logits, loss, gradients).
#include <cstdio>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_stream.h"
#include "checkpoint/hf_weights.h"
#include "core/error.h"
#include "probe_output.h"
#include "train/checkpoint_architecture.h"

using namespace mt;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: checkpoint_probe CKPT_DIR INPUT.safetensors OUTPUT.safetensors\n");
    return 2;
  }
  try {
    const CheckpointReader reader(argv[1], -1, nullptr);
    TransformerConfig cfg = config_from_checkpoint_args(reader.common().at("args"), reader.path());
    cfg.padded_vocab_size = pad_vocab_size(cfg.vocab_size, 128);
    cfg.hidden_dropout = cfg.attention_dropout = 0.0f;
    cfg.params_dtype = DType::F32;
    GPTModel model(cfg, Device::cpu());
    ParamAndGradBuffer& buf = model.buffer();
    for (const ParamInfo& p : buf.infos()) {
      const bool vocab = p.global_shape.size() == 2 && p.global_shape[0] == cfg.padded_vocab_size &&
                         (p.name == "embedding.word_embeddings.weight" || p.name == "output_layer.weight");
      Tensor dst = buf.param(buf.find(p.name));
      if (vocab) {
        dst.zero_();
        dst = dst.narrow0(0, cfg.vocab_size);
      }
      assign_param(read_checkpoint_tensor(reader, p.name), dst);
    }
    SafetensorsReader in(argv[2]);
    Tensor tokens = probe::token_ids(in.get("input_ids")), labels = probe::token_ids(in.get("labels"));
    probe::write_output(model, tokens, labels, argv[3]);
  } catch (const UserError& e) {
    std::fprintf(stderr, "checkpoint_probe: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
