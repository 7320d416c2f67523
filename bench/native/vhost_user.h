// The vhost-user front-end side of the wire (QEMU docs/interop/vhost-user.rst):
// one Unix stream socket to a vhost-user-blk back-end, requests with fds in
// SCM_RIGHTS, replies read synchronously with a receive timeout. Used by the
// generator thread only, before and after the I/O loop (never in it).
#ifndef VHOSTD_PERF_VHOST_USER_H_
#define VHOSTD_PERF_VHOST_USER_H_

#include <cstdint>
#include <string>

namespace vhostd_perf {

// Request ids (vhost-user.rst, "Front-end message types").
enum VhostUserRequest : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kSetMemTable = 5,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kGetConfig = 24,
  kGetInflightFd = 31,
  kSetInflightFd = 32,
};

// Protocol feature bits.
constexpr uint64_t kProtocolMq = uint64_t(1) << 0;
constexpr uint64_t kProtocolReplyAck = uint64_t(1) << 3;
constexpr uint64_t kProtocolConfig = uint64_t(1) << 9;
constexpr uint64_t kProtocolInflightShmfd = uint64_t(1) << 12;

// Virtio feature bits (virtio 1.2 §6, §5.2.3) and VHOST_USER_F_PROTOCOL_FEATURES.
constexpr uint64_t kFeatureBlkSizeMax = uint64_t(1) << 1;
constexpr uint64_t kFeatureBlkSegMax = uint64_t(1) << 2;
constexpr uint64_t kFeatureBlkRo = uint64_t(1) << 5;
constexpr uint64_t kFeatureBlkBlkSize = uint64_t(1) << 6;
constexpr uint64_t kFeatureBlkTopology = uint64_t(1) << 10;
constexpr uint64_t kFeatureBlkMq = uint64_t(1) << 12;
constexpr uint64_t kFeatureRingIndirectDesc = uint64_t(1) << 28;
constexpr uint64_t kFeatureEventIdx = uint64_t(1) << 29;
constexpr uint64_t kFeatureProtocolFeatures = uint64_t(1) << 30;
constexpr uint64_t kFeatureVersion1 = uint64_t(1) << 32;
constexpr uint64_t kFeatureRingPacked = uint64_t(1) << 34;

// What negotiation learnt about the device.
struct DeviceInfo {
  uint64_t features_offered = 0;
  uint64_t features_acked = 0;
  uint64_t protocol_offered = 0;
  uint64_t protocol_acked = 0;
  uint32_t max_queues = 1;        // GET_QUEUE_NUM, or 1 without MQ
  uint64_t capacity_sectors = 0;  // virtio-blk config, 512-byte sectors
  uint32_t blk_size = 512;        // virtio-blk config blk_size (512 unless BLK_SIZE)
  bool have_config = false;
  bool read_only = false;
  bool event_idx = false;
  bool packed = false;  // VIRTIO_F_RING_PACKED negotiated
  bool indirect = false;  // VIRTIO_F_RING_INDIRECT_DESC negotiated
};

class VhostUserClient {
 public:
  VhostUserClient() = default;
  ~VhostUserClient() { Close(); }
  VhostUserClient(const VhostUserClient&) = delete;
  VhostUserClient& operator=(const VhostUserClient&) = delete;

  // Connects to `path` with send/receive timeouts of `timeout_ms`.
  bool Connect(const std::string& path, int timeout_ms, std::string* err);

  // GET_FEATURES .. GET_CONFIG, SET_OWNER, SET_FEATURES (VERSION_1, bit 30
  // when offered, EVENT_IDX when `want_event_idx` and offered, and the
  // virtio-blk bits this generator understands).
  bool Negotiate(bool want_event_idx, DeviceInfo* info, std::string* err);

  // INFLIGHT_SHMFD as QEMU does it: GET_INFLIGHT_FD for `queues` queues of
  // `queue_size`, then SET_INFLIGHT_FD with the region the back-end gave
  // (the generator does not keep it: it never reconnects). Call after
  // Negotiate(want_inflight=true), before the rings are set up; false with
  // *err when the back-end refuses. No-op when the feature was not acked.
  bool SetupInflight(const DeviceInfo& info, uint16_t queues, uint16_t queue_size, std::string* err);
  // Ask for INFLIGHT_SHMFD in Negotiate() when offered.
  bool want_inflight = false;
  // Negotiate VIRTIO_F_RING_PACKED (Negotiate fails when it is not offered).
  bool want_packed = false;
  // Negotiate VIRTIO_F_RING_INDIRECT_DESC (Negotiate fails when it is not offered).
  bool want_indirect = false;

  // SET_MEM_TABLE with one region: guest physical 0..size, our mapping at
  // `user_addr`, offset 0 in `fd`.
  bool SetMemTable(int fd, uint64_t size, uint64_t user_addr, std::string* err);

  // SET_VRING_NUM, SET_VRING_BASE 0, SET_VRING_ADDR (front-end virtual
  // addresses), SET_VRING_KICK, SET_VRING_CALL for queue `index`.
  // `packed`: a packed ring (desc = descriptor ring, avail/used = the driver/device event areas).
  bool SetupVring(uint32_t index, uint32_t num, uint64_t desc, uint64_t avail, uint64_t used, int kick_fd,
                  int call_fd, bool packed, std::string* err);

  bool SetVringEnable(uint32_t index, bool enable, std::string* err);

  // GET_VRING_BASE: stops the ring; `base` is the back-end's next avail index.
  bool GetVringBase(uint32_t index, uint32_t* base, std::string* err);

  void Close();

 private:
  bool Send(uint32_t request, const void* payload, uint32_t size, const int* fds, int nfds, bool need_reply,
            std::string* err);
  // Reads one reply to `request` into `payload`; its size must lie in
  // [min_size, max_size] and is stored in *size.
  bool Receive(uint32_t request, void* payload, uint32_t min_size, uint32_t max_size, uint32_t* size,
               std::string* err);
  // Sends a request that has no reply of its own; with REPLY_ACK it asks for
  // one and checks it is 0.
  bool SendChecked(uint32_t request, const void* payload, uint32_t size, const int* fds, int nfds,
                   std::string* err);
  bool GetU64(uint32_t request, uint64_t* value, std::string* err);

  int fd_ = -1;
  bool reply_ack_ = false;
};

}  // namespace vhostd_perf

#endif  // VHOSTD_PERF_VHOST_USER_H_
