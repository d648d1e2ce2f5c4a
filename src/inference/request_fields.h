#pragma once
// Reading the fields of a generation server's JSON request: each reader checks the field's
// type and range and throws BadRequest naming the field (the server answers HTTP 400 with its
// message), so no ill-formed value reaches the model.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace mt {

struct BadRequest : std::runtime_error {
  BadRequest(std::string field_name, const std::string& message)
      : std::runtime_error(message), field(std::move(field_name)) {}
  std::string field;  // the request field at fault ("" for the body as a whole)
};

// An integer field (JSON numbers without a fraction; true/false are not integers): `fallback`
// when absent or null, BadRequest(message) when not an integer or outside [lo, hi].
int64_t int_field(const nlohmann::json& request, const char* name, int64_t fallback, int64_t lo, int64_t hi,
                  const std::string& message);
// A number field (integer or not): the same, for [lo, hi] (lo_open: lo itself is excluded).
double number_field(const nlohmann::json& request, const char* name, double fallback, double lo, double hi,
                    bool lo_open, const std::string& message);
// A boolean field.
bool bool_field(const nlohmann::json& request, const char* name, bool fallback, const std::string& message);
// An optional field present and not null.
bool has_field(const nlohmann::json& request, const char* name);

}  // namespace mt
