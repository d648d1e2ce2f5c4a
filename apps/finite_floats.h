#pragma once
// Every floating-point flag must be a finite number: "nan" or "inf" parse as doubles and would
// otherwise train on NaN (or abort deep in a kernel) instead of being named at start-up.
#include <CLI/CLI.hpp>

namespace mt {

// Adds the check to every FLOAT option of `app` and its subcommands (call after they are added).
void require_finite_floats(CLI::App& app);

}  // namespace mt
