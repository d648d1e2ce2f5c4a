#include "core/dtype.h"

namespace mt {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: case DType::U16: return 2;
    case DType::I64: return 8;
  }
  return 0;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "fp32";
    case DType::BF16: return "bf16";
    case DType::F16: return "fp16";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::U16: return "uint16";
  }
  return "?";
}

bool is_floating(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

bool parse_dtype(std::string_view s, DType& out) {
  if (s == "fp32" || s == "float32" || s == "F32") { out = DType::F32; return true; }
  if (s == "bf16" || s == "bfloat16" || s == "BF16") { out = DType::BF16; return true; }
  if (s == "fp16" || s == "float16" || s == "F16") { out = DType::F16; return true; }
  if (s == "int32" || s == "I32") { out = DType::I32; return true; }
  if (s == "int64" || s == "I64") { out = DType::I64; return true; }
  if (s == "uint16" || s == "U16") { out = DType::U16; return true; }
  return false;
}

}  // namespace mt
