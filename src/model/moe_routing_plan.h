#pragma once
// Where each token's expert choices go in the buffer the experts read (built on the host from the
// router's choices; kernels/moe_permute.h runs it). Rows are sorted by expert, and within an
// expert by slot t k + s (token order), so the order never depends on the layout.
//
// Dropless by default. With a capacity factor f each expert keeps at most
// capacity = ceil(T k / E * f) rows (Megatron's get_capacity): by probability (the highest,
// ties to the earlier slot) or by position (the earliest slots); dropped choices map to -1 and
// contribute nothing. With pad_to_capacity every expert gets exactly `capacity` rows, the missing
// ones padding (row_source -1, zeros in, ignored out).
#include <cstdint>
#include <vector>

#include "model/transformer_config.h"

namespace mt {

struct RoutingPlan {
  std::vector<int32_t> row_map;          // [T k]: slot -> row, -1 when dropped
  std::vector<int32_t> row_source;       // [R]: row -> slot, -1 for padding
  std::vector<int64_t> rows_per_expert;  // [E], padding included; rows of expert e follow e - 1's
  int64_t capacity = -1;                 // -1: dropless
  int64_t dropped = 0;                   // choices dropped
  int64_t rows() const { return int64_t(row_source.size()); }
};

// indices, probs: [T, k] host, from the router.
RoutingPlan make_routing_plan(const std::vector<int32_t>& indices, const std::vector<float>& probs, int64_t tokens,
                              const TransformerConfig& cfg);

}  // namespace mt
