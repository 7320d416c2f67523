// File status flags of an fd a peer sent us (fcntl F_GETFL / F_SETFL): the
// reactor makes call and kick eventfds (or pipes) nonblocking when it adopts
// them, so that no thread ever blocks writing one. Stateless: any thread.
#include <errno.h>
#include <fcntl.h>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace vhostd {
namespace {

int GetFlags(int fd) {
  int flags;
  do {
    flags = fcntl(fd, F_GETFL);
  } while (flags < 0 && errno == EINTR);
  return flags;
}

// fdGetFlags(fd) -> the F_GETFL word (O_ACCMODE, O_NONBLOCK, O_APPEND...).
Napi::Value FdGetFlags(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return Napi::Value();
  int flags = GetFlags(fd);
  if (flags < 0) {
    ThrowErrno(env, errno, "fcntl");
    return Napi::Value();
  }
  return Napi::Number::New(env, flags);
}

// fdSetNonBlocking(fd) -> true when O_NONBLOCK was newly set, false when it already was.
Napi::Value FdSetNonBlocking(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return Napi::Value();
  int flags = GetFlags(fd);
  if (flags < 0) {
    ThrowErrno(env, errno, "fcntl");
    return Napi::Value();
  }
  if ((flags & O_NONBLOCK) != 0) return Napi::Boolean::New(env, false);
  int r;
  do {
    r = fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    ThrowErrno(env, errno, "fcntl");
    return Napi::Value();
  }
  return Napi::Boolean::New(env, true);
}

// fdGetSeals(fd) -> the F_GET_SEALS word (F_SEAL_SEAL 1, SHRINK 2, GROW 4, WRITE 8), or -1 when the
// file cannot carry seals (EINVAL: not a memfd/shmem file). Guest memory sealed against shrinking
// cannot be truncated under a mapping (a SIGBUS in the engine): issue #15 item 4.
Napi::Value FdGetSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return Napi::Value();
  int seals;
  do {
    seals = fcntl(fd, F_GET_SEALS);
  } while (seals < 0 && errno == EINTR);
  if (seals < 0) {
    if (errno == EINVAL) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "fcntl");
    return Napi::Value();
  }
  return Napi::Number::New(env, seals);
}

// fdAddSeals(fd, seals): fcntl F_ADD_SEALS (a memfd made with MFD_ALLOW_SEALING).
Napi::Value FdAddSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int32_t seals;
  if (!ArgFd(info, 0, &fd) || !ArgInt32(info, 1, "seals", &seals)) return Napi::Value();
  int r;
  do {
    r = fcntl(fd, F_ADD_SEALS, seals);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    ThrowErrno(env, errno, "fcntl");
    return Napi::Value();
  }
  return env.Undefined();
}

}  // namespace

void InitFdFlags(Napi::Env env, Napi::Object exports) {
  exports.Set("fdGetSeals", Napi::Function::New(env, FdGetSeals, "fdGetSeals"));
  exports.Set("fdAddSeals", Napi::Function::New(env, FdAddSeals, "fdAddSeals"));
  exports.Set("fdGetFlags", Napi::Function::New(env, FdGetFlags, "fdGetFlags"));
  exports.Set("fdSetNonBlocking", Napi::Function::New(env, FdSetNonBlocking, "fdSetNonBlocking"));
}

}  // namespace vhostd
