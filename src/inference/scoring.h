#pragma once
// Scoring prompts (Megatron's score_and_return_on_first_stage): the log-probability the model
// gives each prompt token after the first, from the tokens before it. The generation server
// reports them ahead of the generated tokens' log-probabilities, as Megatron's does.
#include <cstdint>
#include <vector>

#include "model/gpt_model.h"

namespace mt {

// Per prompt, len - 1 values: log p(prompt[t] | prompt[:t]) for t = 1 .. len - 1 (none for a
// one-token prompt). One eval-mode forward over the batch right-padded to its longest prompt
// (causal attention: the padding after a prompt does not change its logits), the per-token
// losses of the fused (vocabulary-parallel) cross-entropy being minus the log-probabilities.
// Every prompt must fit the model's positions.
std::vector<std::vector<float>> score_prompts(const GPTModel& model, const std::vector<std::vector<int32_t>>& prompts);

}  // namespace mt
