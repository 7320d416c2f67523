// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78). The hardware path
// uses the SSE4.2 crc32 instruction, chosen at run time so the addon still
// loads on CPUs without it.
#include "crc32c.h"

#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace vhostd_perf {
namespace {

struct Table {
  uint32_t entries[256];
  Table() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t crc = i;
      for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
      entries[i] = crc;
    }
  }
};

uint32_t SoftwareCrc(uint32_t crc, const uint8_t* p, size_t len) {
  static const Table table;
  for (size_t i = 0; i < len; i++) crc = (crc >> 8) ^ table.entries[(crc ^ p[i]) & 0xffu];
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t HardwareCrc(uint32_t crc, const uint8_t* p, size_t len) {
  uint64_t c = crc;
  while (len >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
    p += 8;
    len -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (len > 0) {
    c32 = _mm_crc32_u8(c32, *p);
    p++;
    len--;
  }
  return c32;
}

bool HaveSse42() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}
#endif

}  // namespace

uint32_t Crc32c(const void* data, size_t len) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
#if defined(__x86_64__)
  if (HaveSse42()) return ~HardwareCrc(~0u, p, len);
#endif
  return ~SoftwareCrc(~0u, p, len);
}

}  // namespace vhostd_perf
