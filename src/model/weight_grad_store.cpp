#include "model/weight_grad_store.h"

namespace mt {
namespace {
thread_local WeightGradStore* g_active = nullptr;
}

WeightGradStore* WeightGradStore::active() { return g_active; }

WeightGradStore::Scope::Scope(WeightGradStore* store) : previous_(g_active) { g_active = store; }
WeightGradStore::Scope::~Scope() { g_active = previous_; }

void WeightGradStore::run() {
  std::vector<std::function<void()>> todo;
  todo.swap(pending_);
  for (auto& f : todo) f();
}

}  // namespace mt
