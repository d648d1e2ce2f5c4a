#pragma once
// A random MoE routing plan for the moe_permute tests (kernels/moe_permute.h's row_map and
// row_source): each of N tokens picks k distinct experts of E; a choice is dropped with
// probability `drop`; kept choices take rows grouped by expert (tokens in order within one), and
// each expert's rows end with padding rows (row_source -1) up to a multiple of `pad_to`.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "core/tensor.h"

namespace mt::testing {

struct MoePlan {
  int64_t tokens = 0, rows = 0;
  int topk = 1;
  std::vector<int32_t> row_map;     // [tokens k]: row or -1
  std::vector<int32_t> row_source;  // [rows]: slot t k + s or -1
  Tensor row_map_t, row_source_t;   // the same as int32 CPU tensors
};

inline Tensor i32_tensor(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({int64_t(v.size())}, DType::I32);
  if (!v.empty()) std::memcpy(t.raw(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

inline MoePlan random_moe_plan(int64_t tokens, int topk, int experts, uint32_t seed, double drop = 0.25,
                               int pad_to = 4) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::vector<std::vector<int32_t>> slots_of(static_cast<size_t>(experts));
  std::vector<int> order(static_cast<size_t>(experts));
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), gen);
    for (int s = 0; s < topk; ++s)
      if (coin(gen) >= drop) slots_of[size_t(order[size_t(s)])].push_back(int32_t(t * topk + s));
  }
  MoePlan p;
  p.tokens = tokens;
  p.topk = topk;
  p.row_map.assign(size_t(tokens * topk), -1);
  for (const auto& slots : slots_of) {
    for (int32_t slot : slots) {
      p.row_map[size_t(slot)] = int32_t(p.row_source.size());
      p.row_source.push_back(slot);
    }
    while (p.row_source.size() % size_t(pad_to) != 0) p.row_source.push_back(-1);
  }
  p.rows = int64_t(p.row_source.size());
  p.row_map_t = i32_tensor(p.row_map);
  p.row_source_t = i32_tensor(p.row_source);
  return p;
}

}  // namespace mt::testing
