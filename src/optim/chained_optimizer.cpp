#include "optim/chained_optimizer.h"

#include "core/error.h"

namespace mt {

ChainedOptimizer::ChainedOptimizer(std::vector<MegatronOptimizer*> parts) : parts_(std::move(parts)) {
  MT_CHECK(!parts_.empty(), "a chained optimizer needs a part");
}

GradStats ChainedOptimizer::grad_stats(double loss_scale) {
  GradStats all;
  // Every part reduces over its own groups, in the same order on every rank.
  for (MegatronOptimizer* p : parts_) {
    const GradStats s = p->grad_stats(loss_scale);
    all.finite = all.finite && s.finite;
    all.sum_squares += s.finite ? s.sum_squares : 0.0;
  }
  return all;
}

StepStats ChainedOptimizer::apply(double lr, double loss_scale, const GradStats& global) {
  StepStats st;
  for (MegatronOptimizer* p : parts_) st = p->apply(lr, loss_scale, global);
  return st;
}

int64_t ChainedOptimizer::state_bytes() const {
  int64_t n = 0;
  for (const MegatronOptimizer* p : parts_) n += p->state_bytes();
  return n;
}

std::vector<OptimizerStateRange> ChainedOptimizer::state_ranges() const {
  MT_CHECK(false, "ChainedOptimizer::state_ranges: ask each part (their ranges index different buffers)");
  return {};
}

void ChainedOptimizer::set_decoupled_lr(double lr) {
  for (MegatronOptimizer* p : parts_) p->set_decoupled_lr(lr);
}

int64_t ChainedOptimizer::count_zeros_in_grads() {
  int64_t n = 0;
  for (MegatronOptimizer* p : parts_) n += p->count_zeros_in_grads();
  return n;
}

void ChainedOptimizer::set_steps_taken(int64_t steps) {
  for (MegatronOptimizer* p : parts_) p->set_steps_taken(steps);
}

void ChainedOptimizer::reset_master_from_params() {
  for (MegatronOptimizer* p : parts_) p->reset_master_from_params();
}

}  // namespace mt
