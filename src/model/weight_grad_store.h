#pragma once
// Deferred weight gradients (Megatron-Core's WeightGradStore), for the zero-bubble pipeline
// schedule: while a store is active on this thread, the linear layers' backward computes the
// input gradient at once and hands its weight-gradient GEMM (with private copies of what the
// GEMM reads: the layer's input and its output gradient) to the store instead of running it;
// run() later performs them in the order they were deferred, so each weight gradient
// accumulates the same products in the same order as an undeferred backward.
#include <functional>
#include <vector>

namespace mt {

class WeightGradStore {
 public:
  // The store the current thread's backward passes defer into (null: none, run at once).
  static WeightGradStore* active();

  // Makes `store` the active one for the scope's lifetime.
  class Scope {
   public:
    explicit Scope(WeightGradStore* store);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    WeightGradStore* previous_;
  };

  void defer(std::function<void()> gemm) { pending_.push_back(std::move(gemm)); }
  // Runs every deferred GEMM in order and forgets them.
  void run();
  bool empty() const { return pending_.empty(); }

 private:
  std::vector<std::function<void()>> pending_;
};

// Runs `wgrad` now, or defers it to the active store. `wgrad` must own what it reads.
inline void run_or_defer_weight_grad(std::function<void()> wgrad) {
  if (WeightGradStore* s = WeightGradStore::active())
    s->defer(std::move(wgrad));
  else
    wgrad();
}

}  // namespace mt
