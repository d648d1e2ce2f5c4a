// Writes a random Hugging Face model of a given shape through our own export path
// (write_hf_model, one tensor at a time), for bench/convert_benchmark.py: an 8B-parameter model
// needs no framework and no memory for the model. Not a user command.
//
//   hf_random_model OUT_DIR layers hidden ffn heads groups vocab max_positions rope_theta
//                   rope_scaling_factor(0: none) tied(0|1) [max_shard_bytes]
// Weights are bf16, uniform in [-0.05, 0.05) (norm weights 1 +- 0.05), from a fixed seed.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "checkpoint/hf_export.h"
#include "core/error.h"
#include "core/half.h"

using namespace mt;

int main(int argc, char** argv) {
  if (argc != 12 && argc != 13) {
    std::fprintf(stderr,
                 "usage: hf_random_model OUT_DIR layers hidden ffn heads groups vocab max_positions rope_theta "
                 "rope_scaling_factor tied [max_shard_bytes]\n");
    return 2;
  }
  try {
    TransformerConfig c;
    c.num_layers = std::atoi(argv[2]);
    c.hidden_size = std::atoi(argv[3]);
    c.ffn_hidden_size = std::atoi(argv[4]);
    c.num_attention_heads = std::atoi(argv[5]);
    c.num_query_groups = std::atoi(argv[6]);
    c.vocab_size = c.padded_vocab_size = std::atoll(argv[7]);
    c.max_position_embeddings = c.seq_length = std::atoi(argv[8]);
    c.rotary_base = float(std::atof(argv[9]));
    c.rope_scaling_factor = float(std::atof(argv[10]));
    c.rope_scaling = c.rope_scaling_factor > 0;
    c.untie_embeddings_and_output_weights = std::atoi(argv[11]) == 0;
    c.normalization = Normalization::RMSNorm;
    c.gated_linear_unit = true;
    c.activation = Activation::Silu;
    c.position_embedding_type = PositionEmbedding::Rope;
    c.add_bias_linear = false;
    c.layernorm_epsilon = 1e-5f;
    c.hidden_dropout = c.attention_dropout = 0.0f;
    c.params_dtype = DType::BF16;
    HfExportOptions opt;
    if (argc == 13) opt.max_shard_bytes = std::strtoull(argv[12], nullptr, 10);
    uint64_t state = 0x9E3779B97F4A7C15ull;
    const HfExportStats st = write_hf_model(
        argv[1], c, DType::BF16,
        [&](const HfTensorMap& m) {
          Tensor t = Tensor::empty(m.shape, DType::BF16);
          const bool norm = m.name.find("layernorm") != std::string::npos;
          bf16* p = t.data<bf16>();
          for (int64_t i = 0; i < t.numel(); ++i) {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;  // xorshift64
            const float u = float(state >> 40) * (1.0f / 16777216.0f) - 0.5f;
            p[i] = to_bf16((norm ? 1.0f : 0.0f) + 0.1f * u);
          }
          return t;
        },
        opt);
    std::printf("wrote %s: %s, %d file(s), %.3f GB\n", argv[1], hf_architecture(st.family), st.files,
                double(st.bytes) / 1e9);
  } catch (const UserError& e) {
    std::fprintf(stderr, "hf_random_model: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
