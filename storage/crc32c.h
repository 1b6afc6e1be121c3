#pragma once

#include <cstdint>
#include <string_view>

namespace wharf::storage {

// CRC32C (Castagnoli), the checksum guarding every stored record and batch. Uses the SSE4.2
// instruction when the CPU has it, a table otherwise; both give the same result.
// Thread safety: pure function.
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);

}  // namespace wharf::storage
