#include "train_cli.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "core/error.h"

namespace mt {
namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

bool is_flag_word(const std::string& w) { return w.size() > 2 && w.rfind("--", 0) == 0; }

}  // namespace

std::string closest_flag(const CLI::App& app, const std::string& flag) {
  std::string best;
  // Close: about one edit per three letters of the name (a typo or two), not another word.
  size_t best_d = std::max<size_t>(1, (flag.size() - 2) / 3) + 1;
  for (const CLI::Option* o : app.get_options()) {
    for (const std::string& n : o->get_lnames()) {
      const size_t d = edit_distance(flag, "--" + n);
      if (d < best_d) best_d = d, best = "--" + n;
    }
  }
  return best;
}

std::string unknown_subcommand_message(const CLI::App& app, const std::string& word) {
  if (word.empty() || word[0] == '-') return "";
  std::string all, best;
  size_t best_d = word.size() / 2 + 1;  // a transposed pair costs 2
  for (const CLI::App* sub : app.get_subcommands({})) {
    if (sub->get_name() == word) return "";
    all += (all.empty() ? "" : ", ") + sub->get_name();
    const size_t d = edit_distance(word, sub->get_name());
    if (d < best_d) best_d = d, best = sub->get_name();
  }
  return fmt::format("unknown subcommand '{}'{}; the subcommands are: {}", word,
                     best.empty() ? "" : fmt::format(" (did you mean '{}'?)", best), all);
}

std::vector<std::string> megatron_argument_words(const CLI::App& app, const std::vector<std::string>& words) {
  struct Occurrence {
    const CLI::Option* opt;  // null: unknown
    size_t begin, end;       // words [begin, end)
  };
  std::vector<Occurrence> occ;
  std::vector<std::string> unknown;
  size_t i = 0;
  std::vector<bool> loose(words.size(), false);  // words that belong to no flag (CLI11 names them)
  while (i < words.size()) {
    const std::string& w = words[i];
    if (!is_flag_word(w)) {
      loose[i] = true;
      ++i;
      continue;
    }
    const size_t eq = w.find('=');
    const std::string name = w.substr(0, eq);
    const CLI::Option* opt = app.get_option_no_throw(name);
    size_t end = i + 1;
    if (eq == std::string::npos) {
      // An option's values follow it: one for a scalar, all up to the next flag for a list; an
      // unknown flag takes the words up to the next flag (argparse would name them with it).
      const int max = opt ? opt->get_items_expected_max() : 1 << 20;
      while (end < words.size() && !is_flag_word(words[end]) && int(end - i - 1) < max) ++end;
    }
    if (!opt) {
      std::string text = w;
      for (size_t k = i + 1; k < end; ++k) text += " " + words[k];
      const std::string near = closest_flag(app, name);
      if (!near.empty()) text += fmt::format(" (did you mean {}?)", near);
      unknown.push_back(text);
    }
    occ.push_back({opt, i, end});
    i = end;
  }
  if (!unknown.empty()) MT_USER_ERROR("unrecognized arguments: {}", fmt::join(unknown, ", "));
  // The last occurrence of each option wins (argparse's rule); earlier ones go with their values.
  std::map<const CLI::Option*, size_t> last;
  for (size_t k = 0; k < occ.size(); ++k) last[occ[k].opt] = k;
  std::vector<std::string> out;
  size_t k = 0;
  for (size_t j = 0; j < words.size();) {
    if (loose[j]) {
      out.push_back(words[j++]);
      continue;
    }
    const Occurrence& o = occ[k];
    if (last[o.opt] == k)
      for (size_t m = o.begin; m < o.end; ++m) out.push_back(words[m]);
    j = o.end;
    ++k;
  }
  return out;
}

}  // namespace mt
