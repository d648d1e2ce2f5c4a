#pragma once
// Megatron-LM `pretrain_gpt.py` flags that megatron.cpp takes without a field of its own, each
// with what it does here: nothing because it does not apply (and why), a mapping onto what we
// have (said in the log), a warning that it is ignored, or "not supported yet" naming the
// feature and what to use instead. The flags with a real meaning here live in TrainingArgs.
#include <string>
#include <vector>

#include "train/arguments.h"

namespace mt {

enum class CompatHandling {
  NotApplicable,  // accepted: no effect, the reason says why (printed in --help)
  Mapped,         // accepted: mapped onto our equivalent, said in the log at start
  Ignored,        // accepted with a warning at start: a side feature not built (e.g. W&B)
  Unsupported,    // "not supported yet", naming the feature and what to use instead
};

struct CompatFlag {
  const char* name;
  int arity;               // 0: a switch, 1: one value, -1: a list
  CompatHandling handling;
  const char* reason;      // --help text; for Unsupported: the feature and the alternative
  std::vector<std::string> values = {};  // accepted values (empty: any)
};

// Every such flag (registered for `megatron train` by apps/train_flags.cpp).
const std::vector<CompatFlag>& megatron_compat_flags();

// The flags given, "--flag value" each, that are not supported yet (with the feature and what to
// use instead), including values of our own flags that name features not built (context
// parallelism, the flex dispatcher, ...). Empty: none.
std::vector<std::string> unsupported_features(const TrainingArgs& a);

// Checks the values of the accepted flags (UserError naming the flag and the accepted values).
void validate_compat_flags(const TrainingArgs& a);

// Megatron's own adjustments of the parsed flags (arguments.py's validate_args), applied to `a`,
// and the compat flags' effects: returns one line per adjustment, mapping or ignored flag, for
// the log ("--sequence-parallel is off: tensor parallel size is 1", "--ckpt-format torch_dist:
// ..."). Call once after parsing, before pretrain_gpt.
std::vector<std::string> apply_megatron_implications(TrainingArgs& a);

}  // namespace mt
