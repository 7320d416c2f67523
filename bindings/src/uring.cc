// IoUring: one io_uring instance over raw syscalls (io_uring_setup,
// io_uring_enter, io_uring_register, and mmap of the SQ/CQ rings; liburing is
// not used). Requests come from JS in a Float64Array batch (layout in
// file.h): READV/WRITEV with iovecs pointing straight into registered buffers
// (guest memory, no copy), FSYNC with IORING_FSYNC_DATASYNC, FALLOCATE.
// BLKDISCARD/BLKZEROOUT and the punch+allocate fallback run synchronously and
// complete through the same reap(). One submit() = at most one io_uring_enter.
// Completions are copied from the CQ ring into a Float64Array without
// allocating.
//
// Files are registered (a sparse fixed-file table, IOSQE_FIXED_FILE) when the
// kernel allows it. The iovec arrays live in a pool with one area per SQ
// slot, so an SQE the kernel has not consumed yet (io_uring_enter said
// EAGAIN) still points at valid iovecs.
//
// Memory-backed files (tmpfs, ramfs) whose file system cannot do
// non-blocking reads (no FMODE_NOWAIT: preadv2(RWF_NOWAIT) says EOPNOTSUPP)
// are served inline: io_uring would hand every such request to an io-wq
// worker thread, which then competes for the busy-polling engine's core and
// completes through task work (measured: ~0.5x qemu-storage-daemon). Inline,
// readv/writev are preadv/pwritev straight into guest memory in submit()
// (a page-cache copy, like the malloc bdev's memcpy) and complete through
// the same reap(); FSYNC/FALLOCATE on them are the synchronous calls. Only
// such files: a file system that can do NOWAIT completes in the kernel
// within the io_uring_enter, one that can block on storage goes to the ring.
// new IoUring(entries, maxIov, false) turns this off.
//
// Thread: owned by the JS thread that constructed it (an engine worker);
// setup asks for SINGLE_ISSUER|DEFER_TASKRUN (else COOP_TASKRUN, else plain),
// so completions are run when that thread enters the kernel, which reap()
// does when the ring's TASKRUN flag says so. With nothing to submit and no
// task work pending, reap() reads the mapped CQ ring without a syscall.
#include <errno.h>
#include <linux/io_uring.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <vector>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "file.h"

namespace vhostd {
namespace {

int SysSetup(unsigned entries, io_uring_params* p) { return int(syscall(__NR_io_uring_setup, entries, p)); }

int SysEnter(int fd, unsigned toSubmit, unsigned minComplete, unsigned flags) {
  return int(syscall(__NR_io_uring_enter, fd, toSubmit, minComplete, flags, nullptr, 0));
}

int SysRegister(int fd, unsigned op, const void* arg, unsigned nr) {
  return int(syscall(__NR_io_uring_register, fd, op, arg, nr));
}

// A file on a memory file system that cannot read without blocking (no
// FMODE_NOWAIT): io_uring would punt every request on it to io-wq.
bool MemoryFileWithoutNowait(int fd) {
  struct statfs sf;
  if (fstatfs(fd, &sf) != 0) return false;
  if (sf.f_type != TMPFS_MAGIC && sf.f_type != RAMFS_MAGIC) return false;
  char byte;
  struct iovec v = {&byte, 1};
  return preadv2(fd, &v, 1, 0, RWF_NOWAIT) < 0 && errno == EOPNOTSUPP;
}

template <typename T>
T* At(void* base, uint32_t off) {
  return reinterpret_cast<T*>(static_cast<uint8_t*>(base) + off);
}

class IoUring : public FileRing<IoUring> {
 public:
  friend class FileRing<IoUring>;  // AddCommon lists our private methods
  static constexpr const char* kName = "io_uring";
  static Napi::Function Define(Napi::Env env);
  explicit IoUring(const Napi::CallbackInfo& info);
  ~IoUring() override { Release(); }
  void Release();

 private:
  Napi::Value SetFile(const Napi::CallbackInfo& info);
  Napi::Value Submit(const Napi::CallbackInfo& info);
  Napi::Value Reap(const Napi::CallbackInfo& info);
  Napi::Value FixedFiles(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), fixedFiles_); }
  Napi::Value SetupFlags(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), setupFlags_); }
  Napi::Value FileInline(const Napi::CallbackInfo& info);
  Napi::Value CompletionFd(const Napi::CallbackInfo& info);
  Napi::Value SetCompletionNotify(const Napi::CallbackInfo& info);

  // A request on an inline file, done now: bytes, 0, or -errno.
  double RunInline(const FileReq& r, const double* iovs, size_t iovCount);

  // io_uring_enter for what is queued (and, with getEvents, pending task
  // work). 0, or -errno for an error that retrying will not cure.
  int Enter(bool getEvents);

  int fd_ = -1;
  unsigned setupFlags_ = 0;
  bool fixedFiles_ = false;
  bool inlineMemoryFiles_ = true;
  bool inline_[kMaxFileSlots] = {};
  void* sqRing_ = nullptr;
  size_t sqRingSize_ = 0;
  void* cqRing_ = nullptr;  // == sqRing_ with IORING_FEAT_SINGLE_MMAP
  size_t cqRingSize_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  size_t sqesSize_ = 0;
  unsigned sqEntries_ = 0;
  unsigned cqEntries_ = 0;
  unsigned* sqHead_ = nullptr;
  unsigned* sqTail_ = nullptr;
  unsigned sqMask_ = 0;
  unsigned* sqFlags_ = nullptr;
  unsigned* cqFlags_ = nullptr;  // null when the kernel has no CQ flags word (< 5.8)
  int eventFd_ = -1;  // registered completion eventfd (IORING_REGISTER_EVENTFD), made on first ask
  unsigned* cqHead_ = nullptr;
  unsigned* cqTail_ = nullptr;
  unsigned cqMask_ = 0;
  io_uring_cqe* cqes_ = nullptr;
  unsigned sqTailLocal_ = 0;
  unsigned toSubmit_ = 0;  // SQEs published and not yet consumed by the kernel
  std::vector<struct iovec> iovPool_;  // sqEntries * maxIovPerReq
  std::vector<struct iovec> inlineIov_;  // maxIovPerReq, for inline requests
};

Napi::Function IoUring::Define(Napi::Env env) {
  std::vector<PropertyDescriptor> props = {
      InstanceMethod<&IoUring::FileInline>("fileInline"),
      InstanceAccessor<&IoUring::FixedFiles>("fixedFiles"),
      InstanceAccessor<&IoUring::SetupFlags>("setupFlags"),
  };
  AddCommon(&props);
  return DefineClass(env, "IoUring", props);
}

// new IoUring(entries, maxIovPerReq, inlineMemoryFiles = true)
IoUring::IoUring(const Napi::CallbackInfo& info) : FileRing<IoUring>(info) {
  Napi::Env env = info.Env();
  int64_t entries, maxIov;
  if (!ArgShape(info, &entries, &maxIov)) return;
  if (info.Length() > 2 && !info[2].IsUndefined() && !ArgBool(info, 2, "inlineMemoryFiles", &inlineMemoryFiles_)) {
    return;
  }
  io_uring_params p;
  // Task work only when this thread asks for completions (DEFER_TASKRUN,
  // which needs SINGLE_ISSUER: only the owning thread submits), or at least
  // cooperatively (no IPI into a busy-polling thread); the TASKRUN flag tells
  // reap() when to enter the kernel to run it.
  unsigned tries[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
      IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
      0,
  };
  int fd = -1;
  int err = 0;
  for (unsigned flags : tries) {
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    fd = SysSetup(unsigned(entries), &p);
    if (fd >= 0) {
      setupFlags_ = flags;
      break;
    }
    err = errno;
    if (err != EINVAL) break;  // EPERM/ENOSYS (disabled, seccomp), ENOMEM: no point in retrying
  }
  if (fd < 0) {
    ThrowErrno(env, err, "io_uring_setup");
    return;
  }
  fd_ = fd;
  sqEntries_ = p.sq_entries;
  entries_ = sqEntries_;
  cqEntries_ = p.cq_entries;
  sqRingSize_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  cqRingSize_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
  bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single && cqRingSize_ > sqRingSize_) sqRingSize_ = cqRingSize_;
  const char* failed = nullptr;
  sqRing_ = mmap(nullptr, sqRingSize_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  if (sqRing_ == MAP_FAILED) {
    sqRing_ = nullptr;
    failed = "mmap(sq ring)";
  } else if (single) {
    cqRing_ = sqRing_;
  } else {
    cqRing_ = mmap(nullptr, cqRingSize_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    if (cqRing_ == MAP_FAILED) {
      cqRing_ = nullptr;
      failed = "mmap(cq ring)";
    }
  }
  if (failed == nullptr) {
    sqesSize_ = p.sq_entries * sizeof(io_uring_sqe);
    void* s = mmap(nullptr, sqesSize_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (s == MAP_FAILED) {
      failed = "mmap(sqes)";
    } else {
      sqes_ = static_cast<io_uring_sqe*>(s);
    }
  }
  if (failed != nullptr) {
    int e = errno;
    Release();
    ThrowErrno(env, e, failed);
    return;
  }
  sqHead_ = At<unsigned>(sqRing_, p.sq_off.head);
  sqTail_ = At<unsigned>(sqRing_, p.sq_off.tail);
  sqMask_ = *At<unsigned>(sqRing_, p.sq_off.ring_mask);
  sqFlags_ = At<unsigned>(sqRing_, p.sq_off.flags);
  unsigned* array = At<unsigned>(sqRing_, p.sq_off.array);
  for (unsigned i = 0; i < sqEntries_; i++) array[i] = i;  // SQE i sits in slot i, always
  sqTailLocal_ = *sqTail_;
  cqHead_ = At<unsigned>(cqRing_, p.cq_off.head);
  cqTail_ = At<unsigned>(cqRing_, p.cq_off.tail);
  if (p.cq_off.flags != 0) cqFlags_ = At<unsigned>(cqRing_, p.cq_off.flags);
  cqMask_ = *At<unsigned>(cqRing_, p.cq_off.ring_mask);
  cqes_ = At<io_uring_cqe>(cqRing_, p.cq_off.cqes);

  // A sparse fixed-file table; without it (old kernel, limits) plain fds are used.
  int empty[kMaxFileSlots];
  for (uint32_t i = 0; i < kMaxFileSlots; i++) empty[i] = -1;
  fixedFiles_ = SysRegister(fd, IORING_REGISTER_FILES, empty, kMaxFileSlots) == 0;

  state_ = new FileRingState(uint32_t(maxIov), cqEntries_);
  iovPool_.resize(size_t(sqEntries_) * size_t(maxIov));
  inlineIov_.resize(size_t(maxIov));
}

void IoUring::Release() {
  if (sqes_ != nullptr) munmap(sqes_, sqesSize_);
  if (cqRing_ != nullptr && cqRing_ != sqRing_) munmap(cqRing_, cqRingSize_);
  if (sqRing_ != nullptr) munmap(sqRing_, sqRingSize_);
  sqes_ = nullptr;
  cqRing_ = nullptr;
  sqRing_ = nullptr;
  // Closing the ring fd drops the registered files; the kernel finishes or
  // cancels what is still in flight (callers drain first).
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  // The ring is gone, so nothing signals the completion eventfd any more.
  if (eventFd_ >= 0) close(eventFd_);
  eventFd_ = -1;
  cqFlags_ = nullptr;
  delete state_;
  state_ = nullptr;
  std::vector<struct iovec>().swap(iovPool_);
  std::vector<struct iovec>().swap(inlineIov_);
}

int IoUring::Enter(bool getEvents) {
  if (toSubmit_ == 0 && !getEvents) return 0;
  // GETEVENTS with min_complete 0 only runs pending task work; it never waits.
  int r = SysEnter(fd_, toSubmit_, 0, getEvents ? IORING_ENTER_GETEVENTS : 0);
  if (r >= 0) {
    toSubmit_ -= unsigned(r) < toSubmit_ ? unsigned(r) : toSubmit_;
    return 0;
  }
  int err = errno;
  // Out of kernel resources or interrupted: the SQEs stay queued, the next call retries.
  if (err == EAGAIN || err == EBUSY || err == EINTR) return 0;
  return -err;
}

// setFile(slot, fd): fd -1 empties the slot.
Napi::Value IoUring::SetFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t slot;
  int fd;
  if (!ArgInteger(info, 0, "slot", 0, kMaxFileSlots - 1, &slot) || !ArgFd(info, 1, &fd)) return Napi::Value();
  if (Closed(env)) return Napi::Value();
  if (fd < -1) fd = -1;
  if (fixedFiles_) {
    io_uring_files_update up;
    memset(&up, 0, sizeof(up));
    up.offset = uint32_t(slot);
    up.fds = reinterpret_cast<uint64_t>(&fd);
    if (SysRegister(fd_, IORING_REGISTER_FILES_UPDATE, &up, 1) < 0) {
      ThrowErrno(env, errno, "io_uring_register(FILES_UPDATE)");
      return Napi::Value();
    }
  }
  state_->setFd(uint32_t(slot), fd);
  inline_[slot] = fd >= 0 && inlineMemoryFiles_ && MemoryFileWithoutNowait(fd);
  return env.Undefined();
}

// fileInline(slot) → true when requests on that slot's file are served inline.
Napi::Value IoUring::FileInline(const Napi::CallbackInfo& info) {
  int64_t slot;
  if (!ArgInteger(info, 0, "slot", 0, kMaxFileSlots - 1, &slot)) return Napi::Value();
  return Napi::Boolean::New(info.Env(), inline_[slot]);
}

double IoUring::RunInline(const FileReq& r, const double* iovs, size_t iovCount) {
  switch (r.op) {
    case kOpReadv:
    case kOpWritev: {
      int n = state_->BuildIovecs(r, iovs, iovCount, inlineIov_.data());
      if (n < 0) return n;
      // Raw syscalls: the libc wrappers are cancellation points and toggle
      // the thread's cancel state around every call (~2% of the engine).
      // The offset goes whole in pos_l, pos_h = 0 (64-bit kernels).
      static_assert(sizeof(long) == 8, "preadv/pwritev pos_l holds the whole offset only on 64-bit");
      const long nr = r.op == kOpReadv ? SYS_preadv : SYS_pwritev;
      long got;
      do {
        got = syscall(nr, long(r.fd), inlineIov_.data(), long(n), static_cast<unsigned long>(r.offset), 0UL);
      } while (got < 0 && errno == EINTR);
      // A short count goes back as is: the caller resubmits the rest.
      return got < 0 ? -double(errno) : double(got);
    }
    case kOpDatasync:
      return RunSyncOp(kOpDatasync, r.fd, 0, 0, 0);
    case kOpFallocate:
      return RunSyncOp(kOpFallocate, r.fd, r.offset, r.a, r.b);
    default:
      return -EINVAL;
  }
}

// submit(reqs, count, iovs) → how many requests were taken (the rest: call again later).
Napi::Value IoUring::Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double* reqs;
  const double* iovs;
  size_t count, iovCount;
  if (!SubmitBegin(info, &reqs, &count, &iovs, &iovCount)) return Napi::Value();
  const uint32_t maxIov = state_->maxIovPerReq();
  size_t i = 0;
  for (; i < count; i++) {
    FileReq r;
    int err = state_->Decode(reqs, i, &r);
    if (err != 0) {
      state_->PushDone(r.tag, err);
      continue;
    }
    if (r.op == kOpBlkDiscard || r.op == kOpBlkZeroout || r.op == kOpPunchAlloc) {
      state_->PushDone(r.tag, RunSyncOp(r.op, r.fd, r.offset, r.a, r.b));
      continue;
    }
    if (inline_[r.slot]) {
      state_->PushDone(r.tag, RunInline(r, iovs, iovCount));
      continue;
    }
    unsigned head = __atomic_load_n(sqHead_, __ATOMIC_ACQUIRE);
    if (sqTailLocal_ - head >= sqEntries_) break;  // SQ full
    unsigned idx = sqTailLocal_ & sqMask_;
    io_uring_sqe* sqe = &sqes_[idx];
    memset(sqe, 0, sizeof(*sqe));
    switch (r.op) {
      case kOpReadv:
      case kOpWritev: {
        struct iovec* area = &iovPool_[size_t(idx) * maxIov];
        int n = state_->BuildIovecs(r, iovs, iovCount, area);
        if (n < 0) {
          state_->PushDone(r.tag, n);
          continue;
        }
        sqe->opcode = r.op == kOpReadv ? IORING_OP_READV : IORING_OP_WRITEV;
        sqe->addr = reinterpret_cast<uint64_t>(area);
        sqe->len = unsigned(n);
        sqe->off = r.offset;
        break;
      }
      case kOpDatasync:
        sqe->opcode = IORING_OP_FSYNC;
        sqe->fsync_flags = IORING_FSYNC_DATASYNC;
        break;
      case kOpFallocate:
        sqe->opcode = IORING_OP_FALLOCATE;
        sqe->off = r.offset;
        sqe->addr = r.a;  // length
        sqe->len = unsigned(r.b);  // mode
        break;
      default:
        state_->PushDone(r.tag, -EINVAL);
        continue;
    }
    if (fixedFiles_) {
      sqe->fd = int(r.slot);
      sqe->flags = IOSQE_FIXED_FILE;
    } else {
      sqe->fd = r.fd;
    }
    sqe->user_data = static_cast<uint64_t>(r.tag);
    sqTailLocal_++;
    toSubmit_++;
  }
  __atomic_store_n(sqTail_, sqTailLocal_, __ATOMIC_RELEASE);
  // One enter submits and, when the kernel has completions waiting as task
  // work (TASKRUN flag), runs it too, so the reap() that follows finds them
  // in the CQ ring without a second enter. A hard error here would also
  // fail the next reap(), which reports it.
  Enter((__atomic_load_n(sqFlags_, __ATOMIC_RELAXED) & IORING_SQ_TASKRUN) != 0);
  return Napi::Number::New(env, double(i));
}

// reap(out, max) → completions written to out as (tag, res) pairs.
Napi::Value IoUring::Reap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double* out;
  size_t max;
  size_t n;
  if (!ReapBegin(info, &out, &max, &n)) return Napi::Value();
  unsigned flags = __atomic_load_n(sqFlags_, __ATOMIC_RELAXED);
  unsigned head = *cqHead_;
  bool empty = head == __atomic_load_n(cqTail_, __ATOMIC_ACQUIRE);
  if (toSubmit_ > 0 || (flags & IORING_SQ_CQ_OVERFLOW) != 0 || (empty && (flags & IORING_SQ_TASKRUN) != 0)) {
    int err = Enter(true);
    if (err != 0) {
      ThrowErrno(env, -err, "io_uring_enter");
      return Napi::Value();
    }
  }
  unsigned tail = __atomic_load_n(cqTail_, __ATOMIC_ACQUIRE);
  while (n < max && head != tail) {
    const io_uring_cqe* cqe = &cqes_[head & cqMask_];
    out[kCompletionWords * n] = static_cast<double>(cqe->user_data);
    out[kCompletionWords * n + 1] = static_cast<double>(cqe->res);
    head++;
    n++;
  }
  __atomic_store_n(cqHead_, head, __ATOMIC_RELEASE);
  return Napi::Number::New(env, double(n));
}

// completionFd() → an eventfd the kernel signals when a completion is posted
// (or, with DEFER_TASKRUN, when completion task work is queued for this
// thread; reap() runs it). Made and registered (IORING_REGISTER_EVENTFD) on
// the first call, owned by the ring and closed with it. Starts with
// notifications off (IORING_CQ_EVENTFD_DISABLED) where the kernel has the
// CQ flags word: a busy-polling owner pays no eventfd signal per completion
// and turns them on only to sleep (setCompletionNotify).
Napi::Value IoUring::CompletionFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (Closed(env)) return Napi::Value();
  if (eventFd_ < 0) {
    int efd = NewCompletionEventfd(env);
    if (efd < 0) return Napi::Value();
    if (SysRegister(fd_, IORING_REGISTER_EVENTFD, &efd, 1) != 0) {
      int e = errno;
      close(efd);
      ThrowErrno(env, e, "io_uring_register(EVENTFD)");
      return Napi::Value();
    }
    eventFd_ = efd;
    if (cqFlags_ != nullptr) __atomic_or_fetch(cqFlags_, IORING_CQ_EVENTFD_DISABLED, __ATOMIC_RELEASE);
  }
  return Napi::Number::New(env, eventFd_);
}

// setCompletionNotify(on): the completion eventfd is signalled (true) or not
// (false). Turning it on before sleeping must be followed by a reap() (the
// re-check): a completion posted while it was off signalled nothing. Without
// the CQ flags word (old kernels) it is always on.
Napi::Value IoUring::SetCompletionNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool on;
  if (!ArgBool(info, 0, "on", &on)) return Napi::Value();
  if (Closed(env)) return Napi::Value();
  if (cqFlags_ != nullptr) {
    if (on) {
      __atomic_and_fetch(cqFlags_, ~unsigned(IORING_CQ_EVENTFD_DISABLED), __ATOMIC_SEQ_CST);
    } else {
      __atomic_or_fetch(cqFlags_, IORING_CQ_EVENTFD_DISABLED, __ATOMIC_RELEASE);
    }
  }
  return env.Undefined();
}

}  // namespace

void InitUring(Napi::Env env, Napi::Object exports) { exports.Set("IoUring", IoUring::Define(env)); }

}  // namespace vhostd
