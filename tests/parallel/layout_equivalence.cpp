// Run under mpirun: trains a tiny model (fp32) for 20 iterations with the single-rank layout on
// every rank (its own group of one), then with each layout named on the command line over the
// whole world, and checks that every iteration's loss is within 1e-5 relative of the
// single-rank run and every final parameter (gathered to its global shape) within 1e-5.
// The model is a GPT without dropout unless the layout says otherwise: :llama (RMSNorm, SwiGLU,
// grouped-query attention 8 heads / 2 groups, RoPE, untied, no biases), :llama31 (the same with
// Llama 3.1's RoPE scaling), :qwen (Llama plus q/k norm and QKV bias); :drop turns on hidden and
// attention dropout 0.1 (every layout must draw the single rank's masks); :mla puts multi-latent
// attention with YaRN into the model (alone: into :llama; mpi_training.h's with_mla).
//
//   layout_equivalence tp2 tp1:distopt tp2:sp ...   (tpN: tensor-parallel size, the rest of
//                                                     the world is data-parallel; :sp sequence
//                                                     parallel; :distopt distributed optimizer;
//                                                     :overlap --overlap-grad-reduce, and with
//                                                     :distopt --overlap-param-gather too,
//                                                     with TP > 1 --async-tensor-model-
//                                                     parallel-allreduce too; :tpoverlap
//                                                     --tp-comm-overlap; :ce3
//                                                     --cross-entropy-chunks 3;
//                                                     :ppN pipeline size N; :vpN N virtual
//                                                     stages; :zb the ZB-H1 schedule;
//                                                     :firstN / :lastN uneven stages;
//                                                     :layout=STR Megatron's layout string;
//                                                     :LN an N-layer model, also for the
//                                                     single-rank reference; :epN expert-
//                                                     parallel size N with an MoE model:
//                                                     :mixtral, :qwenmoe or :dsmoe (DeepSeek-V3's
//                                                     group-limited sigmoid router; mpi_training.h),
//                                                     :cap capacity factor 1 (dropping),
//                                                     :position drop by position; :mbN
//                                                     micro batch N, also for the reference;
//                                                     :global global_aux_loss, DP 1 layouts;
//                                                     :allgather the allgather dispatcher;
//                                                     :cpN context-parallel size N, :a2a its
//                                                     all-to-all exchange (else the p2p ring);
//                                                     :reset --reset-attention-mask and
//                                                     --reset-position-ids, :seqN sequence
//                                                     length N, :gqa4 four query groups, all
//                                                     also for the reference)
// A layout with :overlap must also give bit-identical losses and parameters to the same layout
// without it (the host backend runs a started collective at once, in the same order).
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "mpi_training.h"

using namespace mt;

namespace {

// The number after `key` in the spec (":pp2" -> 2), or -1.
int option(const std::string& spec, const std::string& key) {
  for (size_t at = spec.find(key); at != std::string::npos; at = spec.find(key, at + 1)) {
    const size_t d = at + key.size();
    if (d < spec.size() && std::isdigit(static_cast<unsigned char>(spec[d]))) return std::atoi(spec.c_str() + d);
  }
  return -1;
}

// The model (and dropout) a layout spec names; the single-rank reference is trained per model.
TrainingArgs model_for(const std::string& spec) {
  TrainingArgs a = spec.find(":dsmoe") != std::string::npos    ? testing::tiny_deepseek_moe_args(300, 32)
                   : spec.find(":mixtral") != std::string::npos ? testing::tiny_mixtral_args(300, 32)
                   : spec.find(":qwenmoe") != std::string::npos ? testing::tiny_qwen_moe_args(300, 32)
                   : spec.find(":llama31") != std::string::npos ? testing::tiny_llama_args(300, 32, true)
                   : spec.find(":llama") != std::string::npos ? testing::tiny_llama_args(300, 32)
                   : spec.find(":qwen") != std::string::npos  ? testing::tiny_qwen_args(300, 32)
                   : spec.find(":mla") != std::string::npos   ? testing::tiny_llama_args(300, 32)
                                                              : testing::tiny_training_args(300, 32);
  if (spec.find(":mla") != std::string::npos) a = testing::with_mla(a);
  if (spec.find(":drop") != std::string::npos) a.hidden_dropout = a.attention_dropout = 0.1f;
  // MoE capacity: each expert keeps ceil(tokens x k / E x 1.0) rows; the rest are dropped (the
  // same tokens in every layout), by probability or (:position) by position.
  if (spec.find(":cap") != std::string::npos) a.moe_expert_capacity_factor = 1.0;
  if (spec.find(":position") != std::string::npos) a.moe_token_drop_policy = "position";
  if (option(spec, ":mb") > 0) a.micro_batch_size = option(spec, ":mb");  // DP 8 needs micro batch 1
  // global_aux_loss: the same as one rank's when the layout has one data-parallel rank (TP only).
  if (spec.find(":global") != std::string::npos) a.moe_router_load_balancing_type = "global_aux_loss";
  if (spec.find(":allgather") != std::string::npos) a.moe_token_dispatcher_type = "allgather";
  if (spec.find(":reset") != std::string::npos) a.reset_attention_mask = a.reset_position_ids = true;
  if (option(spec, ":seq") > 0) a.seq_length = a.max_position_embeddings = option(spec, ":seq");
  if (spec.find(":gqa4") != std::string::npos) a.num_query_groups = 4;
  const int layers = option(spec, ":L");
  if (layers > 0) a.num_layers = layers;
  if (layers > 0 && a.moe_layer_freq != "1") {  // :qwenmoe: the first layer dense, the rest MoE
    a.moe_layer_freq = "[0";
    for (int l = 1; l < layers; ++l) a.moe_layer_freq += ",1";
    a.moe_layer_freq += "]";
  }
  return a;
}

std::string model_key(const std::string& spec) {
  const bool drop = spec.find(":drop") != std::string::npos;
  const int layers = option(spec, ":L");
  const std::string tail = std::string(drop ? ":drop" : "") + (layers > 0 ? ":L" + std::to_string(layers) : "") +
                           (spec.find(":cap") != std::string::npos ? ":cap" : "") +
                           (spec.find(":position") != std::string::npos ? ":position" : "") +
                           (option(spec, ":mb") > 0 ? ":mb" + std::to_string(option(spec, ":mb")) : "") +
                           (spec.find(":global") != std::string::npos ? ":global" : "") +
                           (spec.find(":reset") != std::string::npos ? ":reset" : "") +
                           (option(spec, ":seq") > 0 ? ":seq" + std::to_string(option(spec, ":seq")) : "") +
                           (spec.find(":gqa4") != std::string::npos ? ":gqa4" : "") +
                           (spec.find(":mla") != std::string::npos ? ":mla" : "");
  for (const char* m : {":dsmoe", ":mixtral", ":qwenmoe", ":llama31", ":llama", ":qwen"})
    if (spec.find(m) != std::string::npos) return std::string(m) + tail;
  return tail;
}

// Exact equality of two runs of one layout: same losses, same parameters, bit for bit.
int compare_exact(const TrainResult& a, const TrainResult& b, const std::string& layout,
                  const char* without = "overlap") {
  int bad = a.train_losses != b.train_losses ? 1 : 0;
  for (const auto& [name, pa] : a.final_params)
    if (!b.final_params.count(name) || b.final_params.at(name) != pa) ++bad;
  if (dist::world_rank() == 0)
    std::printf("%-16s vs the same layout without %s: %s\n", layout.c_str(), without,
                bad ? "DIFFERENT (FAIL)" : "bit-identical");
  return bad;
}

int compare(const TrainResult& ref, const TrainResult& got, const std::string& layout, int64_t vocab) {
  int bad = 0;
  double worst_loss = 0, worst_param = 0;
  if (ref.train_losses.size() != got.train_losses.size()) {
    std::fprintf(stderr, "%s: %zu iterations, reference %zu\n", layout.c_str(), got.train_losses.size(),
                 ref.train_losses.size());
    return 1;
  }
  for (size_t i = 0; i < ref.train_losses.size(); ++i) {
    const double rel = std::abs(got.train_losses[i] - ref.train_losses[i]) / std::abs(ref.train_losses[i]);
    worst_loss = std::max(worst_loss, rel);
    if (!(rel <= 1e-5)) {
      std::fprintf(stderr, "%s: iteration %zu loss %.9g vs single-rank %.9g (rel %.3g)\n", layout.c_str(), i + 1,
                   got.train_losses[i], ref.train_losses[i], rel);
      ++bad;
    }
  }
  for (const auto& [name, rp] : ref.final_params) {
    auto it = got.final_params.find(name);
    if (it == got.final_params.end()) {
      std::fprintf(stderr, "%s: parameter %s missing\n", layout.c_str(), name.c_str());
      ++bad;
      continue;
    }
    const auto& gp = it->second;
    const auto& rs = ref.final_param_shapes.at(name);
    const auto& gs = got.final_param_shapes.at(name);
    // The word embeddings' vocabulary padding depends on TP (Megatron pads to a multiple of
    // divisible-by x TP): compare the real vocabulary rows only.
    size_t n = rp.size();
    if (rs != gs) {
      if ((name != "embedding.word_embeddings.weight" && name != "output_layer.weight") || rs[1] != gs[1]) {
        std::fprintf(stderr, "%s: parameter %s has another shape\n", layout.c_str(), name.c_str());
        ++bad;
        continue;
      }
      n = size_t(vocab * rs[1]);
    }
    for (size_t i = 0; i < n; ++i) {
      const double d = std::abs(double(gp[i]) - double(rp[i]));
      worst_param = std::max(worst_param, d);
      if (!(d <= 1e-5)) {
        if (bad < 20)
          std::fprintf(stderr, "%s: %s[%zu] = %.9g vs single-rank %.9g\n", layout.c_str(), name.c_str(), i, gp[i],
                       rp[i]);
        ++bad;
      }
    }
  }
  if (dist::world_rank() == 0)
    std::printf("%-16s worst loss rel diff %.3g, worst param abs diff %.3g: %s\n", layout.c_str(), worst_loss,
                worst_param, bad ? "FAIL" : "ok");
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  dist::init(true);
  ProcessGroups self_groups(dist::self("world"), {});
  std::map<std::string, TrainResult> refs;  // per model: the single-rank run
  int failures = 0;
  for (int i = 1; i < argc; ++i) {
    std::string spec = argv[i];
    TrainingArgs a = model_for(spec);
    const std::string key = model_key(spec);
    if (!refs.count(key)) refs[key] = testing::run_training(a, &self_groups);
    const TrainResult& ref = refs.at(key);
    a.tensor_model_parallel_size = std::atoi(spec.c_str() + 2);
    a.sequence_parallel = spec.find(":sp") != std::string::npos;
    a.use_distributed_optimizer = spec.find(":distopt") != std::string::npos;
    a.tp_comm_overlap = spec.find(":tpoverlap") != std::string::npos;
    if (spec.find(":ce3") != std::string::npos) a.cross_entropy_chunks = 3;
    if (option(spec, ":pp") > 0) a.pipeline_model_parallel_size = option(spec, ":pp");
    if (option(spec, ":ep") > 0) a.expert_model_parallel_size = option(spec, ":ep");
    if (option(spec, ":cp") > 0) a.context_parallel_size = option(spec, ":cp");
    if (spec.find(":a2a") != std::string::npos) a.cp_comm_type = "a2a";
    if (option(spec, ":vp") > 0) a.num_virtual_stages_per_pipeline_rank = option(spec, ":vp");
    if (option(spec, ":first") >= 0) a.decoder_first_pipeline_num_layers = option(spec, ":first");
    if (option(spec, ":last") >= 0) a.decoder_last_pipeline_num_layers = option(spec, ":last");
    if (spec.find(":zb") != std::string::npos) a.pipeline_schedule = "zb-h1";
    if (const size_t at = spec.find(":layout="); at != std::string::npos) {
      const size_t end = spec.find(':', at + 8);
      a.pipeline_model_parallel_layout = spec.substr(at + 8, end == std::string::npos ? end : end - at - 8);
    }
    const bool overlap = spec.find(":overlap") != std::string::npos;
    TrainingArgs plain = a;  // what :overlap must reproduce bit for bit
    a.overlap_grad_reduce = overlap;
    a.overlap_param_gather = overlap && a.use_distributed_optimizer;
    a.async_tensor_model_parallel_allreduce = overlap && a.tensor_model_parallel_size > 1;
    // Activation recomputation (:rcfull full uniform 1, :rcblock full block 1, :rcsel selective with
    // every module) must reproduce the same layout without it bit for bit.
    const TrainingArgs kept = a;
    if (spec.find(":rcfull") != std::string::npos || spec.find(":rcblock") != std::string::npos) {
      a.recompute_granularity = "full";
      a.recompute_method = spec.find(":rcfull") != std::string::npos ? "uniform" : "block";
      a.recompute_num_layers = 1;
    }
    if (spec.find(":rcsel") != std::string::npos) {
      a.recompute_granularity = "selective";
      a.recompute_modules = {"core_attn", "layernorm", "mlp", "mlp_act", "moe", "moe_act", "shared_experts"};
    }
    const TrainResult got = testing::run_training(a);
    int bad = compare(ref, got, spec, a.vocab_size);
    if (overlap) bad += compare_exact(testing::run_training(plain), got, spec);
    if (spec.find(":rc") != std::string::npos) bad += compare_exact(testing::run_training(kept), got, spec, "recompute");
    auto w = dist::world();
    if (w->all_reduce_scalar(double(bad)) > 0) ++failures;
  }
  return failures ? 1 : 0;
}
