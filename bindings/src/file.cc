// Backing files of the file bdevs: open (O_DIRECT or buffered), what the
// store can honour (size, logical/physical block size, direct-I/O alignment),
// the synchronous range operations (fallocate, BLKDISCARD, BLKZEROOUT), and
// the state the two rings share (file.h). Stateless JS functions: callable
// from any thread.
#include "file.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <math.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace vhostd {

FileRingState::FileRingState(uint32_t maxIovPerReq, uint32_t maxDone)
    : maxIov_(maxIovPerReq), done_(size_t(maxDone) * kCompletionWords, 0.0) {
  for (uint32_t i = 0; i < kMaxFileSlots; i++) files_[i] = -1;
}

int NewCompletionEventfd(Napi::Env env) {
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) ThrowErrno(env, errno, "eventfd");
  return efd;
}

bool FileRingState::SetBuffer(const Napi::CallbackInfo& info) {
  int64_t slot;
  if (!ArgInteger(info, 0, "slot", 0, kMaxBufferSlots - 1, &slot)) return false;
  if (info.Length() < 2 || info[1].IsNull() || info[1].IsUndefined()) {
    bufs_[slot] = Buffer();
    return true;
  }
  uint8_t* data;
  size_t length;
  if (!ArgBytes(info, 1, "view", &data, &length)) return false;
  bufs_[slot].data = data;
  bufs_[slot].length = length;
  return true;
}

namespace {

// An exact non-negative integer <= 2^53 held in a double.
inline bool ExactU53(double d, uint64_t* out) {
  if (!(d >= 0 && d <= kMaxExactInteger && d == trunc(d))) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

}  // namespace

int FileRingState::Decode(const double* reqs, size_t i, FileReq* out) const {
  const double* r = reqs + i * kReqWords;
  uint64_t op, slot, tag;
  out->tag = r[5];
  if (!ExactU53(r[5], &tag)) return -EINVAL;
  if (!ExactU53(r[0], &op) || op >= kOpCount || !ExactU53(r[1], &slot) || slot >= kMaxFileSlots) return -EINVAL;
  if (!ExactU53(r[2], &out->offset) || !ExactU53(r[3], &out->a) || !ExactU53(r[4], &out->b)) return -EINVAL;
  out->op = static_cast<int>(op);
  out->slot = static_cast<uint32_t>(slot);
  out->fd = files_[slot];
  if (out->fd < 0) return -EBADF;
  // Offsets go to the kernel as off_t (signed 64-bit): 2^53 fits.
  return 0;
}

int FileRingState::BuildIovecs(const FileReq& req, const double* iovs, size_t iovCount, struct iovec* out) const {
  uint64_t first = req.a;
  uint64_t n = req.b;
  if (n == 0 || n > maxIov_ || first > iovCount || n > iovCount - first) return -EINVAL;
  for (uint64_t k = 0; k < n; k++) {
    const double* v = iovs + (first + k) * kIovWords;
    uint64_t slot, off, len;
    if (!ExactU53(v[0], &slot) || slot >= kMaxBufferSlots || !ExactU53(v[1], &off) || !ExactU53(v[2], &len)) {
      return -EINVAL;
    }
    const Buffer& b = bufs_[slot];
    // Never hand the kernel an address outside a registered buffer.
    if (b.data == nullptr || len == 0 || off > b.length || len > b.length - off) return -EINVAL;
    out[k].iov_base = b.data + off;
    out[k].iov_len = size_t(len);
  }
  return static_cast<int>(n);
}

void FileRingState::PushDone(double tag, double res) {
  size_t cap = done_.size() / kCompletionWords;
  if (doneCount_ == cap) {
    // Callers bound what is in flight, so this only grows on misuse.
    std::vector<double> bigger(done_.size() * 2, 0.0);
    for (size_t k = 0; k < doneCount_; k++) {
      size_t j = (doneHead_ + k) % cap;
      bigger[kCompletionWords * k] = done_[kCompletionWords * j];
      bigger[kCompletionWords * k + 1] = done_[kCompletionWords * j + 1];
    }
    done_.swap(bigger);
    doneHead_ = 0;
    cap = done_.size() / kCompletionWords;
  }
  size_t j = (doneHead_ + doneCount_) % cap;
  done_[kCompletionWords * j] = tag;
  done_[kCompletionWords * j + 1] = res;
  doneCount_++;
}

size_t FileRingState::PopDone(double* out, size_t max) {
  size_t cap = done_.size() / kCompletionWords;
  size_t n = 0;
  while (n < max && doneCount_ > 0) {
    out[kCompletionWords * n] = done_[kCompletionWords * doneHead_];
    out[kCompletionWords * n + 1] = done_[kCompletionWords * doneHead_ + 1];
    doneHead_ = (doneHead_ + 1) % cap;
    doneCount_--;
    n++;
  }
  return n;
}

int RunSyncOp(int op, int fd, uint64_t offset, uint64_t len, uint64_t mode) {
  switch (op) {
    case kOpFallocate:
      if (fallocate(fd, static_cast<int>(mode), off_t(offset), off_t(len)) != 0) return -errno;
      return 0;
    case kOpPunchAlloc:
      if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(offset), off_t(len)) != 0) return -errno;
      if (fallocate(fd, 0, off_t(offset), off_t(len)) != 0) return -errno;
      return 0;
    case kOpBlkDiscard:
    case kOpBlkZeroout: {
      uint64_t range[2] = {offset, len};
      if (ioctl(fd, op == kOpBlkDiscard ? BLKDISCARD : BLKZEROOUT, range) != 0) return -errno;
      return 0;
    }
    case kOpDatasync:
      if (fdatasync(fd) != 0) return -errno;
      return 0;
    default:
      return -EINVAL;
  }
}

bool SubmitArgs(const Napi::CallbackInfo& info, const double** reqs, size_t* count, const double** iovs,
                size_t* iovCount) {
  double* r;
  size_t rn;
  double* v;
  size_t vn;
  int64_t c;
  if (!ArgTypedArray<double>(info, 0, "reqs", napi_float64_array, "Float64Array", &r, &rn) ||
      !ArgInteger(info, 1, "count", 0, double(UINT32_MAX), &c) ||
      !ArgTypedArray<double>(info, 2, "iovs", napi_float64_array, "Float64Array", &v, &vn)) {
    return false;
  }
  if (uint64_t(c) > rn / kReqWords) {
    ThrowTypeError(info.Env(), "count exceeds the requests in reqs");
    return false;
  }
  *reqs = r;
  *count = size_t(c);
  *iovs = v;
  *iovCount = vn / kIovWords;
  return true;
}

bool ReapArgs(const Napi::CallbackInfo& info, double** out, size_t* max) {
  double* o;
  size_t on;
  int64_t m;
  if (!ArgTypedArray<double>(info, 0, "out", napi_float64_array, "Float64Array", &o, &on) ||
      !ArgInteger(info, 1, "max", 0, double(UINT32_MAX), &m)) {
    return false;
  }
  if (uint64_t(m) > on / kCompletionWords) {
    ThrowTypeError(info.Env(), "max exceeds the pairs out can hold");
    return false;
  }
  *out = o;
  *max = size_t(m);
  return true;
}

const char* FileTypeName(unsigned int mode) {
  if (S_ISREG(mode)) return "file";
  if (S_ISDIR(mode)) return "dir";
  if (S_ISSOCK(mode)) return "socket";
  if (S_ISBLK(mode)) return "block";
  if (S_ISCHR(mode)) return "char";
  if (S_ISFIFO(mode)) return "fifo";
  return "other";
}

namespace {

// fileOpen(path, writable, direct) → fd (O_CLOEXEC).
Napi::Value FileOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  bool writable, direct;
  if (!ArgCString(info, 0, "path", &path) || !ArgBool(info, 1, "writable", &writable) ||
      !ArgBool(info, 2, "direct", &direct)) {
    return Napi::Value();
  }
  int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | (direct ? O_DIRECT : 0);
  int fd;
  do {
    fd = open(path.c_str(), flags);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    ThrowErrno(env, errno, "open");
    return Napi::Value();
  }
  return Napi::Number::New(env, fd);
}

// fileInfo(fd) → { type, sizeBytes, logicalBlockSize, physicalBlockSize, dioMemAlign, dioOffsetAlign }.
Napi::Value FileInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return Napi::Value();
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ThrowErrno(env, errno, "fstat");
    return Napi::Value();
  }
  double size = double(st.st_size);
  double logical = 0, physical = 0, memAlign = 0, offAlign = 0;
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    int lbs = 0;
    unsigned int pbs = 0;
    if (ioctl(fd, BLKGETSIZE64, &bytes) != 0) {
      ThrowErrno(env, errno, "ioctl(BLKGETSIZE64)");
      return Napi::Value();
    }
    if (ioctl(fd, BLKSSZGET, &lbs) != 0) {
      ThrowErrno(env, errno, "ioctl(BLKSSZGET)");
      return Napi::Value();
    }
    if (ioctl(fd, BLKPBSZGET, &pbs) != 0) pbs = unsigned(lbs);
    size = double(bytes);
    logical = lbs;
    physical = pbs;
  }
  struct statx sx;
  if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) != 0) {
    memAlign = sx.stx_dio_mem_align;
    offAlign = sx.stx_dio_offset_align;
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("type", Napi::String::New(env, FileTypeName(st.st_mode)));
  result.Set("sizeBytes", Napi::Number::New(env, size));
  result.Set("logicalBlockSize", Napi::Number::New(env, logical));
  result.Set("physicalBlockSize", Napi::Number::New(env, physical));
  result.Set("dioMemAlign", Napi::Number::New(env, memAlign));
  result.Set("dioOffsetAlign", Napi::Number::New(env, offAlign));
  return result;
}

// fileSyncOp(fd, op, offset, len, mode) → 0 or -errno (never throws for the kernel's answer).
Napi::Value FileSyncOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t op;
  uint64_t offset, len, mode;
  if (!ArgFd(info, 0, &fd) || !ArgInteger(info, 1, "op", 0, kOpCount - 1, &op) ||
      !ArgSize(info, 2, "offset", &offset) || !ArgSize(info, 3, "len", &len) || !ArgSize(info, 4, "mode", &mode)) {
    return Napi::Value();
  }
  if (op == kOpReadv || op == kOpWritev) {
    ThrowTypeError(env, "op must be a synchronous operation");
    return Napi::Value();
  }
  return Napi::Number::New(env, RunSyncOp(int(op), fd, offset, len, mode));
}

}  // namespace

void InitFile(Napi::Env env, Napi::Object exports) {
  exports.Set("fileOpen", Napi::Function::New(env, FileOpen, "fileOpen"));
  exports.Set("fileInfo", Napi::Function::New(env, FileInfo, "fileInfo"));
  exports.Set("fileSyncOp", Napi::Function::New(env, FileSyncOp, "fileSyncOp"));
}

}  // namespace vhostd
