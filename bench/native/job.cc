// The load generator's job: a vhost-user-blk front-end with split virtqueues
// (virtio 1.2 §2.7) laid out in one memfd that the back-end maps, one
// preallocated request slot per unit of I/O depth, and a poll loop with no
// allocation per I/O. Everything here runs on the generator thread.
//
// Memory layout per queue (offsets in the memfd = guest physical addresses;
// the region is guest-physical 0..size, so an offset is its own GPA):
//   desc table (16 B x queue size)  | avail ring (6 + 2 x size)   page-aligned
//   used ring (6 + 8 x size)                                     page-aligned
//   slot headers (64 B each: 16-B virtio-blk header, status byte at +16)
//   data buffers (block size each)                               page-aligned
// Slot i owns descriptors 3i (header, device-readable), 3i+1 (data) and 3i+2
// (status, device-writable), chained once at setup; an I/O rewrites only the
// header, the data descriptor's direction and the status byte.
// virtio-scsi mode (--scsi): the slot header is a 192-byte area holding the
// 51-byte virtio_scsi_req_cmd at +0 and the 108-byte response at +64;
// descriptor 3i is the request, 3i+2 the response, 3i+1 the data, chained
// request → data → response for a WRITE 16 and request → response → data for
// a READ 16 (device-readable before device-writable, virtio 1.2 §2.7.4.2).
//
// NVMe mode (--nvme, NVMe Base 2.0 §3.3, §4.1): the memory, queues and
// controller are set up by bench/perf/nvme.ts over vfio-user; here the
// memfd is mapped again, slot i of a queue is command identifier i with its
// data buffer (and, when the buffer spans more than two pages, a PRP list
// page) fixed at setup, an I/O writes one 64-byte SQ entry at the tail,
// the SQ tail doorbell is written once per queue per loop iteration, the CQ
// is polled by its phase tag and its head doorbell written after each reap.
// Doorbells go through the mapped doorbell page when vhostd offers it (a
// plain store, which vhostd's worker polls), else as vfio-user REGION_WRITE
// messages (one round trip each).
#include "job.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "crc32c.h"
#include "histogram.h"
#include "vhost_user.h"

namespace vhostd_perf {
namespace {

constexpr uint16_t kDescFNext = 1;
constexpr uint16_t kDescFWrite = 2;
constexpr uint16_t kDescFIndirect = 4;
// --indirect: each slot's table of three descriptors, 64-byte aligned.
constexpr uint32_t kTableBytes = 3 * 16;
constexpr uint64_t kTableStride = 64;
constexpr uint16_t kAvailFNoInterrupt = 1;
constexpr uint16_t kUsedFNoNotify = 1;
constexpr uint32_t kBlkTIn = 0;
constexpr uint32_t kBlkTOut = 1;
constexpr uint64_t kBlkSlotHeaderBytes = 64;
constexpr uint64_t kScsiSlotHeaderBytes = 192;
constexpr uint32_t kScsiReqBytes = 51;
constexpr uint64_t kScsiRespOffset = 64;
constexpr uint32_t kScsiRespBytes = 108;
constexpr uint32_t kScsiFirstRequestQueue = 2;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kHugePage = 2ull << 20;  // MFD_HUGETLB's default size on x86-64
constexpr int kMaxMismatchesReported = 8;
constexpr uint64_t kStallNs = 200000;
constexpr uint8_t kNvmeWrite = 0x01;
constexpr uint8_t kNvmeRead = 0x02;
constexpr uint16_t kVfioUserRegionWrite = 10;
constexpr uint32_t kVfioUserFlagReply = 0x1;
constexpr uint32_t kVfioUserFlagError = 0x20;

struct VringDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VringDesc) == 16, "split descriptor is 16 bytes");

// Packed ring descriptor (virtio 1.2 §2.8.13) and its flag bits.
struct PackedDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};
static_assert(sizeof(PackedDesc) == 16, "packed descriptor is 16 bytes");
constexpr uint16_t kPackedFAvail = 1 << 7;
constexpr uint16_t kPackedFUsed = 1 << 15;
constexpr uint16_t kPackedEventEnable = 0;
constexpr uint16_t kPackedEventDisable = 1;
constexpr uint16_t kPackedEventDesc = 2;

struct UsedElem {
  uint32_t id;
  uint32_t len;
};

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

double RusageSec(const rusage& r, bool user) {
  const timeval& tv = user ? r.ru_utime : r.ru_stime;
  return double(tv.tv_sec) + double(tv.tv_usec) / 1e6;
}

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

// virtio 1.2 §2.7.10: notify when the new index has just passed `event`.
inline bool NeedEvent(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
  return uint16_t(new_idx - event - 1) < uint16_t(new_idx - old_idx);
}

uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x2545F4914F6CDD1Dull + 1) {}
  uint64_t Next() { return SplitMix(&state_); }
  // Uniform in [0, n) (Lemire's multiply-shift; the bias is below 2^-40 for
  // any range this generator uses).
  uint64_t Below(uint64_t n) { return uint64_t((unsigned __int128)Next() * n >> 64); }

 private:
  uint64_t state_;
};

// The verify pattern of `block` under `seed`: the block number and seed in the
// first 16 bytes, a SplitMix stream after, so a block written at the wrong
// place or with another seed fails its check.
void FillPattern(uint8_t* buf, uint32_t len, uint64_t seed, uint64_t block) {
  uint64_t state = seed * 0xD1B54A32D192ED03ull ^ (block + 1) * 0x9E3779B97F4A7C15ull;
  for (uint32_t off = 0; off + 8 <= len; off += 8) {
    uint64_t word = SplitMix(&state);
    std::memcpy(buf + off, &word, 8);
  }
  if (len >= 16) {
    std::memcpy(buf, &block, 8);
    std::memcpy(buf + 8, &seed, 8);
  }
}

struct Slot {
  uint64_t submit_ns = 0;
  uint64_t block = 0;
  uint32_t crc = 0;  // of the data written, or expected on read (read pass)
  bool write = false;
  bool inflight = false;
  uint64_t prp1 = 0, prp2 = 0;  // NVMe: the data buffer's PRP entries, fixed at setup
};

struct Queue {
  uint32_t index = 0;
  uint16_t size = 0;
  VringDesc* desc = nullptr;
  uint16_t* avail_flags = nullptr;
  uint16_t* avail_idx = nullptr;
  uint16_t* avail_ring = nullptr;
  uint16_t* used_event = nullptr;
  uint16_t* used_flags = nullptr;
  uint16_t* used_idx = nullptr;
  UsedElem* used_ring = nullptr;
  uint16_t* avail_event = nullptr;
  uint64_t desc_off = 0, avail_off = 0, used_off = 0, hdr_off = 0, data_off = 0;
  uint64_t table_off = 0;  // --indirect: a 3-descriptor table per slot, kTableStride apart
  uint16_t avail_shadow = 0;
  uint16_t avail_published = 0;
  uint16_t last_used = 0;
  uint32_t inflight = 0;
  // Packed ring: the descriptor ring, the event suppression areas (driver's
  // and device's {off_wrap, flags}), where the next chain goes and the next
  // used descriptor is expected, with their wrap counters, and descriptors
  // made available since the last kick decision.
  PackedDesc* ring = nullptr;
  uint16_t* drv_event = nullptr;
  uint16_t* dev_event = nullptr;
  uint16_t next_avail = 0;
  bool avail_wrap = true;
  uint16_t next_used = 0;
  bool used_wrap = true;
  uint16_t added = 0;
  // --desc-free-list (split): the free descriptors as a list linked through
  // free_next (the links of a chain in flight stay: it goes back whole), its
  // head (size: empty), and each ring descriptor's slot + 1 while it heads a
  // request in flight (0: none).
  std::vector<uint16_t> free_next;
  uint16_t free_head = 0;
  std::vector<uint32_t> head_slot;
  int kick_fd = -1;
  int call_fd = -1;
  std::vector<Slot> slots;
  // NVMe mode.
  uint16_t qid = 0;
  uint8_t* sq = nullptr;
  uint8_t* cq = nullptr;
  uint16_t sq_tail = 0, sq_published = 0, cq_head = 0;
  uint32_t cq_phase = 1;
};

enum class Phase { kTimed, kWritePass, kReadPass };

struct Mismatch {
  uint64_t block;
  uint32_t expected;
  uint32_t actual;
};

// Appends JSON to a string; numbers that are not finite become 0.
class Json {
 public:
  std::string out;
  void Key(const char* k) {
    Sep();
    Quote(k);
    out += ':';
    after_key_ = true;
  }
  void Open(char c) {
    Sep();
    out += c;
    first_ = true;
  }
  void Close(char c) {
    out += c;
    first_ = false;
  }
  void Num(double v) {
    Sep();
    if (!std::isfinite(v)) v = 0;
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out += buf;
  }
  void U64(uint64_t v) {
    Sep();
    out += std::to_string(v);
  }
  void Bool(bool v) {
    Sep();
    out += v ? "true" : "false";
  }
  void Null() {
    Sep();
    out += "null";
  }
  void Hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    Str(buf);
  }
  void Str(const char* s) {
    Sep();
    Quote(s);
  }

 private:
  void Quote(const char* s) {
    out += '"';
    for (const char* p = s; *p != 0; p++) {
      unsigned char c = static_cast<unsigned char>(*p);
      if (c == '"' || c == '\\') {
        out += '\\';
        out += char(c);
      } else if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out += char(c);
      }
    }
    out += '"';
  }

  void Sep() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (!first_) out += ',';
    first_ = false;
  }
  bool first_ = true;
  bool after_key_ = false;
};

const char* PatternName(Pattern p) {
  switch (p) {
    case Pattern::kRandRead: return "randread";
    case Pattern::kRandWrite: return "randwrite";
    case Pattern::kRead: return "read";
    case Pattern::kWrite: return "write";
    case Pattern::kRandRw: return "randrw";
  }
  return "?";
}

const char* VerifyName(VerifyMode v) {
  switch (v) {
    case VerifyMode::kOff: return "off";
    case VerifyMode::kWriteRead: return "write-read";
    case VerifyMode::kWrite: return "write";
    case VerifyMode::kRead: return "read";
  }
  return "?";
}

class Job {
 public:
  explicit Job(const JobOptions& o) : o_(o), rng_(o.seed) {}
  ~Job() { Release(); }

  bool Run(std::string* err);
  std::string Report() const;

 private:
  bool Pin(std::string* err);
  bool Validate(std::string* err);
  bool ValidateRange(std::string* err);
  bool ScsiProbe(std::string* err);
  bool ScsiSync(Queue& q, const uint8_t* cdb, uint32_t in_len, uint8_t* status, uint8_t* response, std::string* err);
  void ScsiChain(Queue& q, uint32_t slot_index, bool data, bool write);
  bool SetupMemory(std::string* err);
  bool SetupQueues(std::string* err);
  bool Loop(std::string* err);
  bool Teardown(std::string* err);
  void Release();

  bool random_order() const { return o_.rw != Pattern::kRead && o_.rw != Pattern::kWrite; }
  bool verifying() const { return o_.verify != VerifyMode::kOff; }
  bool mixed_verify() const { return verifying() && o_.rw == Pattern::kRandRw; }

  bool NextIo(uint64_t* block, bool* write);
  void SubmitPacked(Queue& q, uint32_t slot_index, bool write);
  void WriteBlkChain(const Queue& q, VringDesc* table, uint16_t d0, uint16_t d1, uint16_t d2, uint32_t slot_index, bool write);
  VringDesc IndirectDesc(const Queue& q, uint32_t slot_index) const;
  uint16_t SplitChainFromFreeList(Queue& q, uint32_t slot_index, bool write);
  void FreeSplitChain(Queue& q, uint16_t head);
  void PublishPacked(Queue& q);
  int ReapPacked(Queue& q, uint64_t now, std::string* err);
  bool UsedPending(const Queue& q) const;
  void Submit(Queue& q, uint32_t slot, uint64_t block, bool write, uint64_t now);
  void Publish(Queue& q);
  // Reaps used entries; resubmits each freed slot while `submitting_`.
  // Returns how many completed, or -1 after a protocol error (in *err).
  int Reap(Queue& q, uint64_t now, std::string* err);
  // `status` 0: success (virtio-blk status, scsi GOOD/S_OK, NVMe SCT/SC 0).
  void Complete(Queue& q, Slot& s, uint32_t slot_index, uint32_t status);
  uint32_t VirtioStatus(const Queue& q, uint32_t slot_index) const;
  void WaitForCall(uint64_t now, uint64_t wake_at);
  void StartPhase(Phase phase, uint64_t now);
  void ResetStats(uint64_t now);
  void StopStats(uint64_t now);
  bool NvmeSetup(std::string* err);
  int NvmeReap(Queue& q, uint64_t now, std::string* err);
  void NvmeSubmit(Queue& q, uint32_t slot_index, uint64_t block, bool write);
  // Writes `value` to the doorbell at byte `index` of the doorbell page.
  void RingDoorbell(uint64_t index, uint32_t value);
  bool DoorbellMessage(uint64_t index, uint32_t value);

  JobOptions o_;
  Rng rng_;
  VhostUserClient client_;
  DeviceInfo dev_;
  uint64_t nblocks_ = 0;
  uint64_t first_sector_ = 0;
  uint16_t queue_size_ = 0;
  uint64_t slot_hdr_ = kBlkSlotHeaderBytes;
  // Ring descriptors a request takes: 3 (header, data, status), 1 with --indirect.
  uint16_t ring_slots_ = 3;
  uint32_t scsi_lbs_ = 512;  // the LU's logical block size (READ CAPACITY 16)
  int memfd_ = -1;
  uint8_t* mem_ = nullptr;
  uint64_t mem_size_ = 0;
  std::vector<Queue> queues_;
  bool rings_live_ = false;
  // ReapPacked: the slots of one pass, submitted again after it.
  std::vector<uint32_t> reaped_;

  // Block selection.
  Phase phase_ = Phase::kTimed;
  bool submitting_ = false;
  uint64_t seq_cursor_ = 0;
  std::vector<uint32_t> order_;    // random pass order (permutation)
  std::vector<uint32_t> crc_;      // verify: CRC of each written block
  std::vector<uint8_t> state_;     // verify: bit 0 written, bit 1 in flight
  std::vector<uint8_t> scratch_;   // verify: expected pattern

  // Statistics (of the measured window).
  bool measuring_ = false;
  LatencyHistogram hist_;
  uint64_t ios_ = 0, reads_ = 0, writes_ = 0, errors_ = 0, kicks_ = 0, call_wakeups_ = 0;
  uint64_t total_ios_ = 0;
  // Loop time split by whether the iteration completed anything (SPDK's
  // reactor busy/idle split): busy_ns_ / (busy_ns_ + idle_ns_) < 1 means the
  // generator waited for the target.
  uint64_t busy_ns_ = 0, idle_ns_ = 0;
  // Loop gaps longer than kStallNs (in practice: the thread was descheduled)
  // count here instead, so a shared core does not pass for a busy generator.
  uint64_t stall_ns_ = 0, stalls_ = 0;
  uint64_t window_start_ns_ = 0, window_end_ns_ = 0;
  rusage ru_start_{}, ru_end_{};
  uint64_t blocks_written_ = 0, blocks_checked_ = 0, mismatches_ = 0;
  std::vector<Mismatch> first_mismatches_;

  // NVMe mode.
  uint8_t* doorbells_ = nullptr;    // the mapped doorbell page, or null: REGION_WRITE messages
  uint64_t vfu_msg_id_ = 0x8000;
  uint64_t cq_doorbells_ = 0;       // CQ head doorbell writes (the SQ tail ones count as kicks)
  std::string doorbell_error_;      // a failed REGION_WRITE; the loop stops on it
  uint64_t first_lba_ = 0;
  uint32_t lbas_per_io_ = 1;
  uint32_t first_error_status_ = 0;  // NVMe (SCT << 8) | SC of the first failed command
};

bool Job::Pin(std::string* err) {
  if (o_.cpu < 0) return true;
  if (o_.cpu >= CPU_SETSIZE) {
    *err = "cpu " + std::to_string(o_.cpu) + " is out of range";
    return false;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(o_.cpu, &set);
  int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  if (rc != 0) {
    *err = "cannot pin the generator thread to cpu " + std::to_string(o_.cpu) + ": " + std::strerror(rc);
    return false;
  }
  return true;
}

bool Job::Validate(std::string* err) {
  const JobOptions& o = o_;
  if (o.nvme) {
    if (o.interrupt) {
      *err = "nvme mode polls its completion queues (no --completion interrupt)";
      return false;
    }
    if (o.nvme_queues.empty() || o.nvme_queues.size() != o.queues) {
      *err = "nvme: the queue list does not match queues";
      return false;
    }
    for (const JobOptions::NvmeQueue& nq : o.nvme_queues) {
      if (nq.size < 2 || nq.size > 32768 || o.iodepth >= nq.size || nq.qid == 0 || nq.qid > 65535) {
        *err = "nvme: queue " + std::to_string(nq.qid) + " of " + std::to_string(nq.size) + " entries cannot hold iodepth " +
               std::to_string(o.iodepth) + " (needs iodepth < size)";
        return false;
      }
    }
    if (o.block_size < 512 || o.block_size % 512 != 0 || o.block_size > (2u << 20)) {
      *err = "nvme: block size must be a multiple of 512 in [512, 2 MiB]";
      return false;
    }
    if (o.iodepth < 1 || o.iodepth > 4096 || o.rwmixread > 100) {
      *err = "iodepth must be in [1, 4096] and rwmixread in [0, 100]";
      return false;
    }
    if (!(o.runtime_sec > 0) || !(o.ramp_sec >= 0) || o.runtime_sec > 1e6 || o.ramp_sec > 1e6) {
      *err = "runtime must be > 0 and ramp >= 0 seconds";
      return false;
    }
    queue_size_ = uint16_t(o.nvme_queues[0].size);
    return true;
  }
  if (o.block_size < 512 || o.block_size % 512 != 0 || o.block_size > (64u << 20)) {
    *err = "block size must be a multiple of 512 in [512, 64 MiB]";
    return false;
  }
  if (o.iodepth < 1 || o.iodepth > 4096) {
    *err = "iodepth must be in [1, 4096]";
    return false;
  }
  uint32_t qs = o.queue_size;
  if (qs == 0) {
    qs = 16;
    while (qs < 3 * o.iodepth) qs <<= 1;
  }
  if (qs > 32768 || (qs & (qs - 1)) != 0 || qs < 3 * o.iodepth) {
    *err = "queue size must be a power of two in [3 x iodepth, 32768]";
    return false;
  }
  queue_size_ = uint16_t(qs);
  uint32_t max_queues = dev_.max_queues;
  if (o.scsi) max_queues = max_queues > kScsiFirstRequestQueue ? max_queues - kScsiFirstRequestQueue : 0;
  if (o.queues < 1 || o.queues > max_queues) {
    *err = "queues must be in [1, " + std::to_string(max_queues) + "] (the back-end's GET_QUEUE_NUM" +
           (o.scsi ? " less the control and event queues)" : ")");
    return false;
  }
  if (o.scsi && o.packed) {
    *err = "packed rings are for virtio-blk jobs (the scsi mode builds split chains)";
    return false;
  }
  if (o.scsi && o.indirect) {
    *err = "indirect descriptors are for virtio-blk jobs (the scsi mode builds direct chains)";
    return false;
  }
  if (o.scsi && o.scsi_target > 255) {
    *err = "scsi target must be in [0, 255]";
    return false;
  }
  if (o.rwmixread > 100) {
    *err = "rwmixread must be in [0, 100]";
    return false;
  }
  if (!(o.runtime_sec > 0) || !(o.ramp_sec >= 0) || o.runtime_sec > 1e6 || o.ramp_sec > 1e6) {
    *err = "runtime must be > 0 and ramp >= 0 seconds";
    return false;
  }
  return true;
}

// The checks that need the device's capacity (from GET_CONFIG, or in scsi
// mode from READ CAPACITY 16 once the rings run); sizes the verify tables.
bool Job::ValidateRange(std::string* err) {
  const JobOptions& o = o_;
  uint64_t capacity = 0;
  if (__builtin_mul_overflow(dev_.capacity_sectors, uint64_t(512), &capacity)) {
    *err = "device capacity overflows";
    return false;
  }
  if (o.offset_bytes % 512 != 0 || o.offset_bytes >= capacity) {
    *err = "offset must be a multiple of 512 below the capacity (" + std::to_string(capacity) + " bytes)";
    return false;
  }
  uint64_t size = o.size_bytes == 0 ? capacity - o.offset_bytes : o.size_bytes;
  if (size > capacity - o.offset_bytes) {
    *err = "offset + size exceeds the capacity (" + std::to_string(capacity) + " bytes)";
    return false;
  }
  nblocks_ = size / o.block_size;
  if (nblocks_ == 0) {
    *err = "the range holds no whole block";
    return false;
  }
  first_sector_ = o.offset_bytes / 512;
  bool writes = o.rw != Pattern::kRandRead && o.rw != Pattern::kRead;
  if (o.verify == VerifyMode::kWriteRead || o.verify == VerifyMode::kWrite) writes = true;
  if (o.verify == VerifyMode::kRead) writes = false;
  if (writes && dev_.read_only) {
    *err = "the device is read-only (VIRTIO_BLK_F_RO) and this job writes";
    return false;
  }
  if (verifying()) {
    if (nblocks_ > UINT32_MAX) {
      *err = "verify supports at most 2^32 blocks";
      return false;
    }
    if (mixed_verify() && nblocks_ < 2 * uint64_t(o.queues) * o.iodepth) {
      *err = "randrw with verify needs at least 2 x queues x iodepth blocks";
      return false;
    }
  }
  if (o.nvme && (o.block_size % o.nvme_lba_size != 0 || o.offset_bytes % o.nvme_lba_size != 0 ||
                 o.block_size / o.nvme_lba_size > 65536)) {
    *err = "in nvme mode the block size and offset must be multiples of the namespace's LBA size (" +
           std::to_string(o.nvme_lba_size) + "), at most 65536 LBAs per I/O";
    return false;
  }
  if (o.scsi && (o.block_size % scsi_lbs_ != 0 || o.offset_bytes % scsi_lbs_ != 0)) {
    *err = "in scsi mode the block size and offset must be multiples of the LU's block size (" + std::to_string(scsi_lbs_) + ")";
    return false;
  }
  if (verifying()) {
    crc_.assign(nblocks_, 0);
    state_.assign(nblocks_, 0);
    scratch_.assign(o_.block_size, 0);
  }
  return true;
}

bool Job::SetupMemory(std::string* err) {
  uint64_t off = 0;
  queues_.resize(o_.queues);
  reaped_.reserve(o_.iodepth);
  for (uint32_t i = 0; i < o_.queues; i++) {
    Queue& q = queues_[i];
    q.index = o_.scsi ? i + kScsiFirstRequestQueue : i;
    q.size = queue_size_;
    off = AlignUp(off, kPage);
    q.desc_off = off;
    off += 16ull * q.size;
    q.avail_off = off;
    off += 6 + 2ull * q.size;
    off = AlignUp(off, kPage);
    q.used_off = off;
    off += 6 + 8ull * q.size;
    off = AlignUp(off, 64);
    q.hdr_off = off;
    off += slot_hdr_ * o_.iodepth;
    if (dev_.indirect) {
      off = AlignUp(off, 64);
      q.table_off = off;
      off += kTableStride * o_.iodepth;
    }
    off = AlignUp(off, kPage);
    q.data_off = off;
    off += uint64_t(o_.block_size) * o_.iodepth;
  }
  mem_size_ = AlignUp(off, o_.hugepages ? kHugePage : kPage);
  memfd_ = memfd_create("vhostd-perf", MFD_CLOEXEC | (o_.hugepages ? MFD_HUGETLB : 0u));
  if (memfd_ < 0) {
    *err = std::string("memfd_create: ") + std::strerror(errno);
    return false;
  }
  if (ftruncate(memfd_, off_t(mem_size_)) != 0) {
    *err = std::string("ftruncate memfd: ") + std::strerror(errno);
    return false;
  }
  void* p = mmap(nullptr, mem_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, memfd_, 0);
  if (p == MAP_FAILED) {
    *err = std::string("mmap memfd: ") + std::strerror(errno);
    return false;
  }
  mem_ = static_cast<uint8_t*>(p);
  for (Queue& q : queues_) {
    if (dev_.packed) {
      // Packed: descriptors are written per request (SubmitPacked); the ring starts zeroed (nothing available).
      q.ring = reinterpret_cast<PackedDesc*>(mem_ + q.desc_off);
      q.drv_event = reinterpret_cast<uint16_t*>(mem_ + q.avail_off);
      q.dev_event = reinterpret_cast<uint16_t*>(mem_ + q.used_off);
      // Polling: no interrupts (DISABLE); interrupt mode: one per used batch (ENABLE).
      q.drv_event[1] = o_.interrupt ? kPackedEventEnable : kPackedEventDisable;
      q.slots.assign(o_.iodepth, Slot());
      if (dev_.indirect) {
        // Indirect tables in the packed layout (§2.8.19: only WRITE counts there; id and NEXT are ignored).
        for (uint32_t s = 0; s < o_.iodepth; s++) {
          uint64_t hdr = q.hdr_off + slot_hdr_ * s;
          PackedDesc* t = reinterpret_cast<PackedDesc*>(mem_ + q.table_off + kTableStride * s);
          t[0] = PackedDesc{hdr, 16, 0, 0};
          t[1] = PackedDesc{q.data_off + uint64_t(o_.block_size) * s, o_.block_size, 0, kDescFWrite};
          t[2] = PackedDesc{hdr + 16, 1, 0, kDescFWrite};
        }
      }
      q.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      q.call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (q.kick_fd < 0 || q.call_fd < 0) {
        *err = std::string("eventfd: ") + std::strerror(errno);
        return false;
      }
      continue;
    }
    q.desc = reinterpret_cast<VringDesc*>(mem_ + q.desc_off);
    q.avail_flags = reinterpret_cast<uint16_t*>(mem_ + q.avail_off);
    q.avail_idx = q.avail_flags + 1;
    q.avail_ring = q.avail_flags + 2;
    q.used_event = q.avail_ring + q.size;
    q.used_flags = reinterpret_cast<uint16_t*>(mem_ + q.used_off);
    q.used_idx = q.used_flags + 1;
    q.used_ring = reinterpret_cast<UsedElem*>(mem_ + q.used_off + 4);
    q.avail_event = reinterpret_cast<uint16_t*>(q.used_ring + q.size);
    q.slots.assign(o_.iodepth, Slot());
    for (uint32_t s = 0; s < o_.iodepth; s++) {
      uint64_t hdr = q.hdr_off + slot_hdr_ * s;
      uint64_t data = q.data_off + uint64_t(o_.block_size) * s;
      if (o_.scsi) {
        q.desc[3 * s] = VringDesc{hdr, kScsiReqBytes, kDescFNext, uint16_t(3 * s + 1)};
        q.desc[3 * s + 1] = VringDesc{data, o_.block_size, kDescFNext, uint16_t(3 * s + 2)};
        q.desc[3 * s + 2] = VringDesc{hdr + kScsiRespOffset, kScsiRespBytes, kDescFWrite, 0};
        uint8_t* req = mem_ + hdr;
        std::memset(req, 0, kScsiReqBytes);
        req[0] = 1;                              // virtio-scsi LUN: lun[0] = 1,
        req[1] = uint8_t(o_.scsi_target);        // lun[1] = target,
        req[2] = 0x40;                           // lun[2..3] = LUN 0, flat addressing
        continue;
      }
      // With --indirect the chain is a table of its own and the ring's descriptor 3s points at it
      // (the head stays 3s, so a used id names its slot either way).
      VringDesc* chain = dev_.indirect ? reinterpret_cast<VringDesc*>(mem_ + q.table_off + kTableStride * s) : q.desc;
      uint16_t first = dev_.indirect ? 0 : uint16_t(3 * s);
      WriteBlkChain(q, chain, first, uint16_t(first + 1), uint16_t(first + 2), s, false);
      if (dev_.indirect) q.desc[3 * s] = IndirectDesc(q, s);
    }
    if (o_.desc_free_list) {
      // Every descriptor free, in index order; the ones written above are rewritten per request.
      q.free_next.resize(q.size);
      for (uint32_t i = 0; i < q.size; i++) q.free_next[i] = uint16_t(i + 1);
      q.free_head = 0;
      q.head_slot.assign(q.size, 0);
    }
    bool no_interrupt = !o_.interrupt && !dev_.event_idx;
    *q.avail_flags = no_interrupt ? kAvailFNoInterrupt : 0;
    // With EVENT_IDX and polling, keep the device's signalling point half the
    // index space away (refreshed on every reap), so it never signals.
    *q.used_event = o_.interrupt ? 0 : 0x7fff;
    q.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    q.call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q.kick_fd < 0 || q.call_fd < 0) {
      *err = std::string("eventfd: ") + std::strerror(errno);
      return false;
    }
  }
  return true;
}

bool Job::SetupQueues(std::string* err) {
  if (!client_.SetMemTable(memfd_, mem_size_, uint64_t(reinterpret_cast<uintptr_t>(mem_)), err)) return false;
  if (!client_.SetupInflight(dev_, uint16_t(queues_.size()), queue_size_, err)) return false;
  uint64_t base = uint64_t(reinterpret_cast<uintptr_t>(mem_));
  for (Queue& q : queues_) {
    if (!client_.SetupVring(q.index, q.size, base + q.desc_off, base + q.avail_off, base + q.used_off, q.kick_fd,
                            q.call_fd, dev_.packed, err)) {
      return false;
    }
  }
  rings_live_ = true;
  if ((dev_.features_acked & kFeatureProtocolFeatures) != 0) {
    for (Queue& q : queues_) {
      if (!client_.SetVringEnable(q.index, true, err)) return false;
    }
  }
  return true;
}

bool Job::NextIo(uint64_t* block, bool* write) {
  if (phase_ == Phase::kTimed) {
    switch (o_.rw) {
      case Pattern::kRandRead: *write = false; break;
      case Pattern::kRandWrite: *write = true; break;
      case Pattern::kRead: *write = false; break;
      case Pattern::kWrite: *write = true; break;
      case Pattern::kRandRw: *write = rng_.Below(100) >= o_.rwmixread; break;
    }
    if (!random_order()) {
      *block = seq_cursor_;
      if (++seq_cursor_ == nblocks_) seq_cursor_ = 0;
      return true;
    }
    uint64_t b = rng_.Below(nblocks_);
    if (mixed_verify()) {
      // Never two I/Os on one block at once: a read racing a write would
      // report a false mismatch. At most half the blocks are ever busy.
      for (int tries = 0; (state_[b] & 2) != 0; tries++) {
        b = tries < 16 ? rng_.Below(nblocks_) : (b + 1 == nblocks_ ? 0 : b + 1);
      }
      state_[b] |= 2;
    }
    *block = b;
    return true;
  }
  if (seq_cursor_ >= nblocks_) return false;
  *block = order_.empty() ? seq_cursor_ : order_[seq_cursor_];
  seq_cursor_++;
  *write = phase_ == Phase::kWritePass;
  return true;
}

void Job::Submit(Queue& q, uint32_t slot_index, uint64_t block, bool write, uint64_t now) {
  Slot& s = q.slots[slot_index];
  uint8_t* hdr = mem_ + q.hdr_off + slot_hdr_ * slot_index;
  uint64_t sector = first_sector_ + block * (o_.block_size / 512);
  if (o_.nvme) {
    NvmeSubmit(q, slot_index, block, write);
  } else if (o_.scsi) {
    // READ 16 / WRITE 16 (SBC-3): opcode, flags, 8-byte LBA, 4-byte length, big-endian.
    uint8_t* cdb = hdr + 19;
    uint64_t lba = sector * 512 / scsi_lbs_;
    uint32_t blocks = o_.block_size / scsi_lbs_;
    cdb[0] = write ? 0x8a : 0x88;
    cdb[1] = 0;
    for (int i = 0; i < 8; i++) cdb[2 + i] = uint8_t(lba >> (56 - 8 * i));
    for (int i = 0; i < 4; i++) cdb[10 + i] = uint8_t(blocks >> (24 - 8 * i));
    cdb[14] = 0;
    cdb[15] = 0;
    hdr[kScsiRespOffset + 10] = 0xff;  // status and response: the device must overwrite them
    hdr[kScsiRespOffset + 11] = 0xff;
    ScsiChain(q, slot_index, true, write);
  } else {
    uint32_t type = write ? kBlkTOut : kBlkTIn;
    uint32_t ioprio = 0;
    std::memcpy(hdr, &type, 4);
    std::memcpy(hdr + 4, &ioprio, 4);
    std::memcpy(hdr + 8, &sector, 8);
    hdr[16] = 0xff;  // the device must overwrite it
    if (dev_.indirect) {
      // The data descriptor's direction: its flags are at byte 12 of a split descriptor, 14 of a packed one.
      uint8_t* t1 = mem_ + q.table_off + kTableStride * slot_index + 16;
      uint16_t f = dev_.packed ? uint16_t(write ? 0 : kDescFWrite) : uint16_t(write ? kDescFNext : kDescFNext | kDescFWrite);
      std::memcpy(t1 + (dev_.packed ? 14 : 12), &f, 2);
    } else if (!dev_.packed && !o_.desc_free_list) {
      q.desc[3 * slot_index + 1].flags = write ? kDescFNext : uint16_t(kDescFNext | kDescFWrite);
    }
  }
  if (verifying()) {
    uint8_t* data = mem_ + q.data_off + uint64_t(o_.block_size) * slot_index;
    if (write) {
      uint64_t seed = o_.verify_seed;
      if (mixed_verify()) seed ^= (total_ios_ + 1) * 0xA24BAED4963EE407ull;  // a fresh pattern per write
      FillPattern(data, o_.block_size, seed, block);
      s.crc = Crc32c(data, o_.block_size);
    } else if (o_.verify == VerifyMode::kRead) {
      FillPattern(scratch_.data(), o_.block_size, o_.verify_seed, block);
      s.crc = Crc32c(scratch_.data(), o_.block_size);
    }
  }
  if (o_.nvme) {
    // The SQ entry was written above; the doorbell goes in Publish.
  } else if (dev_.packed) {
    SubmitPacked(q, slot_index, write);
  } else if (o_.desc_free_list) {
    q.avail_ring[q.avail_shadow & (q.size - 1)] = SplitChainFromFreeList(q, slot_index, write);
    q.avail_shadow++;
  } else {
    q.avail_ring[q.avail_shadow & (q.size - 1)] = uint16_t(3 * slot_index);
    q.avail_shadow++;
  }
  s.submit_ns = now;
  s.block = block;
  s.write = write;
  s.inflight = true;
  q.inflight++;
}

// A blk request of slot `slot_index` as descriptors d0 → d1 → d2 of `table`
// (the ring's or the slot's indirect table): header, data (device-writable
// for a read), status.
void Job::WriteBlkChain(const Queue& q, VringDesc* table, uint16_t d0, uint16_t d1, uint16_t d2, uint32_t slot_index,
                        bool write) {
  uint64_t hdr = q.hdr_off + slot_hdr_ * slot_index;
  table[d0] = VringDesc{hdr, 16, kDescFNext, d1};
  table[d1] = VringDesc{q.data_off + uint64_t(o_.block_size) * slot_index, o_.block_size,
                        uint16_t(write ? kDescFNext : kDescFNext | kDescFWrite), d2};
  table[d2] = VringDesc{hdr + 16, 1, kDescFWrite, 0};
}

// --indirect: the ring descriptor that points at slot `slot_index`'s table.
VringDesc Job::IndirectDesc(const Queue& q, uint32_t slot_index) const {
  return VringDesc{q.table_off + kTableStride * slot_index, kTableBytes, kDescFIndirect, 0};
}

// --desc-free-list: take the request's descriptors from the free list (1
// with --indirect, else 3), write them as Linux's virtqueue_add_split does
// (the ring's one pointing at the slot's table, or header → data → status),
// and return the head. The free list holds at least 3 * iodepth entries.
uint16_t Job::SplitChainFromFreeList(Queue& q, uint32_t slot_index, bool write) {
  uint16_t head = q.free_head;
  if (dev_.indirect) {
    q.desc[head] = IndirectDesc(q, slot_index);
    q.free_head = q.free_next[head];
  } else {
    uint16_t d1 = q.free_next[head];
    uint16_t d2 = q.free_next[d1];
    WriteBlkChain(q, q.desc, head, d1, d2, slot_index, write);
    q.free_head = q.free_next[d2];
  }
  q.head_slot[head] = slot_index + 1;
  return head;
}

// --desc-free-list: the chain headed by `head` goes back to the front of the
// free list whole (its links in free_next are still those it was taken with).
void Job::FreeSplitChain(Queue& q, uint16_t head) {
  q.head_slot[head] = 0;
  uint16_t last = dev_.indirect ? head : q.free_next[q.free_next[head]];
  q.free_next[last] = q.free_head;
  q.free_head = head;
}

// Packed: header → data → status at the next three slots, buffer id = the
// slot index; the second and third descriptors' flags first, the head's last
// (release), so the device never sees a partial chain (virtio 1.2 §2.8.21).
// With --indirect one descriptor at the next slot points at the slot's table.
void Job::SubmitPacked(Queue& q, uint32_t slot_index, bool write) {
  if (dev_.indirect) {
    PackedDesc& d = q.ring[q.next_avail];
    d.addr = q.table_off + kTableStride * slot_index;
    d.len = kTableBytes;
    d.id = uint16_t(slot_index);
    __atomic_store_n(&d.flags, uint16_t(kDescFIndirect | (q.avail_wrap ? kPackedFAvail : kPackedFUsed)), __ATOMIC_RELEASE);
    if (++q.next_avail == q.size) {
      q.next_avail = 0;
      q.avail_wrap = !q.avail_wrap;
    }
    q.added = uint16_t(q.added + 1);
    return;
  }
  uint64_t hdr = q.hdr_off + slot_hdr_ * slot_index;
  uint64_t data = q.data_off + uint64_t(o_.block_size) * slot_index;
  const uint64_t addr[3] = {hdr, data, hdr + 16};
  const uint32_t len[3] = {16, o_.block_size, 1};
  const uint16_t dir[3] = {kDescFNext, uint16_t(write ? kDescFNext : kDescFNext | kDescFWrite), kDescFWrite};
  uint16_t head = q.next_avail;
  uint16_t head_flags = 0;
  for (int k = 0; k < 3; k++) {
    PackedDesc& d = q.ring[q.next_avail];
    d.addr = addr[k];
    d.len = len[k];
    d.id = uint16_t(slot_index);
    uint16_t flags = uint16_t(dir[k] | (q.avail_wrap ? kPackedFAvail : kPackedFUsed));
    if (k == 0) {
      head_flags = flags;
    } else {
      __atomic_store_n(&d.flags, flags, __ATOMIC_RELAXED);
    }
    if (++q.next_avail == q.size) {
      q.next_avail = 0;
      q.avail_wrap = !q.avail_wrap;
    }
  }
  __atomic_store_n(&q.ring[head].flags, head_flags, __ATOMIC_RELEASE);
  q.added = uint16_t(q.added + 3);
}

// Packed: the chains are visible already; decide on a kick from the device's
// event suppression area (virtio 1.2 §2.8.10; DESC as Linux's
// virtqueue_kick_prepare_packed reads it).
void Job::PublishPacked(Queue& q) {
  if (q.added == 0) return;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint16_t flags = __atomic_load_n(&q.dev_event[1], __ATOMIC_RELAXED) & 3;
  bool kick;
  if (flags == kPackedEventDesc && dev_.event_idx) {
    uint16_t off_wrap = __atomic_load_n(&q.dev_event[0], __ATOMIC_RELAXED);
    uint16_t event = off_wrap & 0x7fff;
    if (((off_wrap >> 15) != 0) != q.avail_wrap) event = uint16_t(event - q.size);
    uint16_t new_idx = q.next_avail;
    kick = NeedEvent(event, new_idx, uint16_t(new_idx - q.added));
  } else {
    kick = flags != kPackedEventDisable;
  }
  q.added = 0;
  if (kick) {
    uint64_t one = 1;
    ssize_t n = write(q.kick_fd, &one, sizeof one);
    (void)n;
    kicks_++;
  }
}

void Job::Publish(Queue& q) {
  if (o_.nvme) {
    // One SQ tail doorbell per queue per iteration (NVMe Base 2.0 §3.1.4.21).
    if (q.sq_tail == q.sq_published) return;
    q.sq_published = q.sq_tail;
    RingDoorbell(2ull * q.qid, q.sq_tail);
    kicks_++;
    return;
  }
  if (dev_.packed) {
    PublishPacked(q);
    return;
  }
  if (q.avail_shadow == q.avail_published) return;
  __atomic_store_n(q.avail_idx, q.avail_shadow, __ATOMIC_RELEASE);
  // The index store must be visible before we read the device's
  // suppression state (virtio 1.2 §2.7.13.4 note on memory barriers).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool kick;
  if (dev_.event_idx) {
    kick = NeedEvent(__atomic_load_n(q.avail_event, __ATOMIC_RELAXED), q.avail_shadow, q.avail_published);
  } else {
    kick = (__atomic_load_n(q.used_flags, __ATOMIC_RELAXED) & kUsedFNoNotify) == 0;
  }
  q.avail_published = q.avail_shadow;
  if (kick) {
    uint64_t one = 1;
    ssize_t n = write(q.kick_fd, &one, sizeof one);
    (void)n;  // EAGAIN means the counter is saturated: the device is notified anyway
    kicks_++;
  }
}

// The status a virtio request ended with: blk's status byte; scsi: 0 for GOOD
// and VIRTIO_SCSI_S_OK, else 1 (a CHECK CONDITION counts as an error).
uint32_t Job::VirtioStatus(const Queue& q, uint32_t slot_index) const {
  const uint8_t* hdr = mem_ + q.hdr_off + slot_hdr_ * slot_index;
  return o_.scsi ? uint32_t(hdr[kScsiRespOffset + 10] != 0 || hdr[kScsiRespOffset + 11] != 0) : hdr[16];
}

void Job::Complete(Queue& q, Slot& s, uint32_t slot_index, uint32_t status) {
  total_ios_++;
  if (status != 0 && errors_++ == 0) first_error_status_ = status;
  if (measuring_) {
    ios_++;
    if (s.write) {
      writes_++;
    } else {
      reads_++;
    }
  }
  if (!verifying()) return;
  uint64_t b = s.block;
  if (s.write) {
    if (status == 0) {
      crc_[b] = s.crc;
      state_[b] |= 1;
      blocks_written_++;
    }
  } else if (status == 0) {
    bool check = false;
    uint32_t expected = 0;
    if (o_.verify == VerifyMode::kRead) {
      check = true;
      expected = s.crc;
    } else if ((state_[b] & 1) != 0) {
      check = true;
      expected = crc_[b];
    }
    if (check) {
      const uint8_t* data = mem_ + q.data_off + uint64_t(o_.block_size) * slot_index;
      uint32_t actual = Crc32c(data, o_.block_size);
      blocks_checked_++;
      if (actual != expected) {
        mismatches_++;
        if (first_mismatches_.size() < size_t(kMaxMismatchesReported)) {
          first_mismatches_.push_back(Mismatch{b, expected, actual});
        }
      }
    }
  }
  state_[b] &= uint8_t(~2u);
}

bool Job::UsedPending(const Queue& q) const {
  if (!dev_.packed) return __atomic_load_n(q.used_idx, __ATOMIC_ACQUIRE) != q.last_used;
  uint16_t f = __atomic_load_n(&q.ring[q.next_used].flags, __ATOMIC_ACQUIRE);
  return ((f & kPackedFAvail) != 0) == q.used_wrap && ((f & kPackedFUsed) != 0) == q.used_wrap;
}

// Packed: used descriptors in ring order (AVAIL = USED = our used wrap
// counter); each names a slot (buffer id) whose chain took ring_slots_ slots.
// The slots are submitted again after the pass, as the split ring's are
// published after theirs: a chain is the device's as soon as its head flags
// are stored, and one completed within this pass would be timed at 0 ns
// (`now` is the pass's).
int Job::ReapPacked(Queue& q, uint64_t now, std::string* err) {
  int n = 0;
  reaped_.clear();
  while (UsedPending(q)) {
    const PackedDesc& d = q.ring[q.next_used];
    uint32_t slot_index = d.id;
    if (slot_index >= o_.iodepth || !q.slots[slot_index].inflight) {
      *err = "queue " + std::to_string(q.index) + ": used descriptor at " + std::to_string(q.next_used) + " names buffer " +
             std::to_string(slot_index) + ", which is not in flight";
      return -1;
    }
    q.next_used = uint16_t(q.next_used + ring_slots_);
    if (q.next_used >= q.size) {
      q.next_used = uint16_t(q.next_used - q.size);
      q.used_wrap = !q.used_wrap;
    }
    Slot& s = q.slots[slot_index];
    s.inflight = false;
    q.inflight--;
    if (measuring_) hist_.Add(now - s.submit_ns);
    Complete(q, s, slot_index, VirtioStatus(q, slot_index));
    n++;
    reaped_.push_back(slot_index);
  }
  for (uint32_t slot_index : reaped_) {
    uint64_t block;
    bool write;
    if (submitting_ && NextIo(&block, &write)) Submit(q, slot_index, block, write, now);
  }
  return n;
}

int Job::Reap(Queue& q, uint64_t now, std::string* err) {
  if (o_.nvme) return NvmeReap(q, now, err);
  if (dev_.packed) return ReapPacked(q, now, err);
  uint16_t used = __atomic_load_n(q.used_idx, __ATOMIC_ACQUIRE);
  uint16_t n = uint16_t(used - q.last_used);
  if (n == 0) return 0;
  if (n > q.inflight) {
    *err = "queue " + std::to_string(q.index) + ": used index moved by " + std::to_string(n) + " with " +
           std::to_string(q.inflight) + " requests in flight";
    return -1;
  }
  for (uint16_t k = 0; k < n; k++) {
    UsedElem e = q.used_ring[uint16_t(q.last_used + k) & (q.size - 1)];
    uint32_t slot_index = o_.desc_free_list ? (e.id < q.size ? q.head_slot[e.id] - 1 : o_.iodepth) : e.id / 3;
    if ((!o_.desc_free_list && e.id % 3 != 0) || slot_index >= o_.iodepth || !q.slots[slot_index].inflight) {
      *err = "queue " + std::to_string(q.index) + ": used ring names descriptor " + std::to_string(e.id) +
             ", which is not the head of a request in flight";
      return -1;
    }
    if (o_.desc_free_list) FreeSplitChain(q, uint16_t(e.id));
    Slot& s = q.slots[slot_index];
    s.inflight = false;
    q.inflight--;
    if (measuring_) hist_.Add(now - s.submit_ns);
    Complete(q, s, slot_index, VirtioStatus(q, slot_index));
    uint64_t block;
    bool write;
    if (submitting_ && NextIo(&block, &write)) Submit(q, slot_index, block, write, now);
  }
  q.last_used = used;
  if (dev_.event_idx && !o_.interrupt) __atomic_store_n(q.used_event, uint16_t(used + 0x7fff), __ATOMIC_RELAXED);
  return n;
}

void Job::WaitForCall(uint64_t now, uint64_t wake_at) {
  // Ask for a signal on the next used entry, then look once more: a
  // completion between the last reap and this store would not signal.
  if (dev_.event_idx && !dev_.packed) {
    for (Queue& q : queues_) __atomic_store_n(q.used_event, q.last_used, __ATOMIC_RELAXED);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (Queue& q : queues_) {
    if (UsedPending(q)) return;
  }
  pollfd fds[64];
  nfds_t nfds = 0;
  for (Queue& q : queues_) {
    if (nfds < 64) fds[nfds++] = pollfd{q.call_fd, POLLIN, 0};
  }
  uint64_t wait_ns = wake_at > now ? wake_at - now : 0;
  int timeout_ms = int(wait_ns / 1000000u) + 1;
  if (timeout_ms > 100) timeout_ms = 100;
  int rc = poll(fds, nfds, timeout_ms);
  if (rc <= 0) return;
  for (nfds_t i = 0; i < nfds; i++) {
    if ((fds[i].revents & POLLIN) == 0) continue;
    uint64_t value;
    if (read(fds[i].fd, &value, sizeof value) == ssize_t(sizeof value)) call_wakeups_++;
  }
}

void Job::ResetStats(uint64_t now) {
  hist_.Reset();
  ios_ = reads_ = writes_ = kicks_ = call_wakeups_ = cq_doorbells_ = 0;
  busy_ns_ = idle_ns_ = stall_ns_ = stalls_ = 0;
  measuring_ = true;
  window_start_ns_ = now;
  getrusage(RUSAGE_THREAD, &ru_start_);
}

void Job::StopStats(uint64_t now) {
  measuring_ = false;
  window_end_ns_ = now;
  getrusage(RUSAGE_THREAD, &ru_end_);
}

void Job::StartPhase(Phase phase, uint64_t now) {
  phase_ = phase;
  seq_cursor_ = 0;
  submitting_ = true;
  for (Queue& q : queues_) {
    for (uint32_t s = 0; s < o_.iodepth; s++) {
      uint64_t block;
      bool write;
      if (!NextIo(&block, &write)) break;
      Submit(q, s, block, write, now);
    }
    Publish(q);
  }
}

bool Job::Loop(std::string* err) {
  bool timed = o_.verify == VerifyMode::kOff || mixed_verify();
  if (!timed && random_order()) {
    order_.resize(nblocks_);
    for (uint64_t i = 0; i < nblocks_; i++) order_[i] = uint32_t(i);
    for (uint64_t i = nblocks_ - 1; i > 0; i--) {
      uint64_t j = rng_.Below(i + 1);
      uint32_t t = order_[i];
      order_[i] = order_[j];
      order_[j] = t;
    }
  }
  uint64_t start = NowNs();
  uint64_t ramp_ns = uint64_t(o_.ramp_sec * 1e9);
  uint64_t measure_at = start + ramp_ns;
  uint64_t stop_at = measure_at + uint64_t(o_.runtime_sec * 1e9);
  uint64_t drain_deadline = 0;
  if (!timed || ramp_ns == 0) ResetStats(start);
  if (timed) {
    StartPhase(Phase::kTimed, start);
  } else {
    StartPhase(o_.verify == VerifyMode::kRead ? Phase::kReadPass : Phase::kWritePass, start);
  }
  uint64_t prev = start;
  bool prev_busy = true;
  for (;;) {
    uint64_t now = NowNs();
    if (measuring_) {
      if (now - prev > kStallNs && !o_.interrupt) {
        stall_ns_ += now - prev;
        stalls_++;
      } else if (prev_busy) {
        busy_ns_ += now - prev;
      } else {
        idle_ns_ += now - prev;
      }
    }
    prev = now;
    if (timed && submitting_) {
      if (!measuring_ && now >= measure_at) ResetStats(now);
      if (now >= stop_at) {
        submitting_ = false;
        StopStats(now);
        drain_deadline = now + uint64_t(o_.timeout_ms) * 1000000u;
      }
    }
    int reaped = 0;
    uint32_t inflight = 0;
    for (Queue& q : queues_) {
      int n = Reap(q, now, err);
      if (n < 0) return false;
      reaped += n;
      Publish(q);
      inflight += q.inflight;
    }
    prev_busy = reaped > 0;
    if (!doorbell_error_.empty()) {
      *err = doorbell_error_;
      return false;
    }
    if (inflight == 0) {
      if (timed) {
        if (!submitting_) return true;
        *err = "internal: no request in flight while submitting";
        return false;
      }
      if (phase_ == Phase::kWritePass && o_.verify == VerifyMode::kWriteRead) {
        StartPhase(Phase::kReadPass, now);
        continue;
      }
      StopStats(now);
      return true;
    }
    if (!submitting_ && now > drain_deadline) {
      *err = std::to_string(inflight) + " requests still in flight " + std::to_string(o_.timeout_ms) +
             " ms after the end of the run";
      return false;
    }
    if (reaped == 0 && o_.interrupt) {
      uint64_t wake_at = !submitting_ ? drain_deadline : (measuring_ || !timed ? stop_at : measure_at);
      if (!timed) wake_at = now + 100000000u;
      WaitForCall(now, wake_at);
    }
  }
}

bool Job::Teardown(std::string* err) {
  if (o_.nvme) return true;  // the TypeScript side deletes the queues and disables the controller
  if (!rings_live_) return true;
  rings_live_ = false;
  for (Queue& q : queues_) {
    uint32_t base = 0;
    if (!client_.GetVringBase(q.index, &base, err)) return false;
  }
  return true;
}

void Job::Release() {
  client_.Close();
  for (Queue& q : queues_) {
    if (q.kick_fd >= 0) close(q.kick_fd);
    if (q.call_fd >= 0) close(q.call_fd);
    q.kick_fd = q.call_fd = -1;
  }
  if (mem_ != nullptr) munmap(mem_, mem_size_);
  mem_ = nullptr;
  if (doorbells_ != nullptr) munmap(doorbells_, o_.nvme_doorbell_size);
  doorbells_ = nullptr;
  if (memfd_ >= 0) close(memfd_);
  memfd_ = -1;
}

// Points slot `slot_index`'s chain at its data (`data`) in the direction of
// `write`, or leaves the data out: request → [data →] response for data-out
// or no data, request → response [→ data] for data-in.
void Job::ScsiChain(Queue& q, uint32_t slot_index, bool data, bool write) {
  uint16_t d0 = uint16_t(3 * slot_index), d1 = uint16_t(d0 + 1), d2 = uint16_t(d0 + 2);
  if (!data) {
    q.desc[d0].next = d2;
    q.desc[d2].flags = kDescFWrite;
  } else if (write) {
    q.desc[d0].next = d1;
    q.desc[d1].flags = kDescFNext;
    q.desc[d1].next = d2;
    q.desc[d2].flags = kDescFWrite;
  } else {
    q.desc[d0].next = d2;
    q.desc[d2].flags = uint16_t(kDescFNext | kDescFWrite);
    q.desc[d2].next = d1;
    q.desc[d1].flags = kDescFWrite;
  }
}

// One command on slot 0 of `q`, waited for by polling the used ring: the CDB
// (16 bytes), `in_len` bytes of data-in into the slot's data buffer (0: none).
bool Job::ScsiSync(Queue& q, const uint8_t* cdb, uint32_t in_len, uint8_t* status, uint8_t* response, std::string* err) {
  uint8_t* hdr = mem_ + q.hdr_off;
  std::memcpy(hdr + 19, cdb, 16);
  std::memset(hdr + 19 + 16, 0, 16);
  hdr[kScsiRespOffset + 10] = 0xff;
  hdr[kScsiRespOffset + 11] = 0xff;
  q.desc[1].len = in_len;
  ScsiChain(q, 0, in_len > 0, false);
  q.avail_ring[q.avail_shadow & (q.size - 1)] = 0;
  q.avail_shadow++;
  __atomic_store_n(q.avail_idx, q.avail_shadow, __ATOMIC_RELEASE);
  q.avail_published = q.avail_shadow;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint64_t one = 1;
  ssize_t n = write(q.kick_fd, &one, sizeof one);
  (void)n;
  uint64_t deadline = NowNs() + uint64_t(o_.timeout_ms) * 1000000u;
  while (__atomic_load_n(q.used_idx, __ATOMIC_ACQUIRE) == q.last_used) {
    if (NowNs() > deadline) {
      *err = "scsi: no answer to command " + std::to_string(cdb[0]) + " within " + std::to_string(o_.timeout_ms) + " ms";
      return false;
    }
    sched_yield();
  }
  q.last_used++;
  q.desc[1].len = o_.block_size;
  *status = hdr[kScsiRespOffset + 10];
  *response = hdr[kScsiRespOffset + 11];
  return true;
}

// TEST UNIT READY until GOOD (the first command of the nexus gets the
// power-on unit attention), then READ CAPACITY 16: the capacity and the LU's
// block size.
bool Job::ScsiProbe(std::string* err) {
  Queue& q = queues_[0];
  uint8_t cdb[16] = {0};
  uint8_t status = 0, response = 0;
  for (int attempt = 0;; attempt++) {
    if (!ScsiSync(q, cdb, 0, &status, &response, err)) return false;
    if (response != 0) {
      *err = "scsi: target " + std::to_string(o_.scsi_target) + " answers virtio-scsi response " + std::to_string(response) +
             (response == 3 ? " (BAD_TARGET)" : "");
      return false;
    }
    if (status == 0) break;
    if (attempt == 4) {
      *err = "scsi: TEST UNIT READY keeps failing (status " + std::to_string(status) + ")";
      return false;
    }
  }
  cdb[0] = 0x9e;  // SERVICE ACTION IN (16) / READ CAPACITY (16)
  cdb[1] = 0x10;
  cdb[13] = 32;   // allocation length
  if (!ScsiSync(q, cdb, 32, &status, &response, err)) return false;
  if (status != 0 || response != 0) {
    *err = "scsi: READ CAPACITY 16 failed (status " + std::to_string(status) + ", response " + std::to_string(response) + ")";
    return false;
  }
  const uint8_t* d = mem_ + q.data_off;
  uint64_t last_lba = 0;
  for (int i = 0; i < 8; i++) last_lba = (last_lba << 8) | d[i];
  uint32_t lbs = (uint32_t(d[8]) << 24) | (uint32_t(d[9]) << 16) | (uint32_t(d[10]) << 8) | d[11];
  if (lbs < 512 || (lbs & (lbs - 1)) != 0 || last_lba >= (uint64_t(1) << 48)) {
    *err = "scsi: READ CAPACITY 16 gave block size " + std::to_string(lbs) + ", last LBA " + std::to_string(last_lba);
    return false;
  }
  scsi_lbs_ = lbs;
  dev_.blk_size = lbs;
  dev_.capacity_sectors = (last_lba + 1) * (lbs / 512);
  return true;
}

// Maps the memfd the TypeScript side DMA-mapped and the doorbell page, checks
// that every queue, data buffer and PRP list lies inside the memory, and
// fixes each slot's PRP entries (NVMe Base 2.0 §4.1.1: PRP1 may start inside
// a page, PRP2 is the second page or, past two pages, a list of the rest).
bool Job::NvmeSetup(std::string* err) {
  const JobOptions& o = o_;
  const uint64_t base = o.nvme_mem_base;
  if (o.nvme_mem_fd < 0 || o.nvme_mem_size == 0 || o.nvme_mem_size % kPage != 0) {
    *err = "nvme: no guest memory fd, or its size is not a whole number of pages";
    return false;
  }
  if (o.nvme_lba_size < 512 || (o.nvme_lba_size & (o.nvme_lba_size - 1)) != 0 || o.nvme_nsze == 0 || o.nvme_nsid == 0) {
    *err = "nvme: bad namespace (nsid " + std::to_string(o.nvme_nsid) + ", LBA size " + std::to_string(o.nvme_lba_size) +
           ", size " + std::to_string(o.nvme_nsze) + ")";
    return false;
  }
  if (o.nvme_doorbell_stride < 4 || (o.nvme_doorbell_stride & (o.nvme_doorbell_stride - 1)) != 0) {
    *err = "nvme: the doorbell stride must be a power of two >= 4";
    return false;
  }
  void* p = mmap(nullptr, o.nvme_mem_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, o.nvme_mem_fd, 0);
  if (p == MAP_FAILED) {
    *err = std::string("nvme: mmap guest memory: ") + std::strerror(errno);
    return false;
  }
  mem_ = static_cast<uint8_t*>(p);
  mem_size_ = o.nvme_mem_size;
  if (o.nvme_doorbell_fd >= 0) {
    if (o.nvme_doorbell_size == 0 || o.nvme_doorbell_size % kPage != 0) {
      *err = "nvme: the doorbell area's size is not a whole number of pages";
      return false;
    }
    p = mmap(nullptr, o.nvme_doorbell_size, PROT_READ | PROT_WRITE, MAP_SHARED, o.nvme_doorbell_fd, off_t(o.nvme_doorbell_offset));
    if (p == MAP_FAILED) {
      *err = std::string("nvme: mmap the doorbell page: ") + std::strerror(errno);
      return false;
    }
    doorbells_ = static_cast<uint8_t*>(p);
  } else if (o.nvme_socket_fd < 0) {
    *err = "nvme: neither a doorbell mapping nor the vfio-user socket for REGION_WRITE";
    return false;
  }
  uint64_t capacity = 0;
  if (__builtin_mul_overflow(o.nvme_nsze, uint64_t(o.nvme_lba_size), &capacity) || capacity / 512 > (uint64_t(1) << 54)) {
    *err = "nvme: namespace capacity overflows";
    return false;
  }
  dev_.capacity_sectors = capacity / 512;
  dev_.blk_size = o.nvme_lba_size;
  dev_.max_queues = uint32_t(o.nvme_queues.size());
  dev_.read_only = false;
  first_lba_ = o.offset_bytes / o.nvme_lba_size;
  lbas_per_io_ = o.block_size / o.nvme_lba_size;
  auto inside = [&](uint64_t gpa, uint64_t len) {
    return gpa >= base && len <= mem_size_ && gpa - base <= mem_size_ - len;
  };
  queues_.resize(o.nvme_queues.size());
  for (size_t i = 0; i < queues_.size(); i++) {
    const JobOptions::NvmeQueue& nq = o.nvme_queues[i];
    Queue& q = queues_[i];
    q.index = uint32_t(i);
    q.qid = uint16_t(nq.qid);
    q.size = uint16_t(nq.size);
    if (!inside(nq.sq_gpa, 64ull * nq.size) || !inside(nq.cq_gpa, 16ull * nq.size) ||
        !inside(nq.data_gpa, uint64_t(o.block_size) * o.iodepth)) {
      *err = "nvme: queue " + std::to_string(nq.qid) + "'s SQ, CQ or data lies outside the guest memory";
      return false;
    }
    if (doorbells_ != nullptr && (2ull * nq.qid + 2) * o.nvme_doorbell_stride > o.nvme_doorbell_size) {
      *err = "nvme: queue " + std::to_string(nq.qid) + "'s doorbells lie outside the doorbell page";
      return false;
    }
    q.sq = mem_ + (nq.sq_gpa - base);
    q.cq = mem_ + (nq.cq_gpa - base);
    q.data_off = nq.data_gpa - base;
    q.slots.assign(o.iodepth, Slot());
    for (uint32_t k = 0; k < o.iodepth; k++) {
      Slot& sl = q.slots[k];
      uint64_t addr = nq.data_gpa + uint64_t(o.block_size) * k;
      uint64_t next_page = (addr & ~(kPage - 1)) + kPage;
      uint64_t end = addr + o.block_size;
      uint64_t more = end > next_page ? (end - next_page + kPage - 1) / kPage : 0;
      sl.prp1 = addr;
      if (more == 0) {
        sl.prp2 = 0;
      } else if (more == 1) {
        sl.prp2 = next_page;
      } else {
        uint64_t list = nq.prp_gpa + kPage * k;
        if (nq.prp_gpa == 0 || nq.prp_gpa % kPage != 0 || !inside(list, kPage) || more > kPage / 8) {
          *err = "nvme: queue " + std::to_string(nq.qid) + " has no room for slot " + std::to_string(k) + "'s PRP list";
          return false;
        }
        uint8_t* entries = mem_ + (list - base);
        for (uint64_t e = 0; e < more; e++) {
          uint64_t page = next_page + kPage * e;
          std::memcpy(entries + 8 * e, &page, 8);
        }
        sl.prp2 = list;
      }
    }
  }
  return true;
}

// One Read or Write (NVM Command Set 2.0 §3.2.4, §3.2.6) at the SQ tail;
// the command identifier is the slot.
void Job::NvmeSubmit(Queue& q, uint32_t slot_index, uint64_t block, bool write) {
  const Slot& s = q.slots[slot_index];
  uint64_t slba = first_lba_ + block * lbas_per_io_;
  uint32_t w[16] = {};
  w[0] = uint32_t(write ? kNvmeWrite : kNvmeRead) | (slot_index << 16);
  w[1] = o_.nvme_nsid;
  w[6] = uint32_t(s.prp1);
  w[7] = uint32_t(s.prp1 >> 32);
  w[8] = uint32_t(s.prp2);
  w[9] = uint32_t(s.prp2 >> 32);
  w[10] = uint32_t(slba);
  w[11] = uint32_t(slba >> 32);
  w[12] = lbas_per_io_ - 1;  // NLB, 0's based
  std::memcpy(q.sq + uint64_t(q.sq_tail) * 64, w, sizeof w);
  q.sq_tail = q.sq_tail + 1 == q.size ? 0 : uint16_t(q.sq_tail + 1);
}

// Consumes the CQ entries whose phase tag is current (NVMe Base 2.0 §4.2.4),
// resubmitting each freed slot while submitting, then writes the CQ head
// doorbell once.
int Job::NvmeReap(Queue& q, uint64_t now, std::string* err) {
  int n = 0;
  for (;;) {
    const uint8_t* e = q.cq + uint64_t(q.cq_head) * 16;
    uint32_t dw3 = __atomic_load_n(reinterpret_cast<const uint32_t*>(e + 12), __ATOMIC_ACQUIRE);
    if (((dw3 >> 16) & 1) != q.cq_phase) break;
    uint32_t dw2;
    std::memcpy(&dw2, e + 8, 4);
    uint32_t cid = dw3 & 0xffff;
    uint32_t sqid = dw2 >> 16;
    if (sqid != q.qid || cid >= o_.iodepth || !q.slots[cid].inflight) {
      *err = "nvme: CQ " + std::to_string(q.qid) + " entry " + std::to_string(q.cq_head) + " completes cid " + std::to_string(cid) +
             " of SQ " + std::to_string(sqid) + ", which is not a command in flight on SQ " + std::to_string(q.qid);
      return -1;
    }
    if (++q.cq_head == q.size) {
      q.cq_head = 0;
      q.cq_phase ^= 1;
    }
    Slot& s = q.slots[cid];
    s.inflight = false;
    q.inflight--;
    if (measuring_) hist_.Add(now - s.submit_ns);
    Complete(q, s, cid, (dw3 >> 17) & 0x7ff);  // (SCT << 8) | SC
    n++;
    uint64_t block;
    bool write;
    if (submitting_ && NextIo(&block, &write)) Submit(q, cid, block, write, now);
  }
  if (n > 0) {
    RingDoorbell(2ull * q.qid + 1, q.cq_head);
    cq_doorbells_++;
  }
  return n;
}

void Job::RingDoorbell(uint64_t index, uint32_t value) {
  uint64_t off = index * o_.nvme_doorbell_stride;
  if (doorbells_ != nullptr) {
    // The SQ entries written before must be visible first: a release store.
    __atomic_store_n(reinterpret_cast<uint32_t*>(doorbells_ + off), value, __ATOMIC_RELEASE);
    return;
  }
  if (doorbell_error_.empty()) DoorbellMessage(o_.nvme_doorbell_bar_offset + off, value);
}

// A REGION_WRITE of 4 bytes to BAR0 (vfio-user.rst) and its reply, on the
// socket the TypeScript side connected (idle while the job runs).
bool Job::DoorbellMessage(uint64_t bar_offset, uint32_t value) {
  int fd = o_.nvme_socket_fd;
  uint8_t msg[36];
  uint16_t id = uint16_t(vfu_msg_id_++);
  uint16_t cmd = kVfioUserRegionWrite;
  uint32_t size = sizeof msg, zero = 0, count = 4;
  std::memcpy(msg, &id, 2);
  std::memcpy(msg + 2, &cmd, 2);
  std::memcpy(msg + 4, &size, 4);
  std::memcpy(msg + 8, &zero, 4);
  std::memcpy(msg + 12, &zero, 4);
  std::memcpy(msg + 16, &bar_offset, 8);
  std::memcpy(msg + 24, &zero, 4);  // region 0: BAR0
  std::memcpy(msg + 28, &count, 4);
  std::memcpy(msg + 32, &value, 4);
  uint64_t deadline = NowNs() + uint64_t(o_.timeout_ms) * 1000000u;
  auto wait = [&](short events) {
    uint64_t now = NowNs();
    if (now >= deadline) return false;
    pollfd pfd{fd, events, 0};
    return poll(&pfd, 1, int((deadline - now) / 1000000u) + 1) > 0;
  };
  for (size_t done = 0; done < sizeof msg;) {
    ssize_t k = send(fd, msg + done, sizeof msg - done, MSG_NOSIGNAL);
    if (k > 0) {
      done += size_t(k);
    } else if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait(POLLOUT)) {
        doorbell_error_ = "nvme: REGION_WRITE: the socket stays full";
        return false;
      }
    } else {
      doorbell_error_ = std::string("nvme: REGION_WRITE send: ") + std::strerror(errno);
      return false;
    }
  }
  uint8_t reply[64];
  size_t want = 16;
  for (size_t got = 0; got < want;) {
    ssize_t k = recv(fd, reply + got, want - got, 0);
    if (k > 0) {
      got += size_t(k);
      if (got == 16) {
        uint32_t rsize;
        std::memcpy(&rsize, reply + 4, 4);
        if (rsize < 16 || rsize > sizeof reply) {
          doorbell_error_ = "nvme: REGION_WRITE reply of " + std::to_string(rsize) + " bytes";
          return false;
        }
        want = rsize;
      }
    } else if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait(POLLIN)) {
        doorbell_error_ = "nvme: no REGION_WRITE reply within " + std::to_string(o_.timeout_ms) + " ms";
        return false;
      }
    } else {
      doorbell_error_ = k == 0 ? std::string("nvme: the server closed the vfio-user socket")
                               : std::string("nvme: REGION_WRITE recv: ") + std::strerror(errno);
      return false;
    }
  }
  uint16_t rid, rcmd;
  uint32_t rflags, rerr;
  std::memcpy(&rid, reply, 2);
  std::memcpy(&rcmd, reply + 2, 2);
  std::memcpy(&rflags, reply + 8, 4);
  std::memcpy(&rerr, reply + 12, 4);
  if (rid != id || rcmd != cmd || (rflags & 0xf) != kVfioUserFlagReply || (rflags & kVfioUserFlagError) != 0) {
    doorbell_error_ = "nvme: REGION_WRITE to BAR0+" + std::to_string(bar_offset) + " answered id " + std::to_string(rid) +
                      " command " + std::to_string(rcmd) + " flags " + std::to_string(rflags) + " errno " + std::to_string(rerr);
    return false;
  }
  return true;
}

bool Job::Run(std::string* err) {
  if (!Pin(err)) return false;
  if (o_.nvme) {
    bool ok = Validate(err) && NvmeSetup(err) && ValidateRange(err) && Loop(err);
    Release();
    return ok;
  }
  if (!client_.Connect(o_.socket_path, o_.timeout_ms, err)) return false;
  client_.want_inflight = o_.inflight;
  client_.want_packed = o_.packed;
  client_.want_indirect = o_.indirect;
  if (!client_.Negotiate(o_.event_idx, &dev_, err)) return false;
  if (dev_.indirect) ring_slots_ = 1;
  if (o_.scsi) {
    slot_hdr_ = kScsiSlotHeaderBytes;
    // virtio-scsi has no capacity in its config space: READ CAPACITY 16 once the rings run.
    dev_.read_only = false;
    dev_.capacity_sectors = 0;
  } else if (!dev_.have_config) {
    *err = "the back-end offers no CONFIG protocol feature, so the capacity is unknown";
    return false;
  }
  bool ok = Validate(err) && SetupMemory(err) && SetupQueues(err) && (!o_.scsi || ScsiProbe(err)) && ValidateRange(err) &&
            Loop(err);
  std::string teardown_err;
  if (!Teardown(&teardown_err) && ok) {
    *err = teardown_err;
    ok = false;
  }
  Release();
  return ok;
}

std::string Job::Report() const {
  double wall = double(window_end_ns_ - window_start_ns_) / 1e9;
  double user = RusageSec(ru_end_, true) - RusageSec(ru_start_, true);
  double sys = RusageSec(ru_end_, false) - RusageSec(ru_start_, false);
  double bytes = double(ios_) * double(o_.block_size);
  Json j;
  j.Open('{');
  j.Key("socket");
  j.Str(o_.socket_path.c_str());
  j.Key("device");
  j.Open('{');
  j.Key("capacityBytes");
  j.U64(dev_.capacity_sectors * 512);
  j.Key("blockSize");
  j.U64(dev_.blk_size);
  j.Key("maxQueues");
  j.U64(dev_.max_queues);
  j.Key("readOnly");
  j.Bool(dev_.read_only);
  j.Key("featuresOffered");
  j.Hex(dev_.features_offered);
  j.Key("featuresAcked");
  j.Hex(dev_.features_acked);
  j.Key("protocolFeaturesOffered");
  j.Hex(dev_.protocol_offered);
  j.Key("protocolFeaturesAcked");
  j.Hex(dev_.protocol_acked);
  j.Key("eventIdx");
  j.Bool(dev_.event_idx);
  j.Key("inflight");
  j.Bool((dev_.protocol_acked & kProtocolInflightShmfd) != 0);
  j.Key("packed");
  j.Bool(dev_.packed);
  j.Key("indirect");
  j.Bool(dev_.indirect);
  j.Close('}');
  j.Key("job");
  j.Open('{');
  j.Key("rw");
  j.Str(PatternName(o_.rw));
  j.Key("rwmixread");
  j.U64(o_.rwmixread);
  j.Key("blockSizeBytes");
  j.U64(o_.block_size);
  j.Key("iodepth");
  j.U64(o_.iodepth);
  j.Key("queues");
  j.U64(o_.queues);
  j.Key("queueSize");
  j.U64(queue_size_);
  j.Key("runtimeSec");
  j.Num(o_.runtime_sec);
  j.Key("rampSec");
  j.Num(o_.ramp_sec);
  j.Key("offsetBytes");
  j.U64(o_.offset_bytes);
  j.Key("sizeBytes");
  j.U64(nblocks_ * o_.block_size);
  j.Key("completion");
  j.Str(o_.interrupt ? "interrupt" : "poll");
  j.Key("cpu");
  j.Num(o_.cpu);
  j.Key("seed");
  j.U64(o_.seed);
  j.Close('}');
  j.Key("ios");
  j.U64(ios_);
  j.Key("reads");
  j.U64(reads_);
  j.Key("writes");
  j.U64(writes_);
  j.Key("errors");
  j.U64(errors_);
  j.Key("elapsedSec");
  j.Num(wall);
  j.Key("iops");
  j.Num(wall > 0 ? double(ios_) / wall : 0);
  j.Key("bytes");
  j.Num(bytes);
  j.Key("bandwidthBytesPerSec");
  j.Num(wall > 0 ? bytes / wall : 0);
  j.Key("mbPerSec");
  j.Num(wall > 0 ? bytes / wall / 1e6 : 0);
  j.Key("mibPerSec");
  j.Num(wall > 0 ? bytes / wall / 1048576.0 : 0);
  j.Key("latencyNs");
  j.Open('{');
  j.Key("min");
  j.U64(hist_.min());
  j.Key("mean");
  j.Num(hist_.mean());
  j.Key("p50");
  j.Num(hist_.Quantile(0.5));
  j.Key("p90");
  j.Num(hist_.Quantile(0.9));
  j.Key("p99");
  j.Num(hist_.Quantile(0.99));
  j.Key("p999");
  j.Num(hist_.Quantile(0.999));
  j.Key("max");
  j.U64(hist_.max());
  j.Close('}');
  j.Key("cpu");
  j.Open('{');
  j.Key("userSec");
  j.Num(user);
  j.Key("sysSec");
  j.Num(sys);
  j.Key("wallSec");
  j.Num(wall);
  j.Key("utilization");
  j.Num(wall > 0 ? (user + sys) / wall : 0);
  j.Key("busyFraction");
  j.Num(busy_ns_ + idle_ns_ > 0 ? double(busy_ns_) / double(busy_ns_ + idle_ns_) : 0);
  j.Key("busyNsPerIo");
  j.Num(ios_ > 0 ? double(busy_ns_) / double(ios_) : 0);
  j.Key("stallSec");
  j.Num(double(stall_ns_) / 1e9);
  j.Key("stalls");
  j.U64(stalls_);
  j.Key("involuntaryContextSwitches");
  j.Num(double(ru_end_.ru_nivcsw - ru_start_.ru_nivcsw));
  j.Close('}');
  j.Key("kicks");
  j.U64(kicks_);
  j.Key("kicksPerIo");
  j.Num(ios_ > 0 ? double(kicks_) / double(ios_) : 0);
  j.Key("callWakeups");
  j.U64(call_wakeups_);
  j.Key("nvme");
  if (!o_.nvme) {
    j.Null();
  } else {
    j.Open('{');
    j.Key("nsid");
    j.U64(o_.nvme_nsid);
    j.Key("lbaSize");
    j.U64(o_.nvme_lba_size);
    j.Key("doorbells");
    j.Str(o_.nvme_doorbell_fd >= 0 ? "mmap" : "region-write");
    j.Key("sqDoorbells");
    j.U64(kicks_);
    j.Key("cqDoorbells");
    j.U64(cq_doorbells_);
    j.Key("firstErrorStatus");
    j.U64(first_error_status_);
    j.Close('}');
  }
  j.Key("verify");
  if (!verifying()) {
    j.Null();
  } else {
    j.Open('{');
    j.Key("mode");
    j.Str(VerifyName(o_.verify));
    j.Key("seed");
    j.U64(o_.verify_seed);
    j.Key("blocksWritten");
    j.U64(blocks_written_);
    j.Key("blocksChecked");
    j.U64(blocks_checked_);
    j.Key("mismatches");
    j.U64(mismatches_);
    j.Key("firstMismatches");
    j.Open('[');
    for (const Mismatch& m : first_mismatches_) {
      j.Open('{');
      j.Key("block");
      j.U64(m.block);
      j.Key("offsetBytes");
      j.U64(o_.offset_bytes + m.block * o_.block_size);
      j.Key("expectedCrc");
      j.U64(m.expected);
      j.Key("actualCrc");
      j.U64(m.actual);
      j.Close('}');
    }
    j.Close(']');
    j.Close('}');
  }
  j.Close('}');
  return j.out;
}

}  // namespace

void RunJob(const JobOptions& options, JobResult* result) {
  Job* job = new Job(options);  // LatencyHistogram is ~30 KiB: keep it off the stack
  std::string err;
  if (job->Run(&err)) {
    result->ok = true;
    result->json = job->Report();
  } else {
    result->ok = false;
    result->error = err;
  }
  delete job;
}

}  // namespace vhostd_perf
