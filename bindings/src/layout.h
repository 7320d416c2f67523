// Layout constants the addon shares with TypeScript: the shapes of the arrays
// it reads and fills and the limits it enforces. bindings/src/layout.cc
// exports them as `layout`; bindings/index.ts compares them with its own copy
// (bindings/layout.ts) when the addon is loaded and refuses a mismatch.
#ifndef VHOSTD_LAYOUT_H_
#define VHOSTD_LAYOUT_H_

#include <stddef.h>
#include <stdint.h>

namespace vhostd {

// Numbers of a FileRing request row: [op, fileSlot, offsetBytes, a, b, tag].
constexpr size_t kReqWords = 6;
// Numbers of one iov: [bufferSlot, offsetInBuffer, length].
constexpr size_t kIovWords = 3;
// Numbers of one completion reap() writes: [tag, res].
constexpr size_t kCompletionWords = 2;
constexpr uint32_t kMaxBufferSlots = 64;
constexpr uint32_t kMaxFileSlots = 64;
// Linux IOV_MAX: the most iovs one request may carry.
constexpr uint32_t kMaxIovLimit = 1024;
// At most this many fds travel with one message (vhost-user: 8 memory regions).
constexpr size_t kMaxFds = 8;
// Upper bound for CPU ids we accept (the kernel's NR_CPUS is at most 8192).
constexpr int kMaxCpus = 8192;

}  // namespace vhostd

#endif  // VHOSTD_LAYOUT_H_
