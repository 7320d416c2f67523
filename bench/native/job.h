// A load-generator job: options, the run (connect, negotiate, set up rings in
// a memfd, drive I/O, tear down) and its result as a JSON report. RunJob runs
// entirely on the calling thread, which the addon makes a dedicated
// std::thread (the generator thread); nothing here touches Node-API.
#ifndef VHOSTD_PERF_JOB_H_
#define VHOSTD_PERF_JOB_H_

#include <cstdint>
#include <string>

namespace vhostd_perf {

enum class Pattern { kRandRead, kRandWrite, kRead, kWrite, kRandRw };

// kOff: a timed job. kWriteRead: write every block of the range once (in
// sequential or random order), then read every block back and check its
// CRC-32C against the table filled by the writes (fio verify=crc32c). kWrite:
// the write pass only. kRead: the read pass only, checked against the pattern
// `verify_seed` would have written (so a later run can check an earlier one).
// With rw=randrw any mode other than kOff means a timed mixed job whose reads
// are checked against the CRC table of the blocks it wrote.
enum class VerifyMode { kOff, kWriteRead, kWrite, kRead };

struct JobOptions {
  std::string socket_path;
  Pattern rw = Pattern::kRandRead;
  uint32_t rwmixread = 50;  // percent of reads for randrw
  uint32_t block_size = 4096;
  uint32_t iodepth = 32;     // per queue
  uint32_t queues = 1;
  uint32_t queue_size = 0;   // 0: smallest power of two >= 3 * iodepth (min 16)
  double runtime_sec = 10;
  double ramp_sec = 0;
  uint64_t offset_bytes = 0;
  uint64_t size_bytes = 0;   // 0: from offset to the end of the device
  VerifyMode verify = VerifyMode::kOff;
  uint64_t verify_seed = 1;
  uint64_t seed = 1;         // offsets and the read/write mix
  bool interrupt = false;    // wait on the call eventfd instead of polling
  bool event_idx = false;    // negotiate VIRTIO_F_EVENT_IDX when offered
  bool inflight = false;
  // Front-end memory from a MFD_HUGETLB memfd (2 MiB pages), as SPDK's vhost needs: it registers
  // the regions it maps with spdk_mem_register, which takes only 2 MiB-aligned hugepage mappings.
  bool hugepages = false;     // negotiate INFLIGHT_SHMFD when offered (the back-end tracks every request)
  int cpu = 0;               // pin the generator thread; -1: no pinning
  int timeout_ms = 10000;    // socket replies and the final drain
  // virtio-scsi mode: the socket is a vhost-user-scsi controller; I/O is
  // READ 16 / WRITE 16 to LUN 0 of `scsi_target` on request queues 2.. (the
  // control and event queues are not used); the capacity comes from READ
  // CAPACITY 16 (virtio-scsi has none in its config space).
  bool scsi = false;
  uint32_t scsi_target = 0;
};

struct JobResult {
  bool ok = false;
  std::string error;  // when !ok
  std::string json;   // the report when ok
};

void RunJob(const JobOptions& options, JobResult* result);

}  // namespace vhostd_perf

#endif  // VHOSTD_PERF_JOB_H_
