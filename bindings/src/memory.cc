// Shared memory: mmap/munmap of an fd range as an external ArrayBuffer,
// memfd_create and ftruncate.
//
// Each mapping is described by a heap Mapping (real, aligned base/length)
// that is the finalize hint of its ArrayBuffer. A process-wide registry keyed
// by the ArrayBuffer's data pointer lets munmap() find it; the registry is
// mutex-protected because every worker thread shares it. Whoever unmaps first
// (munmap() or the finalizer safety net) marks the Mapping unmapped; the
// finalizer always frees the Mapping, so a data pointer reused by a later
// mapping is never unmapped by a stale finalizer.
#include <errno.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <unordered_map>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace vhostd {
namespace {

struct Mapping {
  void* base;     // what mmap returned (granularity-aligned)
  size_t length;  // what was mapped (granularity multiple)
  bool unmapped;  // guarded by RegistryMutex()
};

// Leaked on purpose: finalizers may run during environment teardown, after
// static destructors would have run.
std::mutex& RegistryMutex() {
  static std::mutex* mutex = new std::mutex();
  return *mutex;
}

std::unordered_map<void*, Mapping*>& Registry() {
  static auto* registry = new std::unordered_map<void*, Mapping*>();
  return *registry;
}

// Largest ArrayBuffer node accepts for external memory: Node < 22 caps
// external buffers at 4 GiB (buffer.constants.MAX_LENGTH).
uint64_t MaxExternalLength(Napi::Env env) {
  const napi_node_version* version = nullptr;
  if (napi_get_node_version(env, &version) == napi_ok && version != nullptr && version->major >= 22) {
    return uint64_t(kMaxExactInteger);
  }
  return uint64_t(1) << 32;
}

void FinalizeMapping(napi_env /*env*/, void* data, void* hint) {
  Mapping* mapping = static_cast<Mapping*>(hint);
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    if (!mapping->unmapped) {
      auto it = Registry().find(data);
      if (it != Registry().end() && it->second == mapping) Registry().erase(it);
      munmap(mapping->base, mapping->length);
      mapping->unmapped = true;
    }
  }
  delete mapping;
}

Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint64_t offset;
  uint64_t length;
  bool writable;
  if (!ArgFd(info, 0, &fd) || !ArgSize(info, 1, "offset", &offset) || !ArgSize(info, 2, "length", &length) ||
      !ArgBool(info, 3, "writable", &writable)) {
    return Napi::Value();
  }
  if (length == 0) {
    ThrowErrno(env, EINVAL, "mmap");
    return Napi::Value();
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ThrowErrno(env, errno, "fstat");
    return Napi::Value();
  }
  // The range must lie inside the file: touching a page past EOF is SIGBUS.
  uint64_t fileSize = st.st_size > 0 ? uint64_t(st.st_size) : 0;
  if (offset > fileSize || length > fileSize - offset) {
    ThrowErrno(env, EINVAL, "mmap");
    return Napi::Value();
  }
  // node cannot wrap more than this in one ArrayBuffer: callers map in pieces.
  if (length > MaxExternalLength(env)) {
    ThrowErrno(env, EFBIG, "mmap");
    return Napi::Value();
  }
  struct statfs fs;
  if (fstatfs(fd, &fs) != 0) {
    ThrowErrno(env, errno, "fstatfs");
    return Napi::Value();
  }
  uint64_t granularity = uint64_t(sysconf(_SC_PAGESIZE));
  if (static_cast<uint64_t>(fs.f_type) == HUGETLBFS_MAGIC && fs.f_bsize > 0) granularity = uint64_t(fs.f_bsize);

  // offset, length <= 2^53 so none of this overflows 64 bits.
  uint64_t alignedOffset = offset - offset % granularity;
  uint64_t delta = offset - alignedOffset;
  uint64_t mapLength = (delta + length + granularity - 1) / granularity * granularity;
  int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  void* base = mmap(nullptr, size_t(mapLength), prot, MAP_SHARED, fd, off_t(alignedOffset));
  if (base == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap");
    return Napi::Value();
  }
  void* data = static_cast<uint8_t*>(base) + delta;
  Mapping* mapping = new Mapping{base, size_t(mapLength), false};
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    Registry()[data] = mapping;
  }
  napi_value result;
  napi_status status = napi_create_external_arraybuffer(env, data, size_t(length), FinalizeMapping, mapping, &result);
  if (status != napi_ok) {
    // node may already have handed the memory to the finalizer (it does so
    // when it refuses the buffer), so the mapping is left to FinalizeMapping.
    if (!env.IsExceptionPending()) Napi::Error::New(env, "mmap: cannot create the ArrayBuffer").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  return Napi::Value(env, result);
}

Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) {
    ThrowTypeError(env, "buf must be an ArrayBuffer returned by mmap()");
    return Napi::Value();
  }
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  if (buffer.IsDetached()) return env.Undefined();  // already unmapped
  void* data = buffer.Data();
  Mapping* mapping = nullptr;
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    auto it = Registry().find(data);
    if (it != Registry().end()) mapping = it->second;
  }
  if (mapping == nullptr) {
    ThrowTypeError(env, "buf must be an ArrayBuffer returned by mmap()");
    return Napi::Value();
  }
  // Detach first: once it fails nothing is unmapped, once it succeeds no JS
  // view can reach the memory any more.
  buffer.Detach();
  if (env.IsExceptionPending()) return Napi::Value();
  void* base;
  size_t length;
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    Registry().erase(data);
    mapping->unmapped = true;  // the finalizer only frees the Mapping now
    base = mapping->base;
    length = mapping->length;
  }
  if (munmap(base, length) != 0) {
    ThrowErrno(env, errno, "munmap");
    return Napi::Value();
  }
  return env.Undefined();
}

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  int64_t flags;
  if (!ArgCString(info, 0, "name", &name) || !ArgInteger(info, 1, "flags", 0, double(UINT32_MAX), &flags)) {
    return Napi::Value();
  }
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | static_cast<unsigned>(flags));
  if (fd < 0) {
    ThrowErrno(env, errno, "memfd_create");
    return Napi::Value();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint64_t size;
  if (!ArgFd(info, 0, &fd) || !ArgSize(info, 1, "sizeBytes", &size)) return Napi::Value();
  int r;
  do {
    r = ftruncate(fd, off_t(size));
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    ThrowErrno(env, errno, "ftruncate");
    return Napi::Value();
  }
  return env.Undefined();
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("mmap", Napi::Function::New(env, Mmap, "mmap"));
  exports.Set("munmap", Napi::Function::New(env, Munmap, "munmap"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("ftruncate", Napi::Function::New(env, Ftruncate, "ftruncate"));
}

}  // namespace vhostd
