// Run under mpirun -np 2. Resharding across TP sizes whose padded vocabulary differs: vocabulary
// 300 with --make-vocab-size-divisible-by 64 pads to 320 under TP=1 and to 384 under TP=2
// (Megatron pads to a multiple of 64 x TP). Checkpoints store only the 300 real rows of the word
// embeddings and of their optimizer state, and loading sets the padding rows as init does (zero).
//
//   tp2 -> tp1: saved at iteration 10 under TP=2 (fp32, no dropout), continued 10 iterations under
//               TP=2 (the reference), and from the same checkpoint under 1 rank and under DP=2
//               with the distributed optimizer: every continuation loss within 1e-5 relative.
//   tp1 -> tp2: saved under DP=2 with the distributed optimizer, continued under it and under TP=2.
// Every run's padding rows are zero at the end, and the checkpoint's embedding tensors (weights,
// Adam moments) have global shape [300, hidden].
#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "checkpoint/checkpoint.h"
#include "../parallel/mpi_training.h"

using namespace mt;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kVocab = 300, kHidden = 32;

TrainingArgs tiny() {
  TrainingArgs a = testing::tiny_training_args(kVocab, 64);  // TP=1: 320 rows; TP=2: 384
  a.lr_warmup_iters = 2;
  return a;
}

TrainingArgs with_layout(TrainingArgs a, int tp, bool distopt) {
  a.tensor_model_parallel_size = tp;
  a.use_distributed_optimizer = distopt;
  return a;
}

using testing::report;
using testing::shared_dir;
TrainResult run(const TrainingArgs& a, ProcessGroups* groups = nullptr) { return testing::run_training(a, groups); }

// The word embeddings' padding rows (>= kVocab) are all zero.
int padding_nonzero(const std::string& what, const TrainResult& r, int64_t padded) {
  const std::vector<float>& w = r.final_params.at("embedding.word_embeddings.weight");
  if (int64_t(w.size()) != padded * kHidden) {
    std::fprintf(stderr, "%s: word embeddings hold %zu elements, want %lld\n", what.c_str(), w.size(),
                 (long long)(padded * kHidden));
    return 1;
  }
  for (int64_t i = kVocab * kHidden; i < int64_t(w.size()); ++i)
    if (w[size_t(i)] != 0.0f) {
      std::fprintf(stderr, "%s: padding row %lld is not zero\n", what.c_str(), (long long)(i / kHidden));
      return 1;
    }
  return 0;
}

int64_t padded_rows(int tp) { return tp == 1 ? 320 : 384; }

// Saves at iteration 10 under (save_tp, save_distopt), continues under it (the reference) and
// under every layout of `others` (tp, distopt; tp 0: one rank alone).
int reshard(int save_tp, bool save_distopt, const std::vector<std::pair<int, bool>>& others) {
  auto w = dist::world();
  const std::string dir = shared_dir("vocab");
  const std::string from = fmt::format("tp{}{}", save_tp, save_distopt ? ":distopt" : "");
  TrainingArgs save = with_layout(tiny(), save_tp, save_distopt);
  save.save = dir;
  save.exit_interval = 10;
  int failures = 0, bad = padding_nonzero("save " + from, run(save), padded_rows(save_tp));

  // What the checkpoint holds: the real vocabulary rows only.
  {
    CheckpointReader ck(dir, -1, nullptr);
    for (const char* name : {"embedding.word_embeddings.weight", "optimizer.exp_avg.embedding.word_embeddings.weight",
                             "optimizer.exp_avg_sq.embedding.word_embeddings.weight"}) {
      const Shape want = {kVocab, kHidden};
      if (!ck.contains(name) || ck.tensors().at(name).global_shape != want) {
        std::fprintf(stderr, "%s: %s is %s in the checkpoint, want %s\n", from.c_str(), name,
                     ck.contains(name) ? shape_str(ck.tensors().at(name).global_shape).c_str() : "absent",
                     shape_str(want).c_str());
        ++bad;
      }
    }
  }
  failures += report("checkpoint of " + from + " (vocab rows)", bad, 0);

  TrainingArgs cont = with_layout(tiny(), save_tp, save_distopt);
  cont.load = dir;
  const TrainResult ref = run(cont);
  failures += report("continue " + from, padding_nonzero("continue " + from, ref, padded_rows(save_tp)), 0);

  for (auto [tp, distopt] : others) {
    const std::string to = tp == 0 ? "1 rank" : fmt::format("tp{}{}", tp, distopt ? ":distopt" : "");
    const std::string what = from + " -> " + to;
    TrainingArgs a = with_layout(tiny(), tp == 0 ? 1 : tp, distopt);
    a.load = dir;
    TrainResult got;
    if (tp == 0) {
      ProcessGroups self(dist::self("world"), {});
      got = run(a, &self);
    } else {
      got = run(a);
    }
    int b = padding_nonzero(what, got, padded_rows(tp == 0 ? 1 : tp));
    double worst = 0;
    if (got.train_losses.size() != 10 || ref.train_losses.size() != 10) {
      std::fprintf(stderr, "%s: %zu iterations, reference %zu\n", what.c_str(), got.train_losses.size(),
                   ref.train_losses.size());
      ++b;
    } else {
      for (size_t i = 0; i < 10; ++i) {
        const double rel = std::abs(got.train_losses[i] - ref.train_losses[i]) / std::abs(ref.train_losses[i]);
        worst = std::max(worst, rel);
        if (!(rel <= 1e-5)) {
          std::fprintf(stderr, "%s: iteration %zu loss %.9g vs %s %.9g\n", what.c_str(), i + 11, got.train_losses[i],
                       from.c_str(), ref.train_losses[i]);
          ++b;
        }
      }
    }
    failures += report(what, b, worst);
  }
  w->barrier();
  if (w->rank() == 0) fs::remove_all(dir);
  return failures;
}

}  // namespace

int main() {
  dist::init(true);
  if (dist::world()->size() != 2) {
    std::fprintf(stderr, "vocab_reshard needs 2 ranks\n");
    return 1;
  }
  int failures = 0;
  failures += reshard(2, false, {{0, false}, {1, true}});
  failures += reshard(1, true, {{2, false}});
  return failures ? 1 : 0;
}
