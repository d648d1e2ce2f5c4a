#include "train/straggler.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <thread>

namespace mt {

std::string format_straggler_report(const std::vector<double>& s, int minmax_count) {
  const int n = int(s.size());
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return s[size_t(a)] < s[size_t(b)]; });
  const double median = n % 2 ? s[size_t(order[size_t(n / 2)])]
                              : 0.5 * (s[size_t(order[size_t(n / 2 - 1)])] + s[size_t(order[size_t(n / 2)])]);
  auto ranks = [&](auto first, auto last) {
    std::string r;
    for (auto it = first; it != last; ++it) r += fmt::format("{}{} ({:.1f})", r.empty() ? "" : ", ", *it, 1e3 * s[size_t(*it)]);
    return r;
  };
  const int k = std::min(minmax_count, n);
  std::string slow;
  for (int i = n - 1; i >= 0 && s[size_t(order[size_t(i)])] > std::max(kStragglerThreshold * median, median + kStragglerMinSeconds); --i)
    slow += fmt::format("{}{}", slow.empty() ? "" : ",", order[size_t(i)]);
  return fmt::format(
      " straggler (compute ms per iteration over {} ranks): min {:.1f} | median {:.1f} | max {:.1f} | slowest: {} | "
      "fastest: {} | slower than {:.2f} x median (and 5 ms): {}",
      n, 1e3 * s[size_t(order.front())], 1e3 * median, 1e3 * s[size_t(order.back())],
      ranks(order.rbegin(), order.rbegin() + k), ranks(order.begin(), order.begin() + k), kStragglerThreshold,
      slow.empty() ? "none" : "rank(s) " + slow);
}

std::string StragglerDetector::report(double compute_seconds_per_iter) {
  std::vector<double> s(size_t(world_.size()), 0.0);
  s[size_t(world_.rank())] = compute_seconds_per_iter;
  world_.all_reduce_f64(s.data(), int(s.size()));
  return world_.rank() == 0 ? format_straggler_report(s, minmax_) : "";
}

void StragglerDetector::maybe_slow_down() const {
  const char* env = std::getenv("MEGATRON_TEST_SLOW_RANK");
  if (!env || !*env || std::atoi(env) != world_.rank()) return;
  const char* colon = std::strchr(env, ':');
  std::this_thread::sleep_for(std::chrono::milliseconds(colon ? std::atoi(colon + 1) : 50));
}

}  // namespace mt
