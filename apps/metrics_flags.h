#pragma once
// `megatron train`'s TensorBoard flags (Megatron's names) and --log-jsonl (ours).
#include <CLI/CLI.hpp>

#include "train/arguments.h"

namespace mt {

void add_metrics_flags(CLI::App& app, TrainingArgs& a);

}  // namespace mt
