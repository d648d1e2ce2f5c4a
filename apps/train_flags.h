#pragma once
// Registers Megatron's `pretrain_gpt.py` flag names for `megatron train` on a CLI11 app.
#include <CLI/CLI.hpp>

#include "train/arguments.h"

namespace mt {

void add_train_flags(CLI::App& app, TrainingArgs& a);

}  // namespace mt
