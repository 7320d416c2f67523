// eventfd counters and a blocking poll(2) for readability (the idle wait of
// an engine worker). Stateless: callable from any thread.
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <vector>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace vhostd {
namespace {

Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t initval;
  int64_t flags;
  if (!ArgInteger(info, 0, "initval", 0, double(UINT32_MAX), &initval) ||
      !ArgInteger(info, 1, "flags", 0, double(INT32_MAX), &flags)) {
    return Napi::Value();
  }
  int fd = eventfd(static_cast<unsigned>(initval), EFD_NONBLOCK | EFD_CLOEXEC | static_cast<int>(flags));
  if (fd < 0) {
    ThrowErrno(env, errno, "eventfd");
    return Napi::Value();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return Napi::Value();
  uint64_t value = 0;
  ssize_t n;
  do {
    n = read(fd, &value, sizeof(value));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "read");
    return Napi::Value();
  }
  if (n != sizeof(value)) {  // not an eventfd
    ThrowErrno(env, EINVAL, "read");
    return Napi::Value();
  }
  return Napi::Number::New(env, static_cast<double>(value));
}

Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint64_t value;
  if (!ArgFd(info, 0, &fd) || !ArgSize(info, 1, "value", &value)) return Napi::Value();
  ssize_t n;
  do {
    n = write(fd, &value, sizeof(value));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    // A full counter already guarantees a wake-up.
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Undefined();
    ThrowErrno(env, errno, "write");
    return Napi::Value();
  }
  return env.Undefined();
}

Napi::Value PollReadable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t* fds;
  size_t length;
  int64_t count;
  int32_t timeoutMs;
  if (!ArgInt32Array(info, 0, "fds", &fds, &length) || !ArgInteger(info, 1, "count", 0, 65536, &count) ||
      !ArgInt32(info, 2, "timeoutMs", &timeoutMs)) {
    return Napi::Value();
  }
  if (uint64_t(count) > length) {
    ThrowTypeError(env, "count must not exceed fds.length");
    return Napi::Value();
  }
  // Optional: which of the fds polled ready (1) or not (0), so the caller reads only those.
  uint8_t* ready = nullptr;
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    size_t readyLength;
    if (!ArgBytes(info, 3, "ready", &ready, &readyLength)) return Napi::Value();
    if (uint64_t(count) > readyLength) {
      ThrowTypeError(env, "count must not exceed ready.length");
      return Napi::Value();
    }
  }
  if (timeoutMs < -1) {
    ThrowTypeError(env, "timeoutMs must be -1 or a non-negative integer");
    return Napi::Value();
  }
  constexpr size_t kInline = 64;
  pollfd inlineFds[kInline];
  std::vector<pollfd> heapFds;
  pollfd* p = inlineFds;
  if (size_t(count) > kInline) {
    heapFds.resize(size_t(count));
    p = heapFds.data();
  }
  for (size_t i = 0; i < size_t(count); i++) {
    p[i].fd = fds[i];  // a negative fd is ignored by poll(2)
    p[i].events = POLLIN;
    p[i].revents = 0;
  }
  int r = poll(p, nfds_t(count), timeoutMs);
  if (r < 0) {
    // A signal ends the wait early: report "nothing readable", the caller loops.
    if (errno == EINTR) r = 0;
    else {
      ThrowErrno(env, errno, "poll");
      return Napi::Value();
    }
  }
  if (ready != nullptr) {
    for (size_t i = 0; i < size_t(count); i++) ready[i] = p[i].revents != 0 ? 1 : 0;
  }
  // poll(2) counts fds with any event, errors and hang-ups included, so the
  // caller goes and reads them instead of waiting again.
  return Napi::Number::New(env, r);
}

}  // namespace

void InitEventfd(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfd", Napi::Function::New(env, Eventfd, "eventfd"));
  exports.Set("eventfdRead", Napi::Function::New(env, EventfdRead, "eventfdRead"));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventfdWrite, "eventfdWrite"));
  exports.Set("pollReadable", Napi::Function::New(env, PollReadable, "pollReadable"));
}

}  // namespace vhostd
