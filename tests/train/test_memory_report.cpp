// The memory report (train/memory_report.h): how the prediction follows the layout and the
// recomputation choices, and that it lands within 10% of the measured host-tensor peak of a few
// training iterations on CPU, for GPT, a Llama-like, an MoE and a multi-latent-attention model,
// with and without recomputation.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "train/memory_report.h"
#include "train/trainer.h"

using namespace mt;

namespace {

TransformerConfig gpt_config() {
  TransformerConfig c;
  c.num_layers = 4;
  c.hidden_size = 64;
  c.ffn_hidden_size = 256;
  c.num_attention_heads = 4;
  c.seq_length = 64;
  c.max_position_embeddings = 64;
  c.padded_vocab_size = 384;
  return c;
}

MemoryLayout one_rank(const TransformerConfig& c) {
  MemoryLayout l;
  l.micro_batch_size = 4;
  l.num_microbatches = 8;
  ModelChunkConfig whole;
  whole.num_layers = c.num_layers;
  l.chunks = {whole};
  return l;
}

TrainingArgs tiny(bool llama, bool moe = false) {
  TrainingArgs a;
  a.mock_data = true;
  a.vocab_size = 300;
  a.num_layers = 4;
  a.hidden_size = 64;
  a.num_attention_heads = 4;
  a.seq_length = 64;
  a.micro_batch_size = 4;
  a.global_batch_size = 8;
  a.train_iters = 3;
  a.log_interval = 1;
  a.eval_iters = 0;
  a.device = "cpu";
  if (llama) {
    a.normalization = "RMSNorm";
    a.swiglu = true;
    a.ffn_hidden_size = 192;
    a.position_embedding_type = "rope";
    a.group_query_attention = true;
    a.num_query_groups = 2;
    a.disable_bias_linear = true;
    a.untie_embeddings_and_output_weights = true;
  }
  if (moe) {  // Mixtral-like: every MLP four SwiGLU experts, top-2
    a.num_experts = 4;
    a.moe_router_topk = 2;
    a.moe_aux_loss_coeff = 0.01;
    a.ffn_hidden_size = 128;
  }
  return a;
}

}  // namespace

TEST(MemoryReport, ActivationsFollowTheLayersSavedTensors) {
  TransformerConfig c = gpt_config();
  const MemoryEstimate keep = estimate_memory(c, one_rank(c));
  // Per layer and token, fp32: input, ln1's output, qkv (3h), attention output, x1, ln2's output,
  // fc1's output and GeLU's (4h each) = 16 h elements, plus the norms' fp32 statistics (4 per
  // token) and lse (one per head); then the final norm's input, statistics and output.
  const int64_t N = 4 * 64, h = 64;
  const int64_t layer = N * (16 * h * 4 + 4 * 4 + 4 * 4);
  EXPECT_EQ(keep.activations_per_microbatch, 4 * layer + N * (2 * h * 4 + 2 * 4));
  // --recompute-gelu keeps fc1's output only: 4h less per layer.
  c.recompute_gelu = true;
  EXPECT_EQ(estimate_memory(c, one_rank(c)).activations_per_microbatch, keep.activations_per_microbatch - 4 * N * 4 * h * 4);
}

// Multi-latent attention keeps its own tensors (multi_latent_attention.h).
TEST(MemoryReport, MlaActivationsFollowItsSavedTensors) {
  TransformerConfig c = gpt_config();
  c.multi_latent_attention = true;
  c.qk_layernorm = true;
  c.q_lora_rank = 16;
  c.kv_lora_rank = 16;
  c.qk_head_dim = 8;
  c.qk_pos_emb_head_dim = 8;
  c.v_head_dim = 16;  // D = 16
  const MemoryEstimate keep = estimate_memory(c, one_rank(c));
  // Per layer and token, fp32: input, ln1's output (the down projections' input), the q and kv
  // latents' norm inputs and up projections' inputs (16 each, twice), the packed qkv (4 heads x 3 x 16),
  // the core output (4 x 16), linear_proj's input (4 x 16), x1, ln2's output, fc1's and GeLU's
  // output (4h each): 1152 elements; fp32 statistics: ln1, ln2 (2 each), the latents' RMSNorms (1
  // each) and lse (one per head).
  const int64_t N = 4 * 64, h = 64;
  const int64_t layer = N * (1152 * 4 + 10 * 4);
  EXPECT_EQ(keep.activations_per_microbatch, 4 * layer + N * (2 * h * 4 + 2 * 4));
  // core_attn drops the output, its copy and lse; layernorm the norms' outputs.
  c.recompute_granularity = RecomputeGranularity::Selective;
  c.recompute_modules = parse_recompute_modules({"core_attn"});
  EXPECT_EQ(estimate_memory(c, one_rank(c)).activations_per_microbatch,
            keep.activations_per_microbatch - 4 * N * (128 * 4 + 4 * 4));
  c.recompute_modules = parse_recompute_modules({"layernorm"});
  EXPECT_EQ(estimate_memory(c, one_rank(c)).activations_per_microbatch,
            keep.activations_per_microbatch - 4 * N * 2 * h * 4);
}

TEST(MemoryReport, RecomputationParallelismAndPipeliningChangeThePrediction) {
  const TransformerConfig c = gpt_config();
  const MemoryEstimate keep = estimate_memory(c, one_rank(c));
  TransformerConfig full = c;
  full.recompute_granularity = RecomputeGranularity::Full;
  full.recompute_method = RecomputeMethod::Uniform;
  full.recompute_num_layers = 1;
  EXPECT_LT(estimate_memory(full, one_rank(full)).activations, keep.activations / 5);
  TransformerConfig sel = c;
  sel.recompute_granularity = RecomputeGranularity::Selective;
  sel.recompute_modules = parse_recompute_modules({"core_attn", "layernorm"});
  EXPECT_LT(estimate_memory(sel, one_rank(sel)).activations, keep.activations);

  MemoryLayout tp = one_rank(c);
  tp.tp = 2;
  const MemoryEstimate t = estimate_memory(c, tp);
  tp.sequence_parallel = true;
  const MemoryEstimate s = estimate_memory(c, tp);
  EXPECT_LT(t.activations, keep.activations);
  EXPECT_LT(s.activations, t.activations);  // the hidden states' rows split too
  MemoryLayout cp = one_rank(c);
  cp.cp = 2;  // half the tokens per rank
  EXPECT_LT(estimate_memory(c, cp).activations, keep.activations * 6 / 10);

  MemoryLayout dp = one_rank(c);
  dp.dp = 4;
  dp.distributed_optimizer = true;
  EXPECT_NEAR(double(estimate_memory(c, dp).optimizer), double(keep.optimizer) / 4, 64);

  // 1F1B: rank r of P keeps min(M, P - r) microbatches in flight; the first stage has no loss.
  MemoryLayout pp = one_rank(c);
  pp.pp = 4;
  ModelChunkConfig first;
  first.post_process = false;
  first.num_layers = 1;
  pp.chunks = {first};
  EXPECT_EQ(estimate_memory(c, pp).microbatches_in_flight, 4);
  pp.pp_rank = 3;
  pp.chunks[0].pre_process = false;
  pp.chunks[0].post_process = true;
  pp.chunks[0].first_layer = 3;
  EXPECT_EQ(estimate_memory(c, pp).microbatches_in_flight, 1);
  pp.num_microbatches = 2;
  pp.pp_rank = 0;
  EXPECT_EQ(estimate_memory(c, pp).microbatches_in_flight, 2);
}

// The prediction against the allocator's measured peak over a few iterations.
TEST(MemoryReport, PredictedPeakIsWithinTenPercentOfTheMeasuredHostPeak) {
  std::FILE* devnull = std::fopen("/dev/null", "w");
  for (bool llama : {false, true}) {
    for (int rc = 0; rc < 4; ++rc) {
      TrainingArgs a = tiny(llama);
      std::string name = llama ? "llama" : "gpt";
      if (rc == 1) {
        a.recompute_granularity = "full";
        a.recompute_method = "uniform";
        a.recompute_num_layers = 1;
        name += " full uniform 1";
      } else if (rc == 2) {
        a.recompute_granularity = "full";
        a.recompute_method = "block";
        a.recompute_num_layers = 2;
        name += " full block 2";
      } else if (rc == 3) {
        a.recompute_activations = true;
        a.recompute_modules = {"core_attn", "layernorm", "mlp"};
        name += " selective";
      }
      const TrainResult r = pretrain_gpt(a, devnull);
      ASSERT_GT(r.measured_peak_bytes, 0) << name;
      const double ratio = double(r.predicted_peak_bytes) / double(r.measured_peak_bytes);
      std::printf("%-24s predicted %.2f MiB, measured %.2f MiB (%+.1f%%)\n", name.c_str(),
                  double(r.predicted_peak_bytes) / 1048576.0, double(r.measured_peak_bytes) / 1048576.0,
                  100.0 * (ratio - 1.0));
      EXPECT_NEAR(ratio, 1.0, 0.10) << name << ": predicted " << r.predicted_peak_bytes << ", measured "
                                    << r.measured_peak_bytes;
    }
  }
  // MoE, with and without recomputation.
  for (const std::vector<std::string>& modules : std::vector<std::vector<std::string>>{{}, {"moe"}, {"moe_act", "layernorm"}}) {
    TrainingArgs a = tiny(true, true);
    std::string name = "moe";
    for (const auto& m : modules) name += " " + m;
    if (!modules.empty()) {
      a.recompute_granularity = "selective";
      a.recompute_modules = modules;
    }
    const TrainResult r = pretrain_gpt(a, devnull);
    const double ratio = double(r.predicted_peak_bytes) / double(r.measured_peak_bytes);
    std::printf("%-24s predicted %.2f MiB, measured %.2f MiB (%+.1f%%)\n", name.c_str(),
                double(r.predicted_peak_bytes) / 1048576.0, double(r.measured_peak_bytes) / 1048576.0,
                100.0 * (ratio - 1.0));
    EXPECT_NEAR(ratio, 1.0, 0.10) << name;
  }
  // Multi-latent attention (with and without q LoRA), with and without recomputation.
  for (int rc = 0; rc < 4; ++rc) {
    TrainingArgs a = tiny(true);
    a.multi_latent_attention = true;
    a.group_query_attention = false;
    a.num_query_groups = 1;
    a.qk_layernorm = true;
    a.q_lora_rank = rc == 3 ? 0 : 24;
    a.kv_lora_rank = 16;
    a.qk_head_dim = 16;
    a.qk_pos_emb_head_dim = 8;
    a.v_head_dim = 16;
    std::string name = rc == 3 ? "mla no q lora" : "mla";
    if (rc == 1) {
      a.recompute_granularity = "selective";
      a.recompute_modules = {"core_attn", "layernorm"};
      name += " core_attn layernorm";
    } else if (rc == 2) {
      a.recompute_granularity = "full";
      a.recompute_method = "uniform";
      a.recompute_num_layers = 1;
      name += " full uniform 1";
    }
    const TrainResult r = pretrain_gpt(a, devnull);
    const double ratio = double(r.predicted_peak_bytes) / double(r.measured_peak_bytes);
    std::printf("%-24s predicted %.2f MiB, measured %.2f MiB (%+.1f%%)\n", name.c_str(),
                double(r.predicted_peak_bytes) / 1048576.0, double(r.measured_peak_bytes) / 1048576.0,
                100.0 * (ratio - 1.0));
    EXPECT_NEAR(ratio, 1.0, 0.10) << name;
  }
  std::fclose(devnull);
}
