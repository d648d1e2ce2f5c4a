#include "comm/comm_timer.h"

#include <algorithm>
#include <atomic>
#include <mutex>

namespace mt::dist {
namespace {

struct Entry {
  std::string group;
  double seconds = 0;
  std::vector<std::function<double()>> deferred;
};

std::atomic<bool> g_on{false};
std::mutex g_mu;
std::vector<Entry> g_entries;

Entry& entry(const std::string& group) {
  auto it = std::find_if(g_entries.begin(), g_entries.end(), [&](const Entry& e) { return e.group == group; });
  if (it != g_entries.end()) return *it;
  g_entries.push_back(Entry{group, 0.0, {}});
  return g_entries.back();
}

}  // namespace

void set_comm_timing(bool on) { g_on = on; }
bool comm_timing() { return g_on; }

void comm_time_add(const std::string& group, double seconds) {
  std::lock_guard<std::mutex> lock(g_mu);
  entry(group).seconds += seconds;
}

void comm_time_add_deferred(const std::string& group, std::function<double()> seconds) {
  std::lock_guard<std::mutex> lock(g_mu);
  entry(group).deferred.push_back(std::move(seconds));
}

std::vector<std::pair<std::string, double>> comm_time_take() {
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<std::pair<std::string, double>> out;
  for (Entry& e : g_entries) {
    double s = e.seconds;
    for (auto& f : e.deferred) s += f();
    out.emplace_back(e.group, s);
    e.seconds = 0;
    e.deferred.clear();
  }
  return out;
}

}  // namespace mt::dist
