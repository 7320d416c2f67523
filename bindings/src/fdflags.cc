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

}  // namespace

void InitFdFlags(Napi::Env env, Napi::Object exports) {
  exports.Set("fdGetFlags", Napi::Function::New(env, FdGetFlags, "fdGetFlags"));
  exports.Set("fdSetNonBlocking", Napi::Function::New(env, FdSetNonBlocking, "fdSetNonBlocking"));
}

}  // namespace vhostd
