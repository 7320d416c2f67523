// CRC-32C (Castagnoli) for the load generator's verify mode: the SSE4.2
// instruction when the CPU has it, a table otherwise. Stateless, thread-safe.
#ifndef VHOSTD_PERF_CRC32C_H_
#define VHOSTD_PERF_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace vhostd_perf {

// CRC-32C of `len` bytes (initial value ~0, final xor ~0; "123456789" gives
// 0xE3069283).
uint32_t Crc32c(const void* data, size_t len);

}  // namespace vhostd_perf

#endif  // VHOSTD_PERF_CRC32C_H_
