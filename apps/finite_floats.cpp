#include "finite_floats.h"

#include <cmath>
#include <cstdlib>
#include <string>

namespace mt {

void require_finite_floats(CLI::App& app) {
  const CLI::Validator finite(
      [](std::string& s) -> std::string {
        const char* b = s.c_str();
        char* end = nullptr;
        const double v = std::strtod(b, &end);
        if (end != b && !std::isfinite(v)) return "expected a finite number, got " + s;
        return "";
      },
      "", "finite");
  for (CLI::Option* o : app.get_options())
    if (o->get_type_name() == "FLOAT") o->check(finite);
  for (CLI::App* sub : app.get_subcommands({})) require_finite_floats(*sub);
}

}  // namespace mt
