#include "train/recompute_args.h"

#include "core/error.h"

namespace mt {
namespace {

// --recompute-activations is Megatron's shorthand for --recompute-granularity selective.
std::string granularity(const TrainingArgs& a) { return a.recompute_activations ? "selective" : a.recompute_granularity; }

}  // namespace

void validate_recompute_args(const TrainingArgs& a) {
  if (a.recompute_granularity != "" && a.recompute_granularity != "full" && a.recompute_granularity != "selective")
    MT_USER_ERROR("--recompute-granularity {}: expected full or selective", a.recompute_granularity);
  if (a.recompute_method != "" && a.recompute_method != "uniform" && a.recompute_method != "block")
    MT_USER_ERROR("--recompute-method {}: expected uniform or block", a.recompute_method);
  if (a.recompute_activations && a.recompute_granularity == "full")
    MT_USER_ERROR("--recompute-activations means --recompute-granularity selective, not full: give one of them");
  const std::string g = granularity(a);
  if (!a.recompute_method.empty() && g != "full")
    MT_USER_ERROR("--recompute-method {} needs --recompute-granularity full (selective recomputation takes no method)",
                  a.recompute_method);
  if (g == "full" && a.recompute_method.empty())
    MT_USER_ERROR("--recompute-granularity full needs --recompute-method uniform or block");
  if (a.recompute_num_layers < 0 || a.recompute_num_layers > a.num_layers)
    MT_USER_ERROR("--recompute-num-layers {} must be between 0 and --num-layers {}", a.recompute_num_layers,
                  a.num_layers);
  if (g == "full" && a.recompute_num_layers == 0)
    MT_USER_ERROR("--recompute-granularity full needs --recompute-num-layers N (uniform: layers per recomputed "
                  "group; block: recomputed layers per pipeline stage)");
  if (a.recompute_num_layers > 0 && g != "full" && !a.recompute_gelu)
    MT_USER_ERROR("--recompute-num-layers {} needs --recompute-granularity full with --recompute-method, or "
                  "--recompute-gelu", a.recompute_num_layers);
  if (g == "full" && a.recompute_gelu)
    MT_USER_ERROR("--recompute-gelu with --recompute-granularity full: full recomputation reruns the activation "
                  "already (drop --recompute-gelu)");
  if (!a.recompute_modules.empty() && g != "selective")
    MT_USER_ERROR("--recompute-modules needs --recompute-granularity selective (or --recompute-activations)");
  parse_recompute_modules(a.recompute_modules);  // names an unknown or unbuilt module
}

void apply_recompute_args(const TrainingArgs& a, TransformerConfig& c) {
  c.recompute_gelu = a.recompute_gelu;
  c.recompute_num_layers = a.recompute_num_layers;
  const std::string g = granularity(a);
  c.recompute_granularity = g == "full"        ? RecomputeGranularity::Full
                            : g == "selective" ? RecomputeGranularity::Selective
                                               : RecomputeGranularity::None;
  c.recompute_method = a.recompute_method == "uniform" ? RecomputeMethod::Uniform
                       : a.recompute_method == "block" ? RecomputeMethod::Block
                                                       : RecomputeMethod::None;
  // Megatron's default module list is [core_attn].
  c.recompute_modules = parse_recompute_modules(a.recompute_modules.empty() ? std::vector<std::string>{"core_attn"}
                                                                            : a.recompute_modules);
}

}  // namespace mt
