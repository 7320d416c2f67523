// Ceph RBD through librbd's C API (Debian librbd-dev), compiled in only when
// binding.gyp finds <rbd/librbd.h> (HAVE_LIBRBD); without it the addon
// exports rbdAvailable = false and nothing else of this file, and the rbd
// bdev module says so when asked to create a bdev.
//
// Two halves:
//
// 1. Control (any JS thread; the reactor uses it): rbdConnect / rbdShutdown /
//    rbdOpen / rbdClose / rbdResize return Promises and run on the libuv
//    thread pool, because every one of them can wait on the network for
//    seconds (monitor handshake, exclusive-lock hand-over, header updates).
//    Clusters (rados_t) and images (rbd_image_t + its rados_ioctx_t) live in
//    a process-wide table under a mutex and are named to JS by small integer
//    handles, so the reactor can open an image once and every engine worker
//    can submit I/O on it. An image in use by a ring (setFile) cannot be
//    closed (EBUSY), a cluster with open images cannot be shut down (EBUSY).
//
// 2. I/O (RbdRing, one per engine worker): the same FileRing contract as
//    IoUring/LinuxAio (request layout in file.h; the "file" of a slot is an
//    image handle), so engine/bdev/file.ts drives it unchanged. READV/WRITEV
//    become rbd_aio_readv/rbd_aio_writev with iovecs straight into the
//    registered guest memory (no copy; each in-flight request has its own
//    iovec array, which readv keeps until completion), DATASYNC
//    rbd_aio_flush, FALLOCATE(PUNCH_HOLE) rbd_aio_discard, FALLOCATE
//    (ZERO_RANGE) rbd_aio_write_zeroes. None of these blocks: librbd queues
//    the request to its own threads and returns.
//
//    Completions arrive on librbd's threads. Each request holds a node from
//    the ring's preallocated pool (taken and returned only by the owning JS
//    thread); the librbd callback stores the result in the node and pushes
//    it onto a lock-free multi-producer stack (one CAS). reap() takes the
//    whole stack with one atomic exchange and hands out (tag, result) pairs
//    (in no particular order; each carries its tag): no lock and no allocation on the hot
//    path. A busy-polling engine needs no eventfd write from librbd's thread;
//    one that sleeps with I/O in flight (interrupt mode, and adaptive mode
//    whenever its only work is bdev I/O) turns notify on first, then reaps
//    once more (see RingShared::notify and OnComplete).
//
//    Results follow SPDK's bdev_rbd: a read succeeds when librbd returns the
//    whole length, other requests when it returns 0; a success is reported
//    to JS as the byte count (reads/writes) or 0, an error as -errno
//    (EIO, ENOSPC, EBLOCKLISTED = ESHUTDOWN 108, ETIMEDOUT, ...).
//
//    close() with requests in flight (callers drain first) orphans the
//    shared part; the last callback frees it.
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "file.h"

#ifdef HAVE_LIBRBD
#include <rados/librados.h>
#include <rbd/librbd.h>
#endif

namespace vhostd {

#ifndef HAVE_LIBRBD

void InitRbd(Napi::Env env, Napi::Object exports) { exports.Set("rbdAvailable", Napi::Boolean::New(env, false)); }

#else

namespace {

// ---------------------------------------------------------------------------
// Process-wide table of clusters and images.

struct Cluster {
  rados_t rados = nullptr;
  int images = 0;  // open images on it
};

struct Image {
  int cluster = 0;
  rados_ioctx_t ioctx = nullptr;
  rbd_image_t image = nullptr;
  int rings = 0;  // RbdRing slots holding it
  bool closing = false;
};

std::mutex g_mu;
std::map<int, Cluster> g_clusters;
std::map<int, Image> g_images;
int g_nextHandle = 1;

Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what) {
  Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
  const char* name = nullptr;
  switch (err) {
    case ENOENT: name = "ENOENT"; break;
    case EACCES: name = "EACCES"; break;
    case EPERM: name = "EPERM"; break;
    case EBUSY: name = "EBUSY"; break;
    case EINVAL: name = "EINVAL"; break;
    case EEXIST: name = "EEXIST"; break;
    case ETIMEDOUT: name = "ETIMEDOUT"; break;
    case ENOTCONN: name = "ENOTCONN"; break;
    case ESHUTDOWN: name = "ESHUTDOWN"; break;
    case EROFS: name = "EROFS"; break;
    case ENOSPC: name = "ENOSPC"; break;
    case EIO: name = "EIO"; break;
    case EBADF: name = "EBADF"; break;
    case ENOMEM: name = "ENOMEM"; break;
    case EOPNOTSUPP: name = "EOPNOTSUPP"; break;
    default: break;
  }
  e.Set("code", name != nullptr ? Napi::Value(Napi::String::New(env, name)) : env.Null());
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, what));
  return e;
}

// A pool-thread job whose outcome settles a Promise: Run() returns 0 or a
// positive errno and names the failing call in failed_.
class RbdJob : public Napi::AsyncWorker {
 public:
  explicit RbdJob(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  virtual int Run() = 0;
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }
  void Execute() override { err_ = Run(); }
  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      deferred_.Reject(ErrnoError(env, err_, failed_).Value());
    } else {
      deferred_.Resolve(Result(env));
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

  const char* failed_ = "";

 private:
  Napi::Promise::Deferred deferred_;
  int err_ = 0;
};

// rbdConnect({userId, configFile, configParams: [[k, v]...], keyFile, cpus: number[]})
class ConnectJob : public RbdJob {
 public:
  using RbdJob::RbdJob;
  bool hasUser = false, hasConfigFile = false, hasKeyFile = false;
  std::string user, configFile, keyFile;
  std::vector<std::pair<std::string, std::string>> params;
  std::vector<int> cpus;
  int handle = 0;

 protected:
  int Run() override {
    // librados starts its threads in rados_create/rados_connect; they
    // inherit this pool thread's CPU affinity, so core_mask is applied by
    // narrowing it for the duration (then restored).
    cpu_set_t saved;
    bool restore = false;
    if (!cpus.empty() && sched_getaffinity(0, sizeof(saved), &saved) == 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      for (int c : cpus) CPU_SET(c, &set);
      if (sched_setaffinity(0, sizeof(set), &set) != 0) {
        failed_ = "sched_setaffinity(core_mask)";
        return errno;
      }
      restore = true;
    }
    int r = Connect();
    if (restore) sched_setaffinity(0, sizeof(saved), &saved);
    return r;
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, handle); }

 private:
  int Connect() {
    rados_t rados = nullptr;
    int r = rados_create(&rados, hasUser ? user.c_str() : nullptr);
    if (r < 0) {
      failed_ = "rados_create";
      return -r;
    }
    // Default search path (/etc/ceph/ceph.conf, ...) when no file is named;
    // its absence is not an error then (as in SPDK).
    r = rados_conf_read_file(rados, hasConfigFile ? configFile.c_str() : nullptr);
    if (r < 0 && hasConfigFile) {
      rados_shutdown(rados);
      failed_ = "rados_conf_read_file";
      return -r;
    }
    for (auto& kv : params) {
      r = rados_conf_set(rados, kv.first.c_str(), kv.second.c_str());
      if (r < 0) {
        rados_shutdown(rados);
        failed_ = "rados_conf_set";
        return -r;
      }
    }
    if (hasKeyFile) {
      r = rados_conf_set(rados, "keyring", keyFile.c_str());
      if (r < 0) {
        rados_shutdown(rados);
        failed_ = "rados_conf_set(keyring)";
        return -r;
      }
    }
    r = rados_connect(rados);
    if (r < 0) {
      rados_shutdown(rados);
      failed_ = "rados_connect";
      return -r;
    }
    std::lock_guard<std::mutex> lock(g_mu);
    handle = g_nextHandle++;
    g_clusters[handle].rados = rados;
    return 0;
  }
};

class ShutdownJob : public RbdJob {
 public:
  ShutdownJob(Napi::Env env, rados_t rados) : RbdJob(env), rados_(rados) {}

 protected:
  int Run() override {
    rados_shutdown(rados_);
    return 0;
  }

 private:
  rados_t rados_;
};

class OpenJob : public RbdJob {
 public:
  using RbdJob::RbdJob;
  int cluster = 0;
  rados_t rados = nullptr;
  std::string pool, image;
  bool readOnly = false;
  int handle = 0;
  uint64_t size = 0;
  uint64_t objectSize = 0;
  std::string id;

 protected:
  int Run() override {
    rados_ioctx_t io = nullptr;
    int r = rados_ioctx_create(rados, pool.c_str(), &io);
    if (r < 0) {
      failed_ = "rados_ioctx_create";
      Unref();
      return -r;
    }
    rbd_image_t img = nullptr;
    r = readOnly ? rbd_open_read_only(io, image.c_str(), &img, nullptr) : rbd_open(io, image.c_str(), &img, nullptr);
    if (r < 0) {
      rados_ioctx_destroy(io);
      failed_ = readOnly ? "rbd_open_read_only" : "rbd_open";
      Unref();
      return -r;
    }
    rbd_image_info_t info;
    r = rbd_stat(img, &info, sizeof(info));
    if (r < 0) {
      rbd_close(img);
      rados_ioctx_destroy(io);
      failed_ = "rbd_stat";
      Unref();
      return -r;
    }
    size = info.size;
    objectSize = info.obj_size;
    char idbuf[64];
    if (rbd_get_id(img, idbuf, sizeof(idbuf)) == 0) id = idbuf;
    std::lock_guard<std::mutex> lock(g_mu);
    handle = g_nextHandle++;
    Image& e = g_images[handle];
    e.cluster = cluster;
    e.ioctx = io;
    e.image = img;
    return 0;
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("image", Napi::Number::New(env, handle));
    o.Set("sizeBytes", Napi::Number::New(env, double(size)));
    o.Set("objectSizeBytes", Napi::Number::New(env, double(objectSize)));
    o.Set("id", Napi::String::New(env, id));
    return o;
  }

 private:
  void Unref() {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_clusters.find(cluster);
    if (it != g_clusters.end()) it->second.images--;
  }
};

class CloseJob : public RbdJob {
 public:
  CloseJob(Napi::Env env, int handle, Image img) : RbdJob(env), handle_(handle), img_(img) {}

 protected:
  int Run() override {
    // Waits for librbd's own in-flight work, releases the exclusive lock.
    int r = rbd_close(img_.image);
    rados_ioctx_destroy(img_.ioctx);
    std::lock_guard<std::mutex> lock(g_mu);
    g_images.erase(handle_);
    auto it = g_clusters.find(img_.cluster);
    if (it != g_clusters.end()) it->second.images--;
    if (r < 0) {
      failed_ = "rbd_close";
      return -r;
    }
    return 0;
  }

 private:
  int handle_;
  Image img_;
};

class ResizeJob : public RbdJob {
 public:
  ResizeJob(Napi::Env env, rbd_image_t img, uint64_t bytes) : RbdJob(env), img_(img), bytes_(bytes) {}

 protected:
  int Run() override {
    int r = rbd_resize(img_, bytes_);
    if (r < 0) {
      failed_ = "rbd_resize";
      return -r;
    }
    return 0;
  }

 private:
  rbd_image_t img_;
  uint64_t bytes_;
};

bool StringProp(Napi::Env env, Napi::Object o, const char* key, bool* has, std::string* out) {
  Napi::Value v = o.Get(key);
  *has = false;
  if (v.IsUndefined() || v.IsNull()) return true;
  if (!v.IsString()) {
    ThrowTypeError(env, std::string(key) + " must be a string");
    return false;
  }
  *out = v.As<Napi::String>().Utf8Value();
  if (out->find('\0') != std::string::npos) {
    ThrowTypeError(env, std::string(key) + " must not contain NUL characters");
    return false;
  }
  *has = true;
  return true;
}

Napi::Value RbdConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    ThrowTypeError(env, "options must be an object");
    return Napi::Value();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  auto* job = new ConnectJob(env);
  bool ok = StringProp(env, o, "userId", &job->hasUser, &job->user) &&
            StringProp(env, o, "configFile", &job->hasConfigFile, &job->configFile) &&
            StringProp(env, o, "keyFile", &job->hasKeyFile, &job->keyFile);
  if (ok) {
    Napi::Value p = o.Get("configParams");
    if (!p.IsUndefined() && !p.IsNull()) {
      if (!p.IsArray()) {
        ThrowTypeError(env, "configParams must be an array of [key, value]");
        ok = false;
      } else {
        Napi::Array a = p.As<Napi::Array>();
        for (uint32_t i = 0; ok && i < a.Length(); i++) {
          Napi::Value kv = a.Get(i);
          if (!kv.IsArray() || kv.As<Napi::Array>().Length() != 2 || !kv.As<Napi::Array>().Get(0u).IsString() ||
              !kv.As<Napi::Array>().Get(1u).IsString()) {
            ThrowTypeError(env, "configParams must be an array of [key, value] strings");
            ok = false;
            break;
          }
          std::string k = kv.As<Napi::Array>().Get(0u).As<Napi::String>().Utf8Value();
          std::string v = kv.As<Napi::Array>().Get(1u).As<Napi::String>().Utf8Value();
          if (k.find('\0') != std::string::npos || v.find('\0') != std::string::npos) {
            ThrowTypeError(env, "configParams must not contain NUL characters");
            ok = false;
            break;
          }
          job->params.emplace_back(k, v);
        }
      }
    }
  }
  if (ok) {
    Napi::Value c = o.Get("cpus");
    if (!c.IsUndefined() && !c.IsNull()) {
      if (!c.IsArray()) {
        ThrowTypeError(env, "cpus must be an array of CPU numbers");
        ok = false;
      } else {
        Napi::Array a = c.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); i++) {
          Napi::Value n = a.Get(i);
          double d = n.IsNumber() ? n.As<Napi::Number>().DoubleValue() : -1;
          if (!(d == trunc(d)) || d < 0 || d >= CPU_SETSIZE) {
            ThrowTypeError(env, "cpus must be an array of CPU numbers");
            ok = false;
            break;
          }
          job->cpus.push_back(int(d));
        }
      }
    }
  }
  if (!ok) {
    delete job;
    return Napi::Value();
  }
  Napi::Promise promise = job->Promise();
  job->Queue();
  return promise;
}

Napi::Value RbdShutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t h;
  if (!ArgInteger(info, 0, "cluster", 0, INT32_MAX, &h)) return Napi::Value();
  rados_t rados;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_clusters.find(int(h));
    if (it == g_clusters.end()) {
      ThrowErrno(env, EBADF, "rbdShutdown");
      return Napi::Value();
    }
    if (it->second.images > 0) {
      ThrowErrno(env, EBUSY, "rbdShutdown");
      return Napi::Value();
    }
    rados = it->second.rados;
    g_clusters.erase(it);
  }
  auto* job = new ShutdownJob(env, rados);
  Napi::Promise promise = job->Promise();
  job->Queue();
  return promise;
}

// rbdOpen(cluster, pool, image, readOnly)
Napi::Value RbdOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t h;
  std::string pool, image;
  bool ro;
  if (!ArgInteger(info, 0, "cluster", 0, INT32_MAX, &h) || !ArgCString(info, 1, "pool", &pool) ||
      !ArgCString(info, 2, "image", &image) || !ArgBool(info, 3, "readOnly", &ro)) {
    return Napi::Value();
  }
  auto* job = new OpenJob(env);
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_clusters.find(int(h));
    if (it == g_clusters.end()) {
      delete job;
      ThrowErrno(env, EBADF, "rbdOpen");
      return Napi::Value();
    }
    it->second.images++;
    job->rados = it->second.rados;
  }
  job->cluster = int(h);
  job->pool = pool;
  job->image = image;
  job->readOnly = ro;
  Napi::Promise promise = job->Promise();
  job->Queue();
  return promise;
}

Napi::Value RbdClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t h;
  if (!ArgInteger(info, 0, "image", 0, INT32_MAX, &h)) return Napi::Value();
  Image img;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_images.find(int(h));
    if (it == g_images.end() || it->second.closing) {
      ThrowErrno(env, EBADF, "rbdClose");
      return Napi::Value();
    }
    if (it->second.rings > 0) {
      ThrowErrno(env, EBUSY, "rbdClose");
      return Napi::Value();
    }
    it->second.closing = true;
    img = it->second;
  }
  auto* job = new CloseJob(env, int(h), img);
  Napi::Promise promise = job->Promise();
  job->Queue();
  return promise;
}

// Looks an open image up (not closing); nullptr when there is none.
rbd_image_t FindImage(int h) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_images.find(h);
  if (it == g_images.end() || it->second.closing) return nullptr;
  return it->second.image;
}

Napi::Value RbdResize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t h;
  uint64_t bytes;
  if (!ArgInteger(info, 0, "image", 0, INT32_MAX, &h) || !ArgSize(info, 1, "sizeBytes", &bytes)) return Napi::Value();
  rbd_image_t img = FindImage(int(h));
  if (img == nullptr) {
    ThrowErrno(env, EBADF, "rbdResize");
    return Napi::Value();
  }
  auto* job = new ResizeJob(env, img, bytes);
  Napi::Promise promise = job->Promise();
  job->Queue();
  return promise;
}

// rbdSize(image) → bytes (librbd's cached header: no network round trip).
Napi::Value RbdSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t h;
  if (!ArgInteger(info, 0, "image", 0, INT32_MAX, &h)) return Napi::Value();
  rbd_image_t img = FindImage(int(h));
  if (img == nullptr) {
    ThrowErrno(env, EBADF, "rbdSize");
    return Napi::Value();
  }
  uint64_t size = 0;
  int r = rbd_get_size(img, &size);
  if (r < 0) {
    ThrowErrno(env, -r, "rbd_get_size");
    return Napi::Value();
  }
  return Napi::Number::New(env, double(size));
}

// ---------------------------------------------------------------------------
// RbdRing: per-worker I/O.

constexpr uint64_t kFallocPunchHole = 0x02;
constexpr uint64_t kFallocZeroRange = 0x10;

struct RingShared;

// One request in flight; preallocated, owned by the ring's JS thread except
// between submission and the librbd callback.
struct Node {
  RingShared* shared = nullptr;
  Node* next = nullptr;  // free list (JS thread) or done stack (callback → JS thread)
  double tag = 0;
  double expect = 0;  // bytes reported on success
  struct iovec* iov = nullptr;  // this node's iovec area (maxIovPerReq entries)
  int op = 0;
  int64_t res = 0;
};

// What librbd's callbacks touch: outlives the JS object while requests are in flight.
struct RingShared {
  ~RingShared() {
    if (eventFd >= 0) close(eventFd);
  }
  std::atomic<Node*> done{nullptr};
  std::atomic<int64_t> inflight{0};
  std::atomic<bool> orphaned{false};
  // The completion eventfd (completionFd(), -1 until asked for) and whether a
  // callback signals it (setCompletionNotify): a busy-polling owner pays no
  // write per completion; one about to sleep turns it on, then reaps again.
  // Closed with this struct, after the last callback.
  int eventFd = -1;
  std::atomic<bool> notify{false};
  std::vector<Node> nodes;
  // librbd's readv keeps the iovec array (not only the buffers) until the
  // request completes (librbd::io::ReadResult holds the pointer), so each
  // node has its own area.
  std::vector<struct iovec> iovs;
};

void OnComplete(rbd_completion_t c, void* arg) {
  Node* n = static_cast<Node*>(arg);
  n->res = rbd_aio_get_return_value(c);
  rbd_aio_release(c);
  RingShared* s = n->shared;
  Node* head = s->done.load(std::memory_order_relaxed);
  do {
    n->next = head;
  } while (!s->done.compare_exchange_weak(head, n, std::memory_order_seq_cst, std::memory_order_relaxed));
  // seq_cst on both sides (this push and load; the owner's notify store and
  // its reap's exchange): either the owner's re-check after turning notify on
  // sees this node, or this callback sees notify on and wakes it.
  if (s->eventFd >= 0 && s->notify.load(std::memory_order_seq_cst)) {
    uint64_t one = 1;
    ssize_t w;
    do {
      w = write(s->eventFd, &one, sizeof(one));
    } while (w < 0 && errno == EINTR);
    // EAGAIN: the counter is at its maximum, so the owner is woken anyway.
  }
  if (s->inflight.fetch_sub(1, std::memory_order_acq_rel) == 1 && s->orphaned.load(std::memory_order_acquire)) {
    delete s;
  }
}

class RbdRing : public FileRing<RbdRing> {
 public:
  friend class FileRing<RbdRing>;  // AddCommon lists our private methods
  static constexpr const char* kName = "RbdRing";
  static Napi::Function Define(Napi::Env env) {
    std::vector<PropertyDescriptor> props = {
        InstanceAccessor<&RbdRing::Inflight>("inflight"),
    };
    AddCommon(&props);
    return DefineClass(env, "RbdRing", props);
  }

  // new RbdRing(entries, maxIovPerReq)
  explicit RbdRing(const Napi::CallbackInfo& info) : FileRing<RbdRing>(info) {
    int64_t entries, maxIov;
    if (!ArgShape(info, &entries, &maxIov)) return;
    entries_ = unsigned(entries);
    shared_ = new RingShared();
    shared_->nodes.resize(entries_);
    shared_->iovs.resize(size_t(entries_) * size_t(maxIov));
    for (unsigned i = 0; i < entries_; i++) {
      Node& n = shared_->nodes[i];
      n.shared = shared_;
      n.iov = &shared_->iovs[size_t(i) * size_t(maxIov)];
      n.next = free_;
      free_ = &n;
    }
    state_ = new FileRingState(uint32_t(maxIov), entries_);
    pending_.reserve(entries_);
    for (auto& img : images_) img = nullptr;
  }

  ~RbdRing() override { Release(); }

  void Release() {
    if (state_ == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      for (uint32_t s = 0; s < kMaxFileSlots; s++) {
        if (images_[s] == nullptr) continue;
        auto it = g_images.find(state_->fd(s));
        if (it != g_images.end()) it->second.rings--;
        images_[s] = nullptr;
      }
    }
    delete state_;
    state_ = nullptr;
    RingShared* s = shared_;
    shared_ = nullptr;
    // Requests still in flight (callers drain first): the last callback frees it.
    s->orphaned.store(true, std::memory_order_release);
    if (s->inflight.load(std::memory_order_acquire) == 0) delete s;
  }

 private:
  Napi::Value Inflight(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), shared_ == nullptr ? 0 : double(shared_->inflight.load()));
  }

  // setFile(slot, imageHandle): -1 empties the slot.
  Napi::Value SetFile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t slot;
    int32_t h;
    if (!ArgInteger(info, 0, "slot", 0, kMaxFileSlots - 1, &slot) || !ArgInt32(info, 1, "image", &h)) {
      return Napi::Value();
    }
    if (Closed(env)) return Napi::Value();
    std::lock_guard<std::mutex> lock(g_mu);
    if (images_[slot] != nullptr) {
      auto it = g_images.find(state_->fd(uint32_t(slot)));
      if (it != g_images.end()) it->second.rings--;
      images_[slot] = nullptr;
      state_->setFd(uint32_t(slot), -1);
    }
    if (h < 0) return env.Undefined();
    auto it = g_images.find(h);
    if (it == g_images.end() || it->second.closing) {
      ThrowErrno(env, EBADF, "RbdRing.setFile");
      return Napi::Value();
    }
    it->second.rings++;
    images_[slot] = it->second.image;
    state_->setFd(uint32_t(slot), h);
    return env.Undefined();
  }

  // completionFd() → an eventfd librbd's callbacks signal while notify is on
  // (setCompletionNotify). Made on the first call, owned by the ring.
  Napi::Value CompletionFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (Closed(env)) return Napi::Value();
    if (shared_->eventFd < 0 && (shared_->eventFd = NewCompletionEventfd(env)) < 0) return Napi::Value();
    return Napi::Number::New(env, shared_->eventFd);
  }

  // setCompletionNotify(on): callbacks signal the eventfd (true) or not. Turning
  // it on before sleeping must be followed by a reap() (the re-check).
  Napi::Value SetCompletionNotify(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool on;
    if (!ArgBool(info, 0, "on", &on)) return Napi::Value();
    if (Closed(env)) return Napi::Value();
    shared_->notify.store(on, std::memory_order_seq_cst);
    return env.Undefined();
  }

  // submit(reqs, count, iovs) → how many were taken (all but those beyond a full node pool).
  Napi::Value Submit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const double* reqs;
    const double* iovs;
    size_t count, iovCount;
    if (!SubmitBegin(info, &reqs, &count, &iovs, &iovCount)) return Napi::Value();
    size_t i = 0;
    for (; i < count; i++) {
      FileReq r;
      int err = state_->Decode(reqs, i, &r);
      if (err != 0) {
        state_->PushDone(r.tag, err);
        continue;
      }
      if (free_ == nullptr) break;  // every node in flight: the caller offers the rest later
      rbd_image_t img = images_[r.slot];
      Node* n = free_;
      int niov = 0;
      uint64_t bytes = 0;
      switch (r.op) {
        case kOpReadv:
        case kOpWritev:
          niov = state_->BuildIovecs(r, iovs, iovCount, n->iov);
          if (niov < 0) {
            state_->PushDone(r.tag, niov);
            continue;
          }
          for (int k = 0; k < niov; k++) bytes += n->iov[k].iov_len;
          break;
        case kOpDatasync:
          break;
        case kOpFallocate:
          if (r.b != (kFallocPunchHole | 0x01) && r.b != kFallocZeroRange) {
            state_->PushDone(r.tag, -EOPNOTSUPP);
            continue;
          }
          break;
        default:
          state_->PushDone(r.tag, -EOPNOTSUPP);
          continue;
      }
      rbd_completion_t c;
      int rc = rbd_aio_create_completion(n, OnComplete, &c);
      if (rc < 0) {
        state_->PushDone(r.tag, rc);
        continue;
      }
      free_ = n->next;
      n->next = nullptr;
      n->tag = r.tag;
      n->op = r.op;
      n->expect = double(bytes);
      n->res = 0;
      shared_->inflight.fetch_add(1, std::memory_order_relaxed);
      switch (r.op) {
        case kOpReadv:
          rc = rbd_aio_readv(img, n->iov, niov, r.offset, c);
          break;
        case kOpWritev:
          rc = rbd_aio_writev(img, n->iov, niov, r.offset, c);
          break;
        case kOpDatasync:
          rc = rbd_aio_flush(img, c);
          break;
        default:
          rc = r.b == kFallocZeroRange ? rbd_aio_write_zeroes(img, r.offset, r.a, c, 0, 0)
                                       : rbd_aio_discard(img, r.offset, r.a, c);
          break;
      }
      if (rc < 0) {
        // Refused before it was queued: the callback will not run.
        rbd_aio_release(c);
        shared_->inflight.fetch_sub(1, std::memory_order_relaxed);
        n->next = free_;
        free_ = n;
        state_->PushDone(r.tag, rc);
      }
    }
    return Napi::Number::New(env, double(i));
  }

  // reap(out, max) → pairs written.
  Napi::Value Reap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    double* out;
    size_t max;
    size_t n;
    if (!ReapBegin(info, &out, &max, &n)) return Napi::Value();
    if (n < max) {
      Node* list = shared_->done.exchange(nullptr, std::memory_order_seq_cst);
      for (; list != nullptr; list = list->next) pending_.push_back(list);
      while (n < max && pendingHead_ < pending_.size()) {
        Node* d = pending_[pendingHead_++];
        double res;
        if (d->res < 0) {
          res = double(d->res);
        } else if (d->op == kOpReadv) {
          res = double(d->res) == d->expect ? d->expect : -EIO;
        } else if (d->res != 0) {
          res = -EIO;
        } else {
          res = d->op == kOpWritev ? d->expect : 0;
        }
        out[kCompletionWords * n] = d->tag;
        out[kCompletionWords * n + 1] = res;
        n++;
        d->next = free_;
        free_ = d;
      }
      if (pendingHead_ == pending_.size()) {
        pending_.clear();
        pendingHead_ = 0;
      }
    }
    return Napi::Number::New(env, double(n));
  }

  RingShared* shared_ = nullptr;
  Node* free_ = nullptr;
  std::vector<Node*> pending_;
  size_t pendingHead_ = 0;
  rbd_image_t images_[kMaxFileSlots];
};

}  // namespace

void InitRbd(Napi::Env env, Napi::Object exports) {
  exports.Set("rbdAvailable", Napi::Boolean::New(env, true));
  int major = 0, minor = 0, extra = 0;
  rbd_version(&major, &minor, &extra);
  exports.Set("rbdVersion", Napi::String::New(env, std::to_string(major) + "." + std::to_string(minor) + "." +
                                                       std::to_string(extra)));
  exports.Set("rbdConnect", Napi::Function::New<RbdConnect>(env, "rbdConnect"));
  exports.Set("rbdShutdown", Napi::Function::New<RbdShutdown>(env, "rbdShutdown"));
  exports.Set("rbdOpen", Napi::Function::New<RbdOpen>(env, "rbdOpen"));
  exports.Set("rbdClose", Napi::Function::New<RbdClose>(env, "rbdClose"));
  exports.Set("rbdResize", Napi::Function::New<RbdResize>(env, "rbdResize"));
  exports.Set("rbdSize", Napi::Function::New<RbdSize>(env, "rbdSize"));
  exports.Set("RbdRing", RbdRing::Define(env));
}

#endif  // HAVE_LIBRBD

}  // namespace vhostd
