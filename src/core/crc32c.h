#pragma once
// CRC-32C (Castagnoli), the checksum of checkpoint shards: hardware-accelerated with SSE4.2
// (a few GB/s, faster than any disk), a table fallback elsewhere. crc32c("123456789") ==
// 0xE3069283. Chain calls by passing the previous result as `crc`.
#include <cstddef>
#include <cstdint>
#include <string>

namespace mt {

uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// The 8-hex-digit form stored in checkpoint metadata ("e3069283").
std::string crc32c_hex(uint32_t crc);

}  // namespace mt
