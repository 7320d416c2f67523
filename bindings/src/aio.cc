// LinuxAio: one Linux native AIO context (io_setup / io_submit /
// io_getevents with a zero timeout / io_destroy, raw syscalls; libaio is not
// used), for hosts where io_uring is disabled. Same JS interface and request
// layout as IoUring (file.h): READV/WRITEV as IOCB_CMD_PREADV/PWRITEV with
// iovecs straight into registered buffers, DATASYNC as IOCB_CMD_FDSYNC;
// FALLOCATE, BLKDISCARD, BLKZEROOUT and punch+allocate have no AIO command and
// run synchronously, completing through reap().
//
// A batch is handed to the kernel in order; when io_submit runs out of room
// (EAGAIN) submit() stops there and returns how many requests it took, so no
// request is ever executed twice. The kernel copies iocbs and iovecs inside
// io_submit, so the scratch arrays are reused by the next batch.
//
// Thread: owned by the JS thread that constructed it (an engine worker).
#include <errno.h>
#include <linux/aio_abi.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <vector>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "file.h"

namespace vhostd {
namespace {

class LinuxAio : public FileRing<LinuxAio> {
 public:
  friend class FileRing<LinuxAio>;  // AddCommon lists our private methods
  static constexpr const char* kName = "io_setup";
  static Napi::Function Define(Napi::Env env);
  explicit LinuxAio(const Napi::CallbackInfo& info);
  ~LinuxAio() override { Release(); }
  void Release();

 private:
  enum Kind : uint8_t { kIocb, kError, kSync };
  struct Entry {
    Kind kind;
    FileReq req;
    int error;
  };

  Napi::Value SetFile(const Napi::CallbackInfo& info);
  Napi::Value Submit(const Napi::CallbackInfo& info);
  Napi::Value Reap(const Napi::CallbackInfo& info);
  Napi::Value CompletionFd(const Napi::CallbackInfo& info);
  Napi::Value SetCompletionNotify(const Napi::CallbackInfo& info);

  // Hands batch entries [0, n) to the kernel in order; returns how many were taken.
  size_t Flush(size_t n);

  aio_context_t ctx_ = 0;
  int eventFd_ = -1;  // IOCB_FLAG_RESFD target for every iocb once made (completionFd)
  std::vector<Entry> batch_;
  std::vector<struct iocb> iocbs_;
  std::vector<struct iocb*> ptrs_;
  std::vector<struct iovec> iovPool_;
  std::vector<struct io_event> events_;
};

Napi::Function LinuxAio::Define(Napi::Env env) {
  std::vector<PropertyDescriptor> props;
  AddCommon(&props);
  return DefineClass(env, "LinuxAio", props);
}

// new LinuxAio(entries, maxIovPerReq)
LinuxAio::LinuxAio(const Napi::CallbackInfo& info) : FileRing<LinuxAio>(info) {
  Napi::Env env = info.Env();
  int64_t entries, maxIov;
  if (!ArgShape(info, &entries, &maxIov)) return;
  aio_context_t ctx = 0;
  if (syscall(__NR_io_setup, unsigned(entries), &ctx) != 0) {
    ThrowErrno(env, errno, "io_setup");
    return;
  }
  ctx_ = ctx;
  entries_ = unsigned(entries);
  state_ = new FileRingState(uint32_t(maxIov), entries_ * 2);
  batch_.resize(entries_);
  iocbs_.resize(entries_);
  ptrs_.resize(entries_);
  for (unsigned i = 0; i < entries_; i++) ptrs_[i] = &iocbs_[i];
  iovPool_.resize(size_t(entries_) * size_t(maxIov));
  events_.resize(entries_);
}

void LinuxAio::Release() {
  // io_destroy waits for what is still in flight (callers drain first).
  if (ctx_ != 0) syscall(__NR_io_destroy, ctx_);
  ctx_ = 0;
  if (eventFd_ >= 0) close(eventFd_);
  eventFd_ = -1;
  delete state_;
  state_ = nullptr;
}

Napi::Value LinuxAio::SetFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t slot;
  int fd;
  if (!ArgInteger(info, 0, "slot", 0, kMaxFileSlots - 1, &slot) || !ArgFd(info, 1, &fd)) return Napi::Value();
  if (Closed(env)) return Napi::Value();
  state_->setFd(uint32_t(slot), fd < -1 ? -1 : fd);
  return env.Undefined();
}

size_t LinuxAio::Flush(size_t n) {
  size_t k = 0;
  while (k < n) {
    Entry& e = batch_[k];
    if (e.kind == kError) {
      state_->PushDone(e.req.tag, e.error);
      k++;
      continue;
    }
    if (e.kind == kSync) {
      state_->PushDone(e.req.tag, RunSyncOp(e.req.op, e.req.fd, e.req.offset, e.req.a, e.req.b));
      k++;
      continue;
    }
    size_t j = k;
    while (j < n && batch_[j].kind == kIocb) j++;
    long r = syscall(__NR_io_submit, ctx_, long(j - k), &ptrs_[k]);
    if (r > 0) {
      k += size_t(r);
      continue;
    }
    if (r == 0) break;
    int err = errno;
    if (err == EAGAIN || err == EINTR) break;  // no room now: the rest goes in a later call
    // The first iocb was refused (EINVAL: op not supported on this file, EBADF...): it alone fails.
    state_->PushDone(e.req.tag, -err);
    k++;
  }
  return k;
}

Napi::Value LinuxAio::Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double* reqs;
  const double* iovs;
  size_t count, iovCount;
  if (!SubmitBegin(info, &reqs, &count, &iovs, &iovCount)) return Napi::Value();
  const uint32_t maxIov = state_->maxIovPerReq();
  size_t taken = 0;
  while (taken < count) {
    size_t n = 0;
    for (; n < entries_ && taken + n < count; n++) {
      Entry& e = batch_[n];
      e.kind = kIocb;
      e.error = 0;
      int err = state_->Decode(reqs, taken + n, &e.req);
      if (err != 0) {
        e.kind = kError;
        e.error = err;
        continue;
      }
      const FileReq& r = e.req;
      struct iocb* cb = &iocbs_[n];
      memset(cb, 0, sizeof(*cb));
      cb->aio_data = static_cast<uint64_t>(r.tag);
      cb->aio_fildes = uint32_t(r.fd);
      if (eventFd_ >= 0) {
        cb->aio_flags = IOCB_FLAG_RESFD;
        cb->aio_resfd = uint32_t(eventFd_);
      }
      switch (r.op) {
        case kOpReadv:
        case kOpWritev: {
          struct iovec* area = &iovPool_[n * maxIov];
          int k = state_->BuildIovecs(r, iovs, iovCount, area);
          if (k < 0) {
            e.kind = kError;
            e.error = k;
            break;
          }
          cb->aio_lio_opcode = r.op == kOpReadv ? IOCB_CMD_PREADV : IOCB_CMD_PWRITEV;
          cb->aio_buf = reinterpret_cast<uint64_t>(area);
          cb->aio_nbytes = uint64_t(k);
          cb->aio_offset = int64_t(r.offset);
          break;
        }
        case kOpDatasync:
          cb->aio_lio_opcode = IOCB_CMD_FDSYNC;
          break;
        default:
          e.kind = kSync;
          break;
      }
    }
    size_t done = Flush(n);
    taken += done;
    if (done < n) break;
  }
  return Napi::Number::New(env, double(taken));
}

Napi::Value LinuxAio::Reap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double* out;
  size_t max;
  size_t n;
  if (!ReapBegin(info, &out, &max, &n)) return Napi::Value();
  while (n < max) {
    size_t want = max - n;
    if (want > entries_) want = entries_;
    struct timespec zero = {0, 0};
    long r = syscall(__NR_io_getevents, ctx_, 0L, long(want), events_.data(), &zero);
    if (r < 0) {
      if (errno == EINTR) break;
      ThrowErrno(env, errno, "io_getevents");
      return Napi::Value();
    }
    for (long k = 0; k < r; k++) {
      out[kCompletionWords * n] = static_cast<double>(events_[k].data);
      out[kCompletionWords * n + 1] = static_cast<double>(events_[k].res);
      n++;
    }
    if (size_t(r) < want) break;
  }
  return Napi::Number::New(env, double(n));
}

// completionFd() → an eventfd every iocb submitted from now on signals when
// it completes (IOCB_FLAG_RESFD). Made on the first call, owned by the
// context and closed with it. AIO has no switch: once made it is always
// signalled (one eventfd_signal per completion); the synchronous ops complete
// inside submit() and are reaped by the caller's next reap().
Napi::Value LinuxAio::CompletionFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (Closed(env)) return Napi::Value();
  if (eventFd_ < 0 && (eventFd_ = NewCompletionEventfd(env)) < 0) return Napi::Value();
  return Napi::Number::New(env, eventFd_);
}

// setCompletionNotify(on): accepted for the FileRing interface; AIO always notifies once completionFd() was made.
Napi::Value LinuxAio::SetCompletionNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool on;
  if (!ArgBool(info, 0, "on", &on)) return Napi::Value();
  if (Closed(env)) return Napi::Value();
  return env.Undefined();
}

}  // namespace

void InitAio(Napi::Env env, Napi::Object exports) { exports.Set("LinuxAio", LinuxAio::Define(env)); }

}  // namespace vhostd
