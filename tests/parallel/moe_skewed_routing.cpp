// Run under mpirun -np 8: an MoE layer with 8 experts split over 8 expert-parallel ranks (one
// each), where every token of rank 3 routes to expert 0 (and most ranks send expert 7 nothing).
// The exchange must not hang on empty or lopsided transfers, and each rank's output and input
// gradient, and each expert's weight gradients (summed over every rank's tokens), must equal a
// single-rank layer's on the same tokens within 1e-5.
#include <cmath>
#include <cstdio>
#include <vector>

#include "comm/mpi_communicator.h"
#include "core/rng.h"
#include "kernels/elementwise.h"
#include "model/moe_layer.h"

using namespace mt;

namespace {

TransformerConfig config() {
  TransformerConfig c;
  c.hidden_size = 16;
  c.num_attention_heads = 2;
  c.num_moe_experts = 8;
  c.moe_router_topk = 1;
  c.moe_ffn_hidden_size = 16;
  c.gated_linear_unit = true;
  c.activation = Activation::Silu;
  c.add_bias_linear = false;
  c.moe_aux_loss_coeff = 0.01f;
  return c;
}

Tensor random(const Shape& s, uint64_t stream) {
  Tensor t = Tensor::empty(s, DType::F32);
  fill_normal(t, 1.0f, 7, stream);
  return t;
}

// Rank r's tokens [12, C]; rank 3's are all the direction the skewed router sends to expert 0.
Tensor tokens_of(int r, int C) {
  Tensor x = random({12, C}, 100 + uint64_t(r));
  if (r == 3)
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = 0.5f + 0.01f * x.data<float>()[i];
  return x;
}

struct Layer {
  ParamAndGradBuffer dense, experts;
  std::unique_ptr<MoELayer> moe;
  Layer(const TransformerConfig& c, Communicator* ep) {
    ModelParallelConfig par;
    par.ep = ep;
    moe = std::make_unique<MoELayer>(dense, experts, "decoder.layers.0.mlp", c, 0, par);
    dense.allocate(DType::F32, Device::cpu());
    experts.allocate(DType::F32, Device::cpu());
    moe->init(0.2f, 0.2f, 5);
    // Expert 0's router row along the all-ones direction: rank 3's tokens all choose it.
    float* w = dense.param(dense.find("decoder.layers.0.mlp.router.weight")).data<float>();
    for (int i = 0; i < c.hidden_size; ++i) w[i] = 1.0f;
    dense.zero_grads();
    experts.zero_grads();
  }
  // Forward and backward of one rank's tokens: (output, input gradient).
  std::pair<Tensor, Tensor> run(const Tensor& x, const Tensor& dy, std::vector<int32_t>* choices = nullptr) {
    ForwardContext ctx;
    ctx.seq = x.size(0);
    MoELayer::Saved s;
    Tensor y = moe->forward(x, ctx, s);
    if (choices) *choices = s.router.indices;
    Tensor yc = y.to(Device::cpu());
    return {yc, moe->backward(dy, s)};
  }
};

double max_diff(const Tensor& a, const Tensor& b) {
  double d = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    d = std::max(d, double(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
  return d;
}

}  // namespace

int main() {
  dist::init(true);
  auto world = dist::world();
  const int rank = world->rank(), size = world->size();
  const TransformerConfig c = config();
  Layer ep(c, world.get());
  const Tensor x = tokens_of(rank, c.hidden_size), dy = random({12, c.hidden_size}, 200 + uint64_t(rank));
  std::vector<int32_t> choices;
  const auto [y, dx] = ep.run(x, dy, &choices);
  bool skewed = true;  // rank 3: every token on expert 0
  if (rank == 3)
    for (int32_t e : choices) skewed = skewed && e == 0;

  // The reference: one rank holding every expert, run over every rank's tokens (grads accumulate).
  Layer ref(c, nullptr);
  Tensor ref_y, ref_dx;
  for (int r = 0; r < size; ++r) {
    auto [yr, dxr] = ref.run(tokens_of(r, c.hidden_size), random({12, c.hidden_size}, 200 + uint64_t(r)));
    if (r == rank) ref_y = yr, ref_dx = dxr;
  }
  double worst = std::max(max_diff(y, ref_y), max_diff(dx, ref_dx));
  // This rank's expert (global index `rank`) against the reference's.
  for (const ParamInfo& p : ep.experts.infos()) {
    const int id = ref.experts.find(p.name);
    worst = std::max(worst, max_diff(ep.experts.grad(ep.experts.find(p.name)), ref.experts.grad(id)));
  }
  const bool ok = worst <= 1e-5 && skewed;
  if (!skewed) std::fprintf(stderr, "rank 3's tokens did not all route to expert 0\n");
  const double bad = world->all_reduce_scalar(ok ? 0.0 : 1.0);
  const double all_worst = world->all_reduce_scalar(worst, ReduceOp::Max);
  if (rank == 0)
    std::printf("8 experts over %d ranks, rank 3's tokens all on expert 0: worst abs diff %.3g vs one rank: %s\n",
                size, all_worst, bad == 0 ? "ok" : "FAIL");
  return bad == 0 ? 0 : 1;
}
