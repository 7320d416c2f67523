// Shared pieces of the file I/O rings (uring.cc: io_uring, aio.cc: Linux
// AIO): the request layout both take from JS, the table of guest-memory
// buffers (base address + length, taken once per mapping), the table of
// files, the synchronous operations (fallocate, BLKDISCARD, BLKZEROOUT) and
// the queue of completions produced without the kernel ring.
//
// Request layout (Float64Array, kReqWords numbers per request):
//   [0] op (FileOp)  [1] file slot  [2] file offset in bytes
//   [3] a: READV/WRITEV first iov index; FALLOCATE/BLK*: length in bytes
//   [4] b: READV/WRITEV iov count;       FALLOCATE: mode
//   [5] tag (returned unchanged with the result)
// iovs (Float64Array, kIovWords per entry): buffer slot, offset, length.
// Results (Float64Array pairs): tag, res (bytes or -errno).
//
// A request the addon refuses (bad slot, range outside its buffer, too many
// iovs) completes with -EINVAL; only malformed JS arguments throw. Owned by
// the JS thread that made the ring object.
#ifndef VHOSTD_FILE_H_
#define VHOSTD_FILE_H_

#include <napi.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <vector>

#include "args.h"
#include "errors.h"
#include "layout.h"

namespace vhostd {

// The file type of st_mode as the addon reports it: "file", "dir", "socket",
// "block", "char", "fifo" or "other" (fstat() and fileInfo() alike).
const char* FileTypeName(unsigned int mode);

enum FileOp : int {
  kOpReadv = 0,
  kOpWritev = 1,
  kOpDatasync = 2,
  kOpFallocate = 3,
  kOpBlkDiscard = 4,
  kOpBlkZeroout = 5,
  // fallocate(PUNCH_HOLE|KEEP_SIZE) then fallocate(0): zeroes a range and keeps it
  // allocated where FALLOC_FL_ZERO_RANGE is not supported (tmpfs). Synchronous.
  kOpPunchAlloc = 6,
  kOpCount = 7,
};

// kReqWords, kIovWords, kCompletionWords, the slot counts and kMaxIovLimit: layout.h.

// One decoded request.
struct FileReq {
  int op;
  int fd;          // the real fd of the slot
  uint32_t slot;   // the file slot
  uint64_t offset;
  uint64_t a;
  uint64_t b;
  double tag;
};

// Buffers, files and synthetic completions of one ring.
class FileRingState {
 public:
  FileRingState(uint32_t maxIovPerReq, uint32_t maxDone);

  uint32_t maxIovPerReq() const { return maxIov_; }
  int fd(uint32_t slot) const { return slot < kMaxFileSlots ? files_[slot] : -1; }
  void setFd(uint32_t slot, int fd) { files_[slot] = fd; }

  // setBuffer(slot, Uint8Array | null) from JS.
  bool SetBuffer(const Napi::CallbackInfo& info);

  // Decodes request `i` of `reqs`. Returns 0, or -EINVAL when it is malformed.
  int Decode(const double* reqs, size_t i, FileReq* out) const;

  // Fills `out` (room for maxIovPerReq entries) with the request's iovecs,
  // each checked against its buffer. Returns the iovec count, or -EINVAL.
  int BuildIovecs(const FileReq& req, const double* iovs, size_t iovCount, struct iovec* out) const;

  // A completion made here (synchronous op or refused request).
  void PushDone(double tag, double res);
  // Moves up to `max` made-here completions to out (pairs). Returns how many.
  size_t PopDone(double* out, size_t max);
  size_t doneCount() const { return doneCount_; }

 private:
  struct Buffer {
    uint8_t* data = nullptr;
    size_t length = 0;
  };
  uint32_t maxIov_;
  int files_[kMaxFileSlots];
  Buffer bufs_[kMaxBufferSlots];
  std::vector<double> done_;  // ring of (tag, res) pairs
  size_t doneHead_ = 0;
  size_t doneCount_ = 0;
};

// Runs a synchronous op (fallocate, BLKDISCARD, BLKZEROOUT, punch+alloc): 0 or -errno.
int RunSyncOp(int op, int fd, uint64_t offset, uint64_t len, uint64_t mode);

// Reads the arguments of submit(reqs, count, iovs): false after throwing.
bool SubmitArgs(const Napi::CallbackInfo& info, const double** reqs, size_t* count, const double** iovs,
                size_t* iovCount);

// Reads the arguments of reap(out, max): false after throwing. *max is in pairs.
bool ReapArgs(const Napi::CallbackInfo& info, double** out, size_t* max);

// Makes the completion eventfd of a ring (non-blocking, close-on-exec).
// Returns it, or -1 after throwing.
int NewCompletionEventfd(Napi::Env env);

// What the JS object of every file ring (IoUring, LinuxAio, RbdRing) has in
// common: its FileRingState (null once closed: every call but close() then
// throws EBADF), the depth it was made with, setBuffer(), close() and the
// `entries` accessor, the two constructor arguments every ring takes
// (ArgShape) and the list of the methods each ring has its own way
// (AddCommon). Derived supplies kName (for the EBADF error), Release()
// (idempotent; it must delete state_ and set it to null) and SetFile, Submit,
// Reap, CompletionFd and SetCompletionNotify (private: it names
// FileRing<Derived> a friend).
template <typename Derived>
class FileRing : public Napi::ObjectWrap<Derived> {
 public:
  explicit FileRing(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Derived>(info) {}

 protected:
  using Wrap = Napi::ObjectWrap<Derived>;

  // new Derived(entries, maxIovPerReq, ...): the ring's depth (1..4096) and
  // iovs per request (1..kMaxIovLimit); false after throwing.
  static bool ArgShape(const Napi::CallbackInfo& info, int64_t* entries, int64_t* maxIov) {
    return ArgInteger(info, 0, "entries", 1, 4096, entries) && ArgInteger(info, 1, "maxIovPerReq", 1, kMaxIovLimit, maxIov);
  }

  // The methods of every file ring (setFile, submit, reap, completionFd,
  // setCompletionNotify: Derived's; setBuffer, close, entries: ours), for
  // Derived's DefineClass list.
  static void AddCommon(std::vector<typename Wrap::PropertyDescriptor>* props) {
    props->push_back(Wrap::template InstanceMethod<&Derived::SetFile>("setFile"));
    props->push_back(Wrap::template InstanceMethod<&Derived::Submit>("submit"));
    props->push_back(Wrap::template InstanceMethod<&Derived::Reap>("reap"));
    props->push_back(Wrap::template InstanceMethod<&Derived::CompletionFd>("completionFd"));
    props->push_back(Wrap::template InstanceMethod<&Derived::SetCompletionNotify>("setCompletionNotify"));
    props->push_back(Wrap::InstanceMethod("setBuffer", &FileRing::SetBuffer));
    props->push_back(Wrap::InstanceMethod("close", &FileRing::Close));
    props->push_back(Wrap::InstanceAccessor("entries", &FileRing::Entries, nullptr));
  }

  // submit(reqs, count, iovs): its arguments read and the ring open; false after throwing.
  bool SubmitBegin(const Napi::CallbackInfo& info, const double** reqs, size_t* count, const double** iovs,
                   size_t* iovCount) const {
    return SubmitArgs(info, reqs, count, iovs, iovCount) && !Closed(info.Env());
  }

  // reap(out, max): its arguments read, the ring open, and the completions
  // made here (synchronous ops, refused requests) moved to `out` first, *n of
  // them; false after throwing.
  bool ReapBegin(const Napi::CallbackInfo& info, double** out, size_t* max, size_t* n) {
    if (!ReapArgs(info, out, max) || Closed(info.Env())) return false;
    *n = state_->PopDone(*out, *max);
    return true;
  }

  // false, or true after throwing EBADF (the ring was closed).
  bool Closed(Napi::Env env) const {
    if (state_ != nullptr) return false;
    ThrowErrno(env, EBADF, Derived::kName);
    return true;
  }

  FileRingState* state_ = nullptr;
  unsigned entries_ = 0;

 private:
  // setBuffer(slot, view | null): remember the view's address and length.
  Napi::Value SetBuffer(const Napi::CallbackInfo& info) {
    if (Closed(info.Env()) || !state_->SetBuffer(info)) return Napi::Value();
    return info.Env().Undefined();
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    static_cast<Derived*>(this)->Release();
    return info.Env().Undefined();
  }
  Napi::Value Entries(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), entries_); }
};

}  // namespace vhostd

#endif  // VHOSTD_FILE_H_
