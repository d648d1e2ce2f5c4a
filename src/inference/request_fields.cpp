#include "inference/request_fields.h"

namespace mt {

bool has_field(const nlohmann::json& request, const char* name) {
  const auto it = request.find(name);
  return it != request.end() && !it->is_null();
}

int64_t int_field(const nlohmann::json& request, const char* name, int64_t fallback, int64_t lo, int64_t hi,
                  const std::string& message) {
  if (!has_field(request, name)) return fallback;
  const nlohmann::json& v = request.at(name);
  // 3.0 is a float in JSON's Python reading too: only integer literals are integers.
  if (!v.is_number_integer()) throw BadRequest(name, message);
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) throw BadRequest(name, message);
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) throw BadRequest(name, message);
  return x;
}

double number_field(const nlohmann::json& request, const char* name, double fallback, double lo, double hi,
                    bool lo_open, const std::string& message) {
  if (!has_field(request, name)) return fallback;
  const nlohmann::json& v = request.at(name);
  if (!v.is_number()) throw BadRequest(name, message);
  const double x = v.get<double>();
  if (!(lo_open ? x > lo : x >= lo) || !(x <= hi)) throw BadRequest(name, message);
  return x;
}

bool bool_field(const nlohmann::json& request, const char* name, bool fallback, const std::string& message) {
  if (!has_field(request, name)) return fallback;
  const nlohmann::json& v = request.at(name);
  if (!v.is_boolean()) throw BadRequest(name, message);
  return v.get<bool>();
}

}  // namespace mt
