// A load-generator job: options, the run (connect, negotiate, set up rings in
// a memfd, drive I/O, tear down) and its result as a JSON report. RunJob runs
// entirely on the calling thread, which the addon makes a dedicated
// std::thread (the generator thread); nothing here touches Node-API.
#ifndef VHOSTD_PERF_JOB_H_
#define VHOSTD_PERF_JOB_H_

#include <cstdint>
#include <string>
#include <vector>

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
  bool inflight = false;     // negotiate INFLIGHT_SHMFD when offered (the back-end tracks every request)
  bool packed = false;       // packed virtqueues (VIRTIO_F_RING_PACKED, required from the back-end; blk only)
  // Each request one ring descriptor pointing at a table of its three
  // (VIRTIO_F_RING_INDIRECT_DESC, required from the back-end; blk only), as a
  // Linux guest's virtio_ring does for every request of more than one buffer.
  bool indirect = false;
  // Split ring, blk: descriptors taken per request from a free list (most
  // recently freed first) and written per request, as Linux's virtio_ring
  // does (detach_buf_split / virtqueue_add_split). Default: each slot keeps
  // its own descriptors, written once at setup.
  bool desc_free_list = false;
  // Front-end memory from a MFD_HUGETLB memfd (2 MiB pages), as SPDK's vhost needs: it registers
  // the regions it maps with spdk_mem_register, which takes only 2 MiB-aligned hugepage mappings.
  bool hugepages = false;
  int cpu = 0;               // pin the generator thread; -1: no pinning
  int timeout_ms = 10000;    // socket replies and the final drain
  // virtio-scsi mode: the socket is a vhost-user-scsi controller; I/O is
  // READ 16 / WRITE 16 to LUN 0 of `scsi_target` on request queues 2.. (the
  // control and event queues are not used); the capacity comes from READ
  // CAPACITY 16 (virtio-scsi has none in its config space).
  bool scsi = false;
  uint32_t scsi_target = 0;
  // NVMe mode: the TypeScript side (bench/perf/nvme.ts) has attached to a
  // vfio-user controller, DMA-mapped `nvme_mem_fd` at `nvme_mem_base`,
  // enabled the controller and created the I/O queue pairs below; the job
  // maps the same memfd, writes commands into the SQs, polls the CQs' phase
  // tags and rings doorbells, either through the mapped doorbell page
  // (`nvme_doorbell_fd` at `nvme_doorbell_offset`, BAR0's sparse-mmap area)
  // or, with `nvme_doorbell_fd` = -1, as REGION_WRITE messages on
  // `nvme_socket_fd`. None of these fds is owned by the job.
  bool nvme = false;
  struct NvmeQueue {
    uint32_t qid = 0;
    uint32_t size = 0;     // entries of the SQ and of the CQ
    uint64_t sq_gpa = 0;   // size x 64 bytes
    uint64_t cq_gpa = 0;   // size x 16 bytes
    uint64_t data_gpa = 0; // iodepth x block size
    uint64_t prp_gpa = 0;  // iodepth x 4 KiB of PRP lists (0 when no I/O needs a list)
  };
  std::vector<NvmeQueue> nvme_queues;
  int nvme_mem_fd = -1;
  uint64_t nvme_mem_base = 0;
  uint64_t nvme_mem_size = 0;
  int nvme_doorbell_fd = -1;
  uint64_t nvme_doorbell_offset = 0;  // of the doorbell page in the fd
  uint64_t nvme_doorbell_size = 0;    // bytes mapped
  uint64_t nvme_doorbell_bar_offset = 0x1000;  // where that page starts in BAR0
  uint32_t nvme_doorbell_stride = 4;  // 4 << CAP.DSTRD
  int nvme_socket_fd = -1;
  uint32_t nvme_nsid = 1;
  uint32_t nvme_lba_size = 512;
  uint64_t nvme_nsze = 0;             // namespace size in logical blocks
};

struct JobResult {
  bool ok = false;
  std::string error;  // when !ok
  std::string json;   // the report when ok
};

void RunJob(const JobOptions& options, JobResult* result);

}  // namespace vhostd_perf

#endif  // VHOSTD_PERF_JOB_H_
