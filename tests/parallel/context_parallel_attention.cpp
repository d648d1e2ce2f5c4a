// Run under mpirun (2 or 4 ranks): context parallelism's core attention and loss, rank by rank,
// against one rank holding the whole sequence.
//  1. Ring (p2p) and all-to-all attention over the world's context-parallel ranks, each holding
//     its two load-balanced chunks, give the output and the QKV gradient of full causal attention
//     (attention_forward/backward) at their tokens within 5e-6, with dropout too; with documents,
//     those of the block kernel on one rank (whose masked softmax and its gradient
//     test_attention_block.cpp checks in double precision).
//  2. Megatron-LM #1764: a context-parallel rank whose tokens are all loss-masked still gets a
//     finite loss and finite gradients: the microbatch's mean is over the loss tokens of every rank,
//     and a GPT model's iteration under it gives the single rank's loss within 1e-6.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "core/rng.h"
#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "model/context_parallel_attention.h"
#include "model/gpt_model.h"
#include "parallel/schedule_losses.h"
#include "parallel/schedules.h"

using namespace mt;

namespace {

int failures = 0;

void check(bool ok, const std::string& what, Communicator& world) {
  const bool all = world.all_reduce_scalar(ok ? 0.0 : 1.0) == 0.0;
  if (world.rank() == 0) std::printf("%-72s %s\n", what.c_str(), all ? "ok" : "FAIL");
  if (!all) ++failures;
}

// Rank r's tokens of each sample: chunks r and 2C - 1 - r of 2C.
std::vector<int64_t> local_tokens(int64_t S, int C, int r) {
  std::vector<int64_t> t;
  const int64_t L = S / (2 * C);
  for (int64_t c : {int64_t(r), int64_t(2 * C - 1 - r)})
    for (int64_t i = 0; i < L; ++i) t.push_back(c * L + i);
  return t;
}

// Rows [B, S, w] -> this rank's [B, T, w].
Tensor rows_of(const Tensor& full, const std::vector<int64_t>& tokens, int64_t w) {
  const int64_t B = full.size(0), S = full.size(1), T = int64_t(tokens.size());
  Shape shape = full.shape();
  shape[1] = T;
  Tensor out = Tensor::empty(shape, full.dtype());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i)
      std::copy_n(full.data<float>() + (b * S + tokens[size_t(i)]) * w, w, out.data<float>() + (b * T + i) * w);
  return out;
}

double max_diff(const Tensor& a, const Tensor& b) {
  double d = 0;
  for (int64_t i = 0; i < a.numel(); ++i) d = std::max(d, double(std::abs(a.data<float>()[i] - b.data<float>()[i])));
  return d;
}

Tensor random(const Shape& shape, uint64_t stream) {
  Tensor t = Tensor::empty(shape, DType::F32);
  fill_normal(t, 1.0f, 5, stream);
  return t;
}

void attention_matches_one_rank(Communicator& world, CpCommType type, bool documents, float dropout) {
  const int C = world.size(), r = world.rank();
  const int64_t B = 2, S = 16 * C, G = C, H = 2 * C, D = 8, per = H / G + 2;
  const Tensor qkv = random({B, S, G, per, D}, 1), dout = random({B, S, H, D}, 2);
  AttentionConfig core{};
  core.n_heads = int(H);
  core.head_dim = int(D);
  core.n_query_groups = int(G);
  core.dropout_p = dropout;
  core.seed = 9;
  core.stream = 4;
  // Positions and documents of the whole sequence (documents start at 0, 5, 23, ... of each sample).
  Tensor pos = Tensor::empty({B, S}, DType::I32), doc = Tensor::empty({B, S}, DType::I32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s) {
      pos.data<int32_t>()[b * S + s] = int32_t(s);
      doc.data<int32_t>()[b * S + s] = int32_t((s + 13 * b) / 18);
    }
  // One rank: the production kernel without documents, the block kernel (C = 1) with them.
  Tensor out_ref = Tensor::empty({B, S, H, D}, DType::F32), dqkv_ref = Tensor::empty(qkv.shape(), DType::F32);
  TokenPositions whole{S, pos, Tensor(), documents ? doc : Tensor(), {}};
  if (documents) {
    ContextParallelSaved saved;
    context_parallel_attention_forward(qkv, out_ref, core, whole, ModelParallelConfig{}, saved);
    context_parallel_attention_backward(dout, qkv, out_ref, dqkv_ref, core, whole, ModelParallelConfig{}, saved);
  } else {
    Tensor lse = Tensor::empty({B, H, S}, DType::F32);
    attention_forward(qkv, out_ref, lse, core);
    attention_backward(dout, qkv, out_ref, lse, dqkv_ref, core);
  }
  // This rank's chunks.
  const std::vector<int64_t> mine = local_tokens(S, C, r);
  const int64_t T = int64_t(mine.size());
  TokenPositions local;
  local.seq = S;
  local.seq_index = Tensor::empty({B, T}, DType::I32);
  Tensor ldoc = Tensor::empty({B, T}, DType::I32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i) {
      local.seq_index.data<int32_t>()[b * T + i] = int32_t(mine[size_t(i)]);
      ldoc.data<int32_t>()[b * T + i] = doc.data<int32_t>()[b * S + mine[size_t(i)]];
    }
  if (documents) local.document = ldoc;
  ModelParallelConfig par;
  par.cp = &world;
  par.cp_comm_type = type;
  const Tensor lqkv = rows_of(qkv, mine, G * per * D), ldout = rows_of(dout, mine, H * D);
  Tensor out = Tensor::empty({B, T, H, D}, DType::F32), dqkv = Tensor::empty(lqkv.shape(), DType::F32);
  ContextParallelSaved saved;
  context_parallel_attention_forward(lqkv, out, core, local, par, saved);
  context_parallel_attention_backward(ldout, lqkv, out, dqkv, core, local, par, saved);
  const double dout_err = max_diff(out, rows_of(out_ref, mine, H * D));
  const double dqkv_err = max_diff(dqkv, rows_of(dqkv_ref, mine, G * per * D));
  char what[160];
  std::snprintf(what, sizeof what, "%s attention over %d ranks%s%s: out %.2g, dqkv %.2g",
                type == CpCommType::P2P ? "ring (p2p)" : "all-to-all", C, documents ? ", documents" : "",
                dropout > 0 ? ", dropout" : "", dout_err, dqkv_err);
  check(dout_err < 5e-6 && dqkv_err < 5e-6, what, world);
}

// Megatron-LM #1764: rank 1's tokens are all masked out of the loss.
void masked_rank_gives_finite_loss(Communicator& world) {
  const int C = world.size(), r = world.rank();
  TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 16;
  c.ffn_hidden_size = 32;
  c.num_attention_heads = 4;
  c.seq_length = 8 * C;
  c.max_position_embeddings = c.seq_length;
  c.vocab_size = 21;
  c.padded_vocab_size = 32;
  c.hidden_dropout = c.attention_dropout = 0.0f;
  const int64_t B = 2, S = c.seq_length;
  Tensor tokens = Tensor::empty({B, S}, DType::I32), labels = Tensor::empty({B, S}, DType::I32);
  Tensor mask = Tensor::empty({B, S}, DType::F32);
  const std::vector<int64_t> rank1 = local_tokens(S, C, 1);
  for (int64_t i = 0; i < B * S; ++i) {
    tokens.data<int32_t>()[i] = int32_t(philox_u32(1, 2, uint64_t(i)) % 21);
    labels.data<int32_t>()[i] = int32_t(philox_u32(1, 3, uint64_t(i)) % 21);
    mask.data<float>()[i] = 1.0f;
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s : rank1) mask.data<float>()[b * S + s] = 0.0f;
  auto run = [&](Communicator* cp) {
    ModelParallelConfig par;
    par.cp = cp;
    GPTModel model(c, Device::cpu(), par);
    model.init(3);
    const int Cn = cp ? cp->size() : 1, rn = cp ? cp->rank() : 0;
    const std::vector<int64_t> mine = local_tokens(S, Cn, rn);
    const int64_t T = cp ? int64_t(mine.size()) : S;
    Microbatch mb{Tensor::empty({B, T}, DType::I32), Tensor::empty({B, T}, DType::I32), Tensor::empty({B, T}, DType::F32),
                  {}};
    mb.positions.seq = S;
    mb.positions.seq_index = Tensor::empty({B, T}, DType::I32);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < T; ++i) {
        const int64_t s = cp ? mine[size_t(i)] : i;
        mb.tokens.data<int32_t>()[b * T + i] = tokens.data<int32_t>()[b * S + s];
        mb.labels.data<int32_t>()[b * T + i] = labels.data<int32_t>()[b * S + s];
        mb.loss_mask.data<float>()[b * T + i] = mask.data<float>()[b * S + s];
        mb.positions.seq_index.data<int32_t>()[b * T + i] = int32_t(s);
        mb.positions.runs.push_back({b * T + i, b * S + s, 1});
      }
    if (!cp) mb.positions = TokenPositions{};
    ScheduleConfig sc;
    sc.context_parallel = cp;
    model.buffer().begin_grad_accumulation();
    const std::vector<double> means = forward_backward_no_pipelining(
        model, nullptr, [&](int) { return mb; }, [](int) { return ForwardContext{}; }, sc);
    Tensor grads = model.buffer().main_grads();
    if (cp) cp->all_reduce(grads);  // the data- and context-parallel reduction
    return std::pair<double, std::vector<float>>(
        means[0], std::vector<float>(grads.data<float>(), grads.data<float>() + grads.numel()));
  };
  const auto [loss, grads] = run(&world);
  const auto [ref_loss, ref_grads] = run(nullptr);
  bool finite = std::isfinite(loss);
  double worst = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    finite = finite && std::isfinite(grads[i]);
    worst = std::max(worst, double(std::abs(grads[i] - ref_grads[i])));
  }
  char what[160];
  std::snprintf(what, sizeof what, "rank 1 all loss-masked over %d ranks: loss %.7g vs one rank %.7g, grads %.2g", C,
                loss, ref_loss, worst);
  check(finite && std::abs(loss - ref_loss) <= 1e-6 * std::abs(ref_loss) && worst < 1e-6, what, world);
  (void)r;
}

}  // namespace

int main() {
  dist::init(true);
  auto world = dist::world();
  for (CpCommType type : {CpCommType::P2P, CpCommType::A2A})
    for (bool documents : {false, true})
      for (float dropout : {0.0f, 0.2f}) attention_matches_one_rank(*world, type, documents, dropout);
  masked_rank_gives_finite_loss(*world);
  return failures ? 1 : 0;
}
