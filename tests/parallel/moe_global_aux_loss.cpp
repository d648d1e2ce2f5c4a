// Run under mpirun -np 2: global_aux_loss balances the load over the data-parallel group. Rank 0's
// tokens all pick expert 0 and rank 1's all pick expert 1: each rank's own load is as lopsided as
// it gets (aux_loss = E x coeff), the group's is balanced (global_aux_loss = coeff, its minimum).
// With the same tokens on both ranks the two losses are equal.
#include <cstdio>
#include <vector>

#include "comm/mpi_communicator.h"
#include "model/moe_metrics.h"
#include "model/moe_router.h"

using namespace mt;

namespace {

// The load-balancing loss of `tokens` [T, E] routed by an identity router (logits = tokens).
double loss(MoeLoadBalancing type, const std::vector<float>& tokens, int64_t T, Communicator* group) {
  TransformerConfig c;
  c.hidden_size = 2;
  c.num_moe_experts = 2;
  c.moe_router_topk = 1;
  c.moe_aux_loss_coeff = 0.1f;
  c.moe_router_load_balancing_type = type;
  ParamAndGradBuffer buf;
  TopKRouter router(buf, "router", c, 0, group);
  buf.allocate(DType::F32, Device::cpu());
  float* w = buf.param(0).data<float>();
  w[0] = w[3] = 1.0f;
  w[1] = w[2] = 0.0f;
  Tensor x = Tensor::empty({T, 2}, DType::F32);
  std::copy(tokens.begin(), tokens.end(), x.data<float>());
  MoEMetrics m;
  ForwardContext ctx;
  ctx.moe_metrics = &m;
  TopKRouter::Saved s;
  router.forward(x, T, ctx, s);
  return m.layers.at(0).load_balancing_loss;
}

}  // namespace

int main() {
  dist::init(true);
  auto world = dist::world();
  const int rank = world->rank();
  const double coeff = double(0.1f);
  std::vector<float> own, same;
  for (int t = 0; t < 4; ++t) {
    own.push_back(rank == 0 ? 30.0f : -30.0f), own.push_back(rank == 0 ? -30.0f : 30.0f);
    same.push_back(t % 2 ? 30.0f : -30.0f), same.push_back(t % 2 ? -30.0f : 30.0f);
  }
  const double local = loss(MoeLoadBalancing::AuxLoss, own, 4, world.get());
  const double global = loss(MoeLoadBalancing::GlobalAuxLoss, own, 4, world.get());
  const double same_local = loss(MoeLoadBalancing::AuxLoss, same, 4, world.get());
  const double same_global = loss(MoeLoadBalancing::GlobalAuxLoss, same, 4, world.get());
  const bool ok = std::abs(local - 2 * coeff) < 1e-9 && std::abs(global - coeff) < 1e-9 &&
                  std::abs(same_local - same_global) < 1e-12;
  const double bad = world->all_reduce_scalar(ok ? 0.0 : 1.0);
  if (rank == 0)
    std::printf("aux_loss %.6g, global_aux_loss %.6g (coefficient %.6g); same tokens: %.6g vs %.6g: %s\n", local, global,
                coeff, same_local, same_global, bad == 0 ? "ok" : "FAIL");
  return bad == 0 ? 0 : 1;
}
