// Advisory whole-file write locks (fcntl F_SETLK), as SPDK's per-core lock
// files use them: the lock belongs to the process and lasts until the process
// exits or closes any fd of that file. Safe on any thread.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace vhostd {
namespace {

// lockFile(fd): try to take a write lock on the whole file without waiting.
// Returns 0 when taken; when another process holds a conflicting lock, that
// process's pid (F_GETLK), or -1 when it cannot be told (it let go meanwhile).
Napi::Value LockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return Napi::Value();
  struct flock fl;
  memset(&fl, 0, sizeof(fl));
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 0;  // the whole file, however long it grows
  int rc;
  do {
    rc = fcntl(fd, F_SETLK, &fl);
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) return Napi::Number::New(env, 0);
  if (errno != EACCES && errno != EAGAIN) {
    ThrowErrno(env, errno, "fcntl");
    return Napi::Value();
  }
  memset(&fl, 0, sizeof(fl));
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_GETLK, &fl) < 0) {
    ThrowErrno(env, errno, "fcntl");
    return Napi::Value();
  }
  return Napi::Number::New(env, fl.l_type == F_UNLCK ? -1 : double(fl.l_pid));
}

}  // namespace

void InitLock(Napi::Env env, Napi::Object exports) {
  exports.Set("lockFile", Napi::Function::New(env, LockFile, "lockFile"));
}

}  // namespace vhostd
