#include "parallel/pipeline_layout.h"

#include <fmt/format.h>

#include <cctype>

#include "core/error.h"

namespace mt {
namespace {

// Expands the layout grammar: seq := item*; item := (atom | '(' seq ')') ['*' n]; atom := E|t|L|m|'|'.
class LayoutParser {
 public:
  explicit LayoutParser(const std::string& s) : s_(s) {}
  std::string parse() {
    std::string out = seq();
    if (pos_ != s_.size()) fail("unexpected ')'");
    return out;
  }

 private:
  void skip() {
    while (pos_ < s_.size() && (s_[pos_] == ',' || std::isspace(static_cast<unsigned char>(s_[pos_])))) ++pos_;
  }
  [[noreturn]] void fail(const std::string& why) const {
    throw UserError(fmt::format("--pipeline-model-parallel-layout \"{}\": {} at character {} (expected stages of "
                                "E, t and L separated by '|', with (...) groups and *N repeats)",
                                s_, why, pos_ + 1));
  }
  std::string seq() {
    std::string out;
    for (skip(); pos_ < s_.size() && s_[pos_] != ')'; skip()) {
      std::string item;
      const char c = s_[pos_];
      if (c == '(') {
        ++pos_;
        item = seq();
        if (pos_ >= s_.size() || s_[pos_] != ')') fail("unclosed '('");
        ++pos_;
      } else if (c == 'E' || c == 't' || c == 'L' || c == 'm' || c == '|') {
        item = std::string(1, c);
        ++pos_;
      } else {
        fail(fmt::format("unknown character '{}'", c));
      }
      skip();
      if (pos_ < s_.size() && s_[pos_] == '*') {
        ++pos_;
        skip();
        size_t end = pos_;
        while (end < s_.size() && std::isdigit(static_cast<unsigned char>(s_[end]))) ++end;
        if (end == pos_) fail("'*' without a count");
        const long n = std::stol(s_.substr(pos_, end - pos_));
        if (n < 1 || n > 100000) fail("a repeat count out of range");
        pos_ = end;
        std::string rep;
        for (long i = 0; i < n; ++i) rep += item;
        item = rep;
      }
      out += item;
    }
    return out;
  }
  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace

std::vector<std::string> parse_pipeline_layout(const std::string& layout) {
  const std::string flat = LayoutParser(layout).parse();
  std::vector<std::string> stages(1);
  for (char c : flat) {
    if (c == '|')
      stages.emplace_back();
    else
      stages.back() += c;
  }
  return stages;
}

std::vector<ModelChunkConfig> plan_pipeline_stages(const PipelineLayoutArgs& a) {
  const int P = a.pipeline_size, L = a.num_layers;
  if (P < 1) throw UserError(fmt::format("--pipeline-model-parallel-size {}: expected at least 1", P));
  std::vector<ModelChunkConfig> out;
  if (!a.layout.empty()) {
    const std::string flag = fmt::format("--pipeline-model-parallel-layout \"{}\"", a.layout);
    const auto stages = parse_pipeline_layout(a.layout);
    const int S = int(stages.size());
    if (S % P != 0)
      throw UserError(fmt::format("{}: {} stages do not split over --pipeline-model-parallel-size {}", flag, S, P));
    if (a.virtual_stages > 1 && S != P * a.virtual_stages)
      throw UserError(fmt::format("{}: {} stages, but --num-virtual-stages-per-pipeline-rank {} x "
                                  "--pipeline-model-parallel-size {} = {}",
                                  flag, S, a.virtual_stages, P, P * a.virtual_stages));
    int layer = 0;
    for (int s = 0; s < S; ++s) {
      ModelChunkConfig c;
      c.first_layer = layer;
      c.num_layers = 0;
      c.pre_process = c.post_process = false;
      for (size_t i = 0; i < stages[size_t(s)].size(); ++i) {
        const char ch = stages[size_t(s)][i];
        if (ch == 't') {
          if (c.post_process) throw UserError(fmt::format("{}: stage {} has a decoder layer after the loss", flag, s));
          ++c.num_layers;
        } else if (ch == 'E') {
          if (s != 0 || i != 0) throw UserError(fmt::format("{}: the embedding 'E' must open the first stage", flag));
          c.pre_process = true;
        } else if (ch == 'L') {
          if (s != S - 1 || i + 1 != stages[size_t(s)].size())
            throw UserError(fmt::format("{}: the loss 'L' must end the last stage", flag));
          c.post_process = true;
        } else {
          throw UserError(fmt::format("{}: multi-token prediction layers ('m') are not supported", flag));
        }
      }
      if (!c.pre_process && !c.post_process && c.num_layers == 0)
        throw UserError(fmt::format("{}: stage {} is empty", flag, s));
      layer += c.num_layers;
      out.push_back(c);
    }
    if (!out.front().pre_process) throw UserError(fmt::format("{}: the first stage must start with 'E'", flag));
    if (!out.back().post_process) throw UserError(fmt::format("{}: the last stage must end with 'L'", flag));
    if (layer != L)
      throw UserError(fmt::format("{}: {} decoder layers 't', but --num-layers is {}", flag, layer, L));
    return out;
  }
  int V = a.virtual_stages;
  if (a.layers_per_virtual_stage > 0) {
    if (P < 2 || L % (P * a.layers_per_virtual_stage) != 0)
      throw UserError(fmt::format("--num-layers-per-virtual-pipeline-stage {}: --num-layers {} must be a multiple of it "
                                  "times --pipeline-model-parallel-size {} (at least 2)",
                                  a.layers_per_virtual_stage, L, P));
    const int v = L / (P * a.layers_per_virtual_stage);
    if (V > 1 && V != v)
      throw UserError(fmt::format("--num-layers-per-virtual-pipeline-stage {} gives {} virtual stages, but "
                                  "--num-virtual-stages-per-pipeline-rank is {}",
                                  a.layers_per_virtual_stage, v, V));
    V = v;
  }
  const int S = P * V;
  std::vector<int> counts(size_t(S), 0);
  const bool uneven = a.first_stage_layers >= 0 || a.last_stage_layers >= 0;
  if (uneven) {
    if (V > 1)
      throw UserError("--decoder-first/last-pipeline-num-layers take no virtual stages: give the split as "
                      "--pipeline-model-parallel-layout");
    const int first = std::max(a.first_stage_layers, 0), last = std::max(a.last_stage_layers, 0);
    const int middle_stages = S - (a.first_stage_layers >= 0) - (a.last_stage_layers >= 0);
    const int rest = L - first - last;
    if (rest < 0 || (middle_stages == 0 ? rest != 0 : rest % middle_stages != 0) || (S == 1))
      throw UserError(fmt::format("--decoder-first-pipeline-num-layers {} and --decoder-last-pipeline-num-layers {}: "
                                  "the other {} of --num-layers {} must split evenly over the other {} stage(s) "
                                  "(--pipeline-model-parallel-size {})",
                                  a.first_stage_layers, a.last_stage_layers, rest, L, middle_stages, P));
    for (int s = 0; s < S; ++s) counts[size_t(s)] = middle_stages ? rest / middle_stages : 0;
    if (a.first_stage_layers >= 0) counts.front() = first;
    if (a.last_stage_layers >= 0) counts.back() = last;
  } else {
    if (L % S != 0)
      throw UserError(fmt::format("--num-layers {} does not split evenly over {} pipeline stages "
                                  "(--pipeline-model-parallel-size {} x {} virtual stages); give an uneven split with "
                                  "--decoder-first/last-pipeline-num-layers or --pipeline-model-parallel-layout",
                                  L, S, P, V));
    for (int& c : counts) c = L / S;
  }
  int layer = 0;
  for (int s = 0; s < S; ++s) {
    ModelChunkConfig c;
    c.pre_process = s == 0;
    c.post_process = s == S - 1;
    c.first_layer = layer;
    c.num_layers = counts[size_t(s)];
    if (!c.pre_process && !c.post_process && c.num_layers == 0)
      throw UserError(fmt::format("pipeline stage {} would hold no layers (--num-layers {})", s, L));
    layer += c.num_layers;
    out.push_back(c);
  }
  return out;
}

std::string describe_pipeline_stages(const std::vector<ModelChunkConfig>& stages) {
  std::string out;
  for (size_t s = 0; s < stages.size(); ++s) {
    const ModelChunkConfig& c = stages[s];
    std::string parts;
    if (c.pre_process) parts = "embedding";
    if (c.num_layers > 0)
      parts += fmt::format("{}{} {}", parts.empty() ? "" : " + ", c.num_layers == 1 ? "layer" : "layers",
                           c.num_layers == 1 ? std::to_string(c.first_layer)
                                             : fmt::format("{}-{}", c.first_layer, c.first_layer + c.num_layers - 1));
    if (c.post_process) parts += std::string(parts.empty() ? "" : " + ") + "loss";
    out += fmt::format("{}stage {}: {}", s ? " | " : "", s, parts);
  }
  return out;
}

}  // namespace mt
