#pragma once
// Element types a Tensor can hold. Floating types are stored as given and computed in fp32.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mt {

enum class DType : uint8_t { F32, BF16, F16, I32, I64, U16 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);
bool is_floating(DType t);
// Parses "fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16", "int32", "int64", "uint16".
bool parse_dtype(std::string_view s, DType& out);

}  // namespace mt
