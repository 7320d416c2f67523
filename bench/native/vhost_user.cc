// vhost-user front-end messages. Wire format: a 12-byte header (u32 request,
// u32 flags with version 1 in bits 0-1, 0x4 reply, 0x8 need_reply, u32 size)
// then `size` payload bytes, host byte order; fds ride on the header in one
// sendmsg. Replies are read with a receive timeout so a dead back-end cannot
// hang the generator.
#include "vhost_user.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace vhostd_perf {
namespace {

constexpr uint32_t kVersion = 1;
constexpr uint32_t kFlagReply = 0x4;
constexpr uint32_t kFlagNeedReply = 0x8;
constexpr uint32_t kMaxPayload = 4096;
constexpr uint64_t kNoFd = uint64_t(1) << 8;

struct Header {
  uint32_t request;
  uint32_t flags;
  uint32_t size;
};
static_assert(sizeof(Header) == 12, "vhost-user header is 12 bytes");

struct VringState {
  uint32_t index;
  uint32_t num;
};

struct VringAddr {
  uint32_t index;
  uint32_t flags;
  uint64_t desc_user_addr;
  uint64_t used_user_addr;
  uint64_t avail_user_addr;
  uint64_t log_guest_addr;
};
static_assert(sizeof(VringAddr) == 40, "vring address payload is 40 bytes");

struct MemRegion {
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
  uint64_t mmap_offset;
};

struct MemTable {
  uint32_t nregions;
  uint32_t padding;
  MemRegion regions[1];
};
static_assert(sizeof(MemTable) == 40, "one-region memory table is 40 bytes");

// virtio-blk config space as far as this generator reads it (virtio 1.2
// §5.2.4): capacity @0, blk_size @20. 60 bytes is QEMU 7.2's struct size.
constexpr uint32_t kBlkConfigSize = 60;
struct ConfigPayload {
  uint32_t offset;
  uint32_t size;
  uint32_t flags;
  uint8_t region[kBlkConfigSize];
};

std::string Errno(const char* what, int e) { return std::string(what) + ": " + std::strerror(e); }

std::string RequestName(uint32_t r) {
  switch (r) {
    case kGetFeatures: return "GET_FEATURES";
    case kSetFeatures: return "SET_FEATURES";
    case kSetOwner: return "SET_OWNER";
    case kSetMemTable: return "SET_MEM_TABLE";
    case kSetVringNum: return "SET_VRING_NUM";
    case kSetVringAddr: return "SET_VRING_ADDR";
    case kSetVringBase: return "SET_VRING_BASE";
    case kGetVringBase: return "GET_VRING_BASE";
    case kSetVringKick: return "SET_VRING_KICK";
    case kSetVringCall: return "SET_VRING_CALL";
    case kGetProtocolFeatures: return "GET_PROTOCOL_FEATURES";
    case kSetProtocolFeatures: return "SET_PROTOCOL_FEATURES";
    case kGetQueueNum: return "GET_QUEUE_NUM";
    case kSetVringEnable: return "SET_VRING_ENABLE";
    case kGetConfig: return "GET_CONFIG";
    default: return "request " + std::to_string(r);
  }
}

}  // namespace

bool VhostUserClient::Connect(const std::string& path, int timeout_ms, std::string* err) {
  Close();
  sockaddr_un addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    *err = "socket path must be 1.." + std::to_string(sizeof addr.sun_path - 1) + " bytes: " + path;
    return false;
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    *err = Errno("socket", errno);
    return false;
  }
  timeval tv;
  tv.tv_sec = timeout_ms / 1000;
  tv.tv_usec = (timeout_ms % 1000) * 1000;
  if (setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
    *err = Errno("setsockopt", errno);
    Close();
    return false;
  }
  if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    *err = Errno(("connect " + path).c_str(), errno);
    Close();
    return false;
  }
  return true;
}

void VhostUserClient::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool VhostUserClient::Send(uint32_t request, const void* payload, uint32_t size, const int* fds, int nfds,
                           bool need_reply, std::string* err) {
  if (fd_ < 0) {
    *err = "not connected";
    return false;
  }
  uint8_t buf[sizeof(Header) + kMaxPayload];
  if (size > kMaxPayload || nfds < 0 || nfds > 8) {
    *err = "internal: oversized " + RequestName(request);
    return false;
  }
  Header h{request, kVersion | (need_reply ? kFlagNeedReply : 0u), size};
  std::memcpy(buf, &h, sizeof h);
  if (size > 0) std::memcpy(buf + sizeof h, payload, size);
  iovec iov{buf, sizeof h + size};
  msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(8 * sizeof(int))];
  if (nfds > 0) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(size_t(nfds) * sizeof(int));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(size_t(nfds) * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds, size_t(nfds) * sizeof(int));
  }
  ssize_t n;
  do {
    n = sendmsg(fd_, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    *err = Errno(("send " + RequestName(request)).c_str(), errno);
    return false;
  }
  if (size_t(n) != iov.iov_len) {
    // Unix stream sockets with this little data do not short-write in practice;
    // finish the tail without fds if they do.
    size_t done = size_t(n);
    while (done < iov.iov_len) {
      ssize_t m = send(fd_, buf + done, iov.iov_len - done, MSG_NOSIGNAL);
      if (m < 0 && errno == EINTR) continue;
      if (m <= 0) {
        *err = Errno(("send " + RequestName(request)).c_str(), m < 0 ? errno : EPIPE);
        return false;
      }
      done += size_t(m);
    }
  }
  return true;
}

bool VhostUserClient::Receive(uint32_t request, void* payload, uint32_t min_size, uint32_t max_size, uint32_t* size,
                              std::string* err) {
  uint8_t buf[sizeof(Header) + kMaxPayload];
  size_t want = sizeof(Header);
  size_t got = 0;
  bool have_header = false;
  Header h{0, 0, 0};
  while (got < want) {
    ssize_t n = recv(fd_, buf + got, want - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *err = Errno(("reply to " + RequestName(request)).c_str(),
                   errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno);
      return false;
    }
    if (n == 0) {
      *err = "back-end closed the connection instead of replying to " + RequestName(request);
      return false;
    }
    got += size_t(n);
    if (!have_header && got >= sizeof(Header)) {
      std::memcpy(&h, buf, sizeof h);
      have_header = true;
      if (h.size > kMaxPayload) {
        *err = "reply to " + RequestName(request) + " has oversized payload " + std::to_string(h.size);
        return false;
      }
      want = sizeof(Header) + h.size;
    }
  }
  if (h.request != request || (h.flags & 0x3u) != kVersion || (h.flags & kFlagReply) == 0) {
    *err = "unexpected reply (request " + std::to_string(h.request) + ", flags 0x" + std::to_string(h.flags) +
           ") to " + RequestName(request);
    return false;
  }
  if (h.size < min_size || h.size > max_size) {
    *err = "reply to " + RequestName(request) + " has payload size " + std::to_string(h.size);
    return false;
  }
  std::memcpy(payload, buf + sizeof(Header), h.size);
  if (size != nullptr) *size = h.size;
  return true;
}

bool VhostUserClient::SendChecked(uint32_t request, const void* payload, uint32_t size, const int* fds, int nfds,
                                  std::string* err) {
  if (!Send(request, payload, size, fds, nfds, reply_ack_, err)) return false;
  if (!reply_ack_) return true;
  uint64_t status = 0;
  if (!Receive(request, &status, 8, 8, nullptr, err)) return false;
  if (status != 0) {
    *err = "back-end rejected " + RequestName(request) + " (status " + std::to_string(status) + ")";
    return false;
  }
  return true;
}

bool VhostUserClient::GetU64(uint32_t request, uint64_t* value, std::string* err) {
  if (!Send(request, nullptr, 0, nullptr, 0, false, err)) return false;
  return Receive(request, value, 8, 8, nullptr, err);
}

bool VhostUserClient::Negotiate(bool want_event_idx, DeviceInfo* info, std::string* err) {
  if (!GetU64(kGetFeatures, &info->features_offered, err)) return false;
  if ((info->features_offered & kFeatureVersion1) == 0) {
    *err = "back-end does not offer VIRTIO_F_VERSION_1";
    return false;
  }
  if ((info->features_offered & kFeatureProtocolFeatures) != 0) {
    if (!GetU64(kGetProtocolFeatures, &info->protocol_offered, err)) return false;
    info->protocol_acked = info->protocol_offered & (kProtocolMq | kProtocolReplyAck | kProtocolConfig |
                                                     (want_inflight ? kProtocolInflightShmfd : 0));
    if (!Send(kSetProtocolFeatures, &info->protocol_acked, 8, nullptr, 0, false, err)) return false;
    reply_ack_ = (info->protocol_acked & kProtocolReplyAck) != 0;
    if ((info->protocol_acked & kProtocolMq) != 0) {
      uint64_t queues = 0;
      if (!GetU64(kGetQueueNum, &queues, err)) return false;
      info->max_queues = queues > 0xffff ? 0xffff : uint32_t(queues);
    }
  }
  if (!SendChecked(kSetOwner, nullptr, 0, nullptr, 0, err)) return false;

  uint64_t understood = kFeatureVersion1 | kFeatureProtocolFeatures | kFeatureBlkSizeMax | kFeatureBlkSegMax |
                        kFeatureBlkRo | kFeatureBlkBlkSize | kFeatureBlkTopology | kFeatureBlkMq;
  if (want_event_idx) understood |= kFeatureEventIdx;
  if (want_packed) {
    if ((info->features_offered & kFeatureRingPacked) == 0) {
      *err = "back-end does not offer VIRTIO_F_RING_PACKED";
      return false;
    }
    understood |= kFeatureRingPacked;
  }
  if (want_indirect) {
    if ((info->features_offered & kFeatureRingIndirectDesc) == 0) {
      *err = "back-end does not offer VIRTIO_F_RING_INDIRECT_DESC";
      return false;
    }
    understood |= kFeatureRingIndirectDesc;
  }
  info->features_acked = info->features_offered & understood;
  info->packed = (info->features_acked & kFeatureRingPacked) != 0;
  info->event_idx = (info->features_acked & kFeatureEventIdx) != 0;
  info->indirect = (info->features_acked & kFeatureRingIndirectDesc) != 0;
  info->read_only = (info->features_acked & kFeatureBlkRo) != 0;
  if (!SendChecked(kSetFeatures, &info->features_acked, 8, nullptr, 0, err)) return false;

  if ((info->protocol_acked & kProtocolConfig) != 0) {
    ConfigPayload req;
    std::memset(&req, 0, sizeof req);
    req.offset = 0;
    req.size = kBlkConfigSize;
    if (!Send(kGetConfig, &req, sizeof req, nullptr, 0, false, err)) return false;
    ConfigPayload reply;
    std::memset(&reply, 0, sizeof reply);
    uint32_t got = 0;
    if (!Receive(kGetConfig, &reply, 12, sizeof reply, &got, err)) return false;
    // A back-end that fails GET_CONFIG answers with an empty region.
    if (got < 12 + 24 || reply.size < 24) {
      *err = "GET_CONFIG failed (reply size " + std::to_string(got) + ")";
      return false;
    }
    std::memcpy(&info->capacity_sectors, reply.region + 0, 8);
    if ((info->features_acked & kFeatureBlkBlkSize) != 0) {
      uint32_t bs = 0;
      std::memcpy(&bs, reply.region + 20, 4);
      if (bs >= 512 && bs <= (1u << 20) && (bs & (bs - 1)) == 0) info->blk_size = bs;
    }
    info->have_config = true;
  }
  return true;
}

bool VhostUserClient::SetMemTable(int fd, uint64_t size, uint64_t user_addr, std::string* err) {
  MemTable table;
  std::memset(&table, 0, sizeof table);
  table.nregions = 1;
  table.regions[0].guest_phys_addr = 0;
  table.regions[0].memory_size = size;
  table.regions[0].userspace_addr = user_addr;
  table.regions[0].mmap_offset = 0;
  return SendChecked(kSetMemTable, &table, sizeof table, &fd, 1, err);
}

bool VhostUserClient::SetupVring(uint32_t index, uint32_t num, uint64_t desc, uint64_t avail, uint64_t used,
                                 int kick_fd, int call_fd, bool packed, std::string* err) {
  VringState state{index, num};
  if (!SendChecked(kSetVringNum, &state, sizeof state, nullptr, 0, err)) return false;
  // Packed (vhost-user SET_VRING_BASE): avail index 0 with wrap counter 1 (bit 15), used the same (bits 16-31).
  state.num = packed ? 0x80008000u : 0;
  if (!SendChecked(kSetVringBase, &state, sizeof state, nullptr, 0, err)) return false;
  VringAddr addr{index, 0, desc, used, avail, 0};
  if (!SendChecked(kSetVringAddr, &addr, sizeof addr, nullptr, 0, err)) return false;
  uint64_t file = index;
  if (call_fd < 0) {
    file |= kNoFd;
    if (!SendChecked(kSetVringCall, &file, 8, nullptr, 0, err)) return false;
  } else if (!SendChecked(kSetVringCall, &file, 8, &call_fd, 1, err)) {
    return false;
  }
  file = index;
  return SendChecked(kSetVringKick, &file, 8, &kick_fd, 1, err);
}

bool VhostUserClient::SetVringEnable(uint32_t index, bool enable, std::string* err) {
  VringState state{index, enable ? 1u : 0u};
  return SendChecked(kSetVringEnable, &state, sizeof state, nullptr, 0, err);
}

bool VhostUserClient::GetVringBase(uint32_t index, uint32_t* base, std::string* err) {
  VringState state{index, 0};
  if (!Send(kGetVringBase, &state, sizeof state, nullptr, 0, false, err)) return false;
  VringState reply{0, 0};
  if (!Receive(kGetVringBase, &reply, sizeof reply, sizeof reply, nullptr, err)) return false;
  if (reply.index != index) {
    *err = "GET_VRING_BASE reply names queue " + std::to_string(reply.index);
    return false;
  }
  *base = reply.num;
  return true;
}

namespace {
// VhostUserInflight: u64 mmap_size, u64 mmap_offset, u16 num_queues, u16 queue_size, 4 bytes padding.
struct InflightPayload {
  uint64_t mmap_size;
  uint64_t mmap_offset;
  uint16_t num_queues;
  uint16_t queue_size;
  uint32_t padding;
};
static_assert(sizeof(InflightPayload) == 24, "inflight payload is 24 bytes");
}  // namespace

bool VhostUserClient::SetupInflight(const DeviceInfo& info, uint16_t queues, uint16_t queue_size, std::string* err) {
  if ((info.protocol_acked & kProtocolInflightShmfd) == 0) return true;
  InflightPayload req{0, 0, queues, queue_size, 0};
  if (!Send(kGetInflightFd, &req, sizeof req, nullptr, 0, false, err)) return false;
  // The reply carries the region's fd: read the whole reply with recvmsg.
  uint8_t buf[sizeof(Header) + sizeof(InflightPayload)];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  size_t got = 0;
  int fd = -1;
  while (got < sizeof buf) {
    iovec iov{buf + got, sizeof buf - got};
    msghdr msg;
    std::memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (fd >= 0) close(fd);
      *err = n < 0 ? Errno("reply to GET_INFLIGHT_FD", errno) : "back-end closed the connection instead of replying to GET_INFLIGHT_FD";
      return false;
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[8];
        std::memcpy(fds, CMSG_DATA(c), (count > 8 ? 8 : count) * sizeof(int));
        for (size_t i = 0; i < count && i < 8; i++) {
          if (fd < 0) fd = fds[i];
          else close(fds[i]);
        }
      }
    }
    got += size_t(n);
  }
  Header h;
  std::memcpy(&h, buf, sizeof h);
  InflightPayload reply;
  std::memcpy(&reply, buf + sizeof h, sizeof reply);
  if (h.request != kGetInflightFd || (h.flags & kFlagReply) == 0 || h.size != sizeof reply || fd < 0 ||
      reply.mmap_size == 0) {
    if (fd >= 0) close(fd);
    *err = "bad reply to GET_INFLIGHT_FD";
    return false;
  }
  bool ok = SendChecked(kSetInflightFd, &reply, sizeof reply, &fd, 1, err);
  close(fd);
  return ok;
}

}  // namespace vhostd_perf
