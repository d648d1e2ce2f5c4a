#pragma once
// An iteration's MoE metrics over all ranks: each MoE layer's load-balancing and z losses
// (per-microbatch means, averaged over the data-parallel ranks) and its global per-expert token
// counts (summed over the data-parallel group: the tokens of the whole global batch), for the
// log line, --moe-per-layer-logging and the expert-bias update.
#include <string>
#include <utility>
#include <vector>

#include "comm/process_groups.h"
#include "model/moe_metrics.h"
#include "model/transformer_config.h"

namespace mt {

// Collective over the world (every rank calls it once per iteration with its own metrics).
// Returns the global metrics (every layer, on every rank; loss fields are per-microbatch means).
MoEMetrics reduce_moe_metrics(const MoEMetrics& local, const TransformerConfig& cfg, ProcessGroups& groups);
// The log line's fields: load_balancing_loss and z_loss averaged over the MoE layers (only the
// losses that are on), and per layer with --moe-per-layer-logging.
std::vector<std::pair<std::string, double>> moe_log_fields(const MoEMetrics& global, const TransformerConfig& cfg,
                                                           bool per_layer);
// "layer 3 tokens per expert: 120 98 ..." lines (--moe-per-layer-logging).
std::string format_tokens_per_expert(const MoEMetrics& global, const TransformerConfig& cfg);

}  // namespace mt
