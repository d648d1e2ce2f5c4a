// Run under mpirun. Checkpoints in the training loop across layouts:
//
//   checkpoint_resume resume:tp2 resume:tp1:distopt ...
//       under the named layout (tpN over the world, the rest data-parallel; :distopt the
//       distributed optimizer; :bf16), 20 iterations straight equal 10 + save + load + 10 bit for
//       bit: every loss and every final parameter (dropout on).
//   checkpoint_resume reshard      (4 ranks)
//       saves at iteration 10 under TP=2 x DP=2 with the distributed optimizer (fp32, no
//       dropout), continues 10 iterations under that layout, and again from the same checkpoint
//       under 1 rank, TP=4 and DP=4: every continuation loss within 1e-5 relative.
//   checkpoint_resume reshard_pp   (4 ranks)
//       the same from TP=2 x PP=2 (4 layers, distributed optimizer over nothing: DP=1) to
//       1 rank (PP=1), PP=4 and TP=1 x PP=2 x DP=2: the stages' pieces are global names.
//   resume:pp2 (2 ranks): resume bit for bit under a pipeline; :cpN under context parallelism (the
//       context-parallel ranks hold replicas, as data-parallel ones do).
//   :moe (resume:tp1:ep2:moe): the tiny Mixtral-style MoE with expert biases; reshard_ep (4 ranks)
//       saves it under TP=2 x EP=2 with the distributed optimizer and continues under 1 rank,
//       EP=4, EP=2 x DP=2 (expert data parallel 2) and TP=4: experts are stored by global index.
//   :llama on either (resume:tp2:llama, reshard:llama): the tiny Llama instead of the GPT (RMSNorm,
//       SwiGLU with its stacked [gate; up] linear_fc1, GQA, RoPE, untied output layer; 4 query
//       groups for the reshard, so that TP=4 splits them).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "mpi_training.h"

using namespace mt;
namespace fs = std::filesystem;

namespace {

TrainingArgs tiny(const std::string& spec) {
  // Vocabulary 250: padded to 256 under TP 1, 2 and 4 alike.
  const bool llama = spec.find(":llama") != std::string::npos;
  const bool moe = spec.find(":moe") != std::string::npos || spec.rfind("reshard_ep", 0) == 0;
  TrainingArgs a = moe     ? testing::tiny_mixtral_args(250, 32)
                   : llama ? testing::tiny_llama_args(250, 32)
                           : testing::tiny_training_args(250, 32);
  if (moe && spec.rfind("reshard", 0) == 0) a.num_query_groups = 4;  // TP=4 splits them
  if (moe) {  // the expert biases are saved and restored too
    a.moe_router_enable_expert_bias = true;
    a.moe_router_bias_update_rate = 0.01;
  }
  if (llama && spec.rfind("reshard", 0) == 0) a.num_query_groups = 4;
  if (spec.find("pp") != std::string::npos) a.num_layers = 4;
  a.lr_warmup_iters = 2;
  a.eval_interval = 5;
  a.eval_iters = 1;
  a.hidden_dropout = a.attention_dropout = 0.1f;  // resume must reproduce the dropout masks too
  return a;
}

TrainingArgs with_layout(TrainingArgs a, const std::string& spec) {
  const size_t p = spec.find("tp");  // "tp2", "tp1:pp2", "pp2" (TP 1)
  a.tensor_model_parallel_size = p == std::string::npos ? 1 : std::atoi(spec.c_str() + p + 2);
  a.use_distributed_optimizer = spec.find(":distopt") != std::string::npos;
  a.bf16 = spec.find(":bf16") != std::string::npos;
  const size_t pp = spec.find("pp");
  a.pipeline_model_parallel_size = pp == std::string::npos ? 1 : std::atoi(spec.c_str() + pp + 2);
  const size_t ep = spec.find(":ep");
  a.expert_model_parallel_size = ep == std::string::npos ? 1 : std::atoi(spec.c_str() + ep + 3);
  const size_t cp = spec.find(":cp");
  a.context_parallel_size = cp == std::string::npos ? 1 : std::atoi(spec.c_str() + cp + 3);
  return a;
}

using testing::report;
using testing::shared_dir;
TrainResult run(const TrainingArgs& a, ProcessGroups* groups = nullptr) { return testing::run_training(a, groups); }

int resume(const std::string& spec) {
  const TrainingArgs a = with_layout(tiny(spec), spec);
  const std::string dir = shared_dir("resume");
  const TrainResult straight = run(a);
  TrainingArgs first = a;
  first.save = dir;
  first.exit_interval = 10;
  const TrainResult r1 = run(first);
  TrainingArgs second = a;
  second.load = dir;
  const TrainResult r2 = run(second);
  int bad = 0;
  double worst = 0;
  if (r1.train_losses.size() != 10 || r2.train_losses.size() != 10 || r2.iterations != 20) {
    std::fprintf(stderr, "%s: %zu + %zu iterations\n", spec.c_str(), r1.train_losses.size(), r2.train_losses.size());
    ++bad;
  } else {
    for (size_t i = 0; i < 20; ++i) {
      const double got = i < 10 ? r1.train_losses[i] : r2.train_losses[i - 10];
      worst = std::max(worst, std::abs(got - straight.train_losses[i]));
      if (got != straight.train_losses[i]) {
        std::fprintf(stderr, "%s: iteration %zu loss %.9g vs straight %.9g\n", spec.c_str(), i + 1, got,
                     straight.train_losses[i]);
        ++bad;
      }
    }
  }
  for (const auto& [name, p] : straight.final_params) {
    if (r2.final_params.at(name) != p) {
      std::fprintf(stderr, "%s: final %s differs\n", spec.c_str(), name.c_str());
      ++bad;
    }
  }
  auto w = dist::world();
  w->barrier();
  if (w->rank() == 0) fs::remove_all(dir);
  return report("resume " + spec, bad, worst);
}

int reshard(const std::string& spec) {
  const bool pipeline = spec.rfind("reshard_pp", 0) == 0, experts = spec.rfind("reshard_ep", 0) == 0;
  auto w = dist::world();
  if (w->size() != 4) {
    std::fprintf(stderr, "reshard needs 4 ranks\n");
    return 1;
  }
  TrainingArgs base = tiny(spec);
  base.hidden_dropout = base.attention_dropout = 0.0f;
  const std::string dir = shared_dir("reshard");
  const std::string from = pipeline ? "tp2:pp2:distopt" : experts ? "tp2:ep2:distopt" : "tp2:distopt";
  TrainingArgs save = with_layout(base, from);
  save.save = dir;
  save.exit_interval = 10;
  run(save);
  TrainingArgs cont = with_layout(base, from);
  cont.load = dir;
  const TrainResult ref = run(cont);
  int failures = 0;
  auto compare = [&](const std::string& what, const TrainResult& got) {
    int bad = 0;
    double worst = 0;
    if (got.train_losses.size() != ref.train_losses.size() || got.train_losses.size() != 10) {
      std::fprintf(stderr, "%s: %zu iterations, reference %zu\n", what.c_str(), got.train_losses.size(),
                   ref.train_losses.size());
      ++bad;
    } else {
      for (size_t i = 0; i < ref.train_losses.size(); ++i) {
        const double rel = std::abs(got.train_losses[i] - ref.train_losses[i]) / std::abs(ref.train_losses[i]);
        worst = std::max(worst, rel);
        if (!(rel <= 1e-5)) {
          std::fprintf(stderr, "%s: iteration %zu loss %.9g vs the saving layout's %.9g\n", what.c_str(), i + 11,
                       got.train_losses[i], ref.train_losses[i]);
          ++bad;
        }
      }
    }
    failures += report(what, bad, worst);
  };
  {
    ProcessGroups self(dist::self("world"), {});
    TrainingArgs one = base;
    one.load = dir;
    compare(spec + " " + from + " -> 1 rank", run(one, &self));
  }
  for (const std::string to : pipeline  ? std::vector<std::string>{"tp1:pp4", "tp1:pp2:distopt"}
                              : experts ? std::vector<std::string>{"tp1:ep4", "tp1:ep2:distopt", "tp4"}
                                        : std::vector<std::string>{"tp4", "tp1"}) {
    TrainingArgs next = with_layout(base, to);
    next.load = dir;
    compare(spec + " " + from + " -> " + to + " (rest data-parallel)", run(next));
  }
  w->barrier();
  if (w->rank() == 0) fs::remove_all(dir);
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  dist::init(true);
  int failures = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("reshard", 0) == 0)
      failures += reshard(arg);
    else if (arg.rfind("resume:", 0) == 0)
      failures += resume(arg.substr(7));
    else {
      std::fprintf(stderr, "unknown test '%s'\n", arg.c_str());
      ++failures;
    }
  }
  return failures ? 1 : 0;
}
