#pragma once
// Argument checks shared by the dispatch of attention.h and attention_block.h.
#include "kernels/attention.h"

namespace mt::detail {

// The head layout of cfg: n_heads and head_dim positive, n_query_groups dividing n_heads,
// dropout_p in [0, 1) and the dropout mask's coordinates in range; errors name `op`.
void check_attention_config(const char* op, const AttentionConfig& cfg);

}  // namespace mt::detail
