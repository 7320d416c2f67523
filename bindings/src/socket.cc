// Unix stream sockets with SCM_RIGHTS fd passing, plus the plain fd calls
// (read, write, close, fstat, dup). Every fd created here is O_CLOEXEC and
// every socket O_NONBLOCK; "would block" is returned as -1, other failures
// throw errno errors. Stateless: callable from any thread.
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "file.h"
#include "layout.h"

namespace vhostd {
namespace {

bool WouldBlock(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

// Runs a byte-moving syscall, retrying on EINTR.
template <typename Call>
ssize_t RetryEintr(Call call) {
  ssize_t n;
  do {
    n = call();
  } while (n < 0 && errno == EINTR);
  return n;
}

// The JS result of a byte-moving syscall that returned n: bytes moved, -1 for
// "would block", or an exception naming `syscall`.
Napi::Value ByteCount(Napi::Env env, ssize_t n, const char* syscall) {
  if (n >= 0) return Napi::Number::New(env, static_cast<double>(n));
  if (WouldBlock(errno)) return Napi::Number::New(env, -1);
  ThrowErrno(env, errno, syscall);
  return Napi::Value();
}

// Fills a sockaddr_un for `path`; false (errno ENAMETOOLONG) when it does not fit.
bool MakeAddress(const std::string& path, sockaddr_un* addr) {
  memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty()) {
    errno = EINVAL;
    return false;
  }
  if (path.size() >= sizeof(addr->sun_path)) {
    errno = ENAMETOOLONG;
    return false;
  }
  memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

// Listens on `path` with permission bits `mode` (and, when `gid` is given and
// not -1, group `gid`). The socket is bound under a temporary name beside
// `path`, given its group and mode, and linked into place, so no one can
// connect through a socket file whose owner or mode is not yet the final one
// (a path too long for the temporary name is bound in place, as before). The
// temporary name is hard-linked to `path` (never replacing a file there) and
// then removed.
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  int32_t backlog;
  int64_t mode;
  int64_t gid = -1;
  if (!ArgCString(info, 0, "path", &path) || !ArgInt32(info, 1, "backlog", &backlog) ||
      !ArgInteger(info, 2, "mode", 0, 07777, &mode)) {
    return Napi::Value();
  }
  if (info.Length() > 3 && !info[3].IsUndefined() && !ArgInteger(info, 3, "gid", -1, 0xfffffffe, &gid)) {
    return Napi::Value();
  }
  sockaddr_un addr;
  if (!MakeAddress(path, &addr)) {
    ThrowErrno(env, errno, "bind");
    return Napi::Value();
  }
  std::string bound = path + ".~" + std::to_string(getpid());
  sockaddr_un tmp;
  if (MakeAddress(bound, &tmp)) {
    unlink(bound.c_str());
    addr = tmp;
  } else {
    bound = path;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket");
    return Napi::Value();
  }
  const char* failed = nullptr;
  bool created = false;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    failed = "bind";
  } else if ((created = true, listen(fd, backlog) != 0)) {
    failed = "listen";
  } else if (gid != -1 && chown(bound.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(gid)) != 0) {
    failed = "chown";
  } else if (chmod(bound.c_str(), static_cast<mode_t>(mode)) != 0) {
    failed = "chmod";
  } else if (bound != path && link(bound.c_str(), path.c_str()) != 0) {
    // link() never replaces: a file at the path is what bind would have refused.
    failed = errno == EEXIST ? (errno = EADDRINUSE, "bind") : "link";
  }
  int err = errno;
  // The temporary name goes either way; the path itself only when we bound it and failed.
  if (created && (bound != path || failed != nullptr)) unlink(bound.c_str());
  if (failed != nullptr) {
    close(fd);
    ThrowErrno(env, err, failed);
    return Napi::Value();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int listenFd;
  if (!ArgFd(info, 0, &listenFd)) return Napi::Value();
  for (;;) {
    int fd = accept4(listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return Napi::Number::New(env, fd);
    // A connection reset before we took it: look at the next one.
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (WouldBlock(errno)) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "accept4");
    return Napi::Value();
  }
}

// Waits for a connect() interrupted by a signal to finish (it goes on in the
// kernel) and returns its result as connect() would.
int FinishInterruptedConnect(int fd) {
  pollfd p = {fd, POLLOUT, 0};
  int r;
  do {
    r = poll(&p, 1, -1);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return -1;
  int soError = 0;
  socklen_t len = sizeof(soError);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len) != 0) return -1;
  if (soError != 0) {
    errno = soError;
    return -1;
  }
  return 0;
}

Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgCString(info, 0, "path", &path)) return Napi::Value();
  sockaddr_un addr;
  if (!MakeAddress(path, &addr)) {
    ThrowErrno(env, errno, "connect");
    return Napi::Value();
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket");
    return Napi::Value();
  }
  int r = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  if (r != 0 && errno == EINTR) r = FinishInterruptedConnect(fd);
  if (r != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "connect");
    return Napi::Value();
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "fcntl");
    return Napi::Value();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
    ThrowErrno(env, errno, "socketpair");
    return Napi::Value();
  }
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(uint32_t(0), Napi::Number::New(env, fds[0]));
  result.Set(uint32_t(1), Napi::Number::New(env, fds[1]));
  return result;
}

// Control buffer big enough for kMaxFds descriptors, suitably aligned.
union ControlBuffer {
  char buf[CMSG_SPACE(sizeof(int) * kMaxFds)];
  cmsghdr align;
};

Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* data;
  size_t len;
  int32_t* fdsOut;
  size_t fdsCount;
  if (!ArgFd(info, 0, &fd) || !ArgBytes(info, 1, "buf", &data, &len) ||
      !ArgInt32Array(info, 2, "fdsOut", &fdsOut, &fdsCount)) {
    return Napi::Value();
  }
  if (fdsCount < kMaxFds) {
    ThrowTypeError(env, "fdsOut must have at least 8 elements");
    return Napi::Value();
  }
  for (size_t i = 0; i < fdsCount; i++) fdsOut[i] = -1;

  ControlBuffer control;
  memset(&control, 0, sizeof(control));
  iovec iov = {data, len};
  msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);

  ssize_t n = RetryEintr([&] { return recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); });
  if (n < 0) return ByteCount(env, n, "recvmsg");

  // Collect every SCM_RIGHTS fd the kernel installed, whatever happens next,
  // so that none leaks.
  int received[kMaxFds];
  size_t count = 0;
  bool tooMany = false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) continue;
    size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* p = CMSG_DATA(c);
    for (size_t i = 0; i < nfds; i++) {
      int got;
      memcpy(&got, p + i * sizeof(int), sizeof(int));
      if (count < kMaxFds) {
        received[count++] = got;
      } else {
        close(got);  // cannot happen with our control buffer size; never leak
        tooMany = true;
      }
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0 || tooMany) {
    for (size_t i = 0; i < count; i++) close(received[i]);
    ThrowErrno(env, EMSGSIZE, "recvmsg");
    return Napi::Value();
  }
  for (size_t i = 0; i < count; i++) fdsOut[i] = received[i];
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value SendMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return Napi::Value();

  // The fds array is read first: its getters may run JS, which could detach
  // `buf` after we took its pointer.
  int fds[kMaxFds];
  size_t nfds = 0;
  if (info.Length() > 2 && !info[2].IsNull() && !info[2].IsUndefined()) {
    if (!info[2].IsArray()) {
      ThrowTypeError(env, "fds must be an array of numbers, null or undefined");
      return Napi::Value();
    }
    Napi::Array array = info[2].As<Napi::Array>();
    uint32_t length = array.Length();
    if (length > kMaxFds) {
      ThrowTypeError(env, "fds must have at most 8 elements");
      return Napi::Value();
    }
    for (uint32_t i = 0; i < length; i++) {
      Napi::Value v = array.Get(i);
      if (env.IsExceptionPending()) return Napi::Value();
      double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
      if (!(d == trunc(d)) || d < 0 || d > INT32_MAX) {
        ThrowTypeError(env, "fds must contain non-negative integer fds");
        return Napi::Value();
      }
      fds[nfds++] = static_cast<int>(d);
    }
  }
  uint8_t* data;
  size_t len;
  if (!ArgBytes(info, 1, "buf", &data, &len)) return Napi::Value();

  ControlBuffer control;
  memset(&control, 0, sizeof(control));
  iovec iov = {data, len};
  msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }

  return ByteCount(env, RetryEintr([&] { return sendmsg(fd, &msg, MSG_NOSIGNAL); }), "sendmsg");
}

Napi::Value Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* data;
  size_t len;
  if (!ArgFd(info, 0, &fd) || !ArgBytes(info, 1, "buf", &data, &len)) return Napi::Value();
  return ByteCount(env, RetryEintr([&] { return read(fd, data, len); }), "read");
}

Napi::Value Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* data;
  size_t len;
  if (!ArgFd(info, 0, &fd) || !ArgBytes(info, 1, "buf", &data, &len)) return Napi::Value();
  return ByteCount(env, RetryEintr([&] { return write(fd, data, len); }), "write");
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return Napi::Value();
  if (fd == -1) return env.Undefined();
  // Linux releases the fd even when close() reports EINTR: never retry.
  if (close(fd) != 0 && errno != EINTR) {
    ThrowErrno(env, errno, "close");
    return Napi::Value();
  }
  return env.Undefined();
}

Napi::Value Fstat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return Napi::Value();
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ThrowErrno(env, errno, "fstat");
    return Napi::Value();
  }
  double sizeBytes = static_cast<double>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    // st_size is 0 for block devices: ask the device for its size.
    uint64_t bytes = 0;
    if (ioctl(fd, BLKGETSIZE64, &bytes) != 0) {
      ThrowErrno(env, errno, "ioctl");
      return Napi::Value();
    }
    sizeBytes = static_cast<double>(bytes);
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("sizeBytes", Napi::Number::New(env, sizeBytes));
  result.Set("type", Napi::String::New(env, FileTypeName(st.st_mode)));
  result.Set("blockSize", Napi::Number::New(env, static_cast<double>(st.st_blksize)));
  return result;
}

// Sends `data` as one datagram to the Unix datagram socket at `path` (an
// abstract address when it starts with '@', as systemd's NOTIFY_SOCKET may):
// what sd_notify(3) does. Returns the bytes sent; throws errno errors.
Napi::Value UnixSendDatagram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgCString(info, 0, "path", &path)) return Napi::Value();
  if (info.Length() < 2 || !info[1].IsBuffer()) {
    Napi::TypeError::New(env, "data must be a Buffer").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  Napi::Buffer<uint8_t> data = info[1].As<Napi::Buffer<uint8_t>>();
  sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  if (path.size() < 2 || path.size() >= sizeof(addr.sun_path)) {
    ThrowErrno(env, path.size() < 2 ? EINVAL : ENAMETOOLONG, "sendto");
    return Napi::Value();
  }
  memcpy(addr.sun_path, path.data(), path.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (path[0] == '@') {
    addr.sun_path[0] = '\0';  // abstract namespace: the length, not a NUL, ends the name
  } else {
    len += 1;
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket");
    return Napi::Value();
  }
  ssize_t n = RetryEintr([&] {
    return sendto(fd, data.Data(), data.Length(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len);
  });
  int err = errno;
  close(fd);
  if (n < 0) {
    ThrowErrno(env, err, "sendto");
    return Napi::Value();
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return Napi::Value();
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    ThrowErrno(env, errno, "fcntl");
    return Napi::Value();
  }
  return Napi::Number::New(env, copy);
}

}  // namespace

void InitSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept, "unixAccept"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
  exports.Set("recvMsg", Napi::Function::New(env, RecvMsg, "recvMsg"));
  exports.Set("sendMsg", Napi::Function::New(env, SendMsg, "sendMsg"));
  exports.Set("read", Napi::Function::New(env, Read, "read"));
  exports.Set("write", Napi::Function::New(env, Write, "write"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("fstat", Napi::Function::New(env, Fstat, "fstat"));
  exports.Set("dup", Napi::Function::New(env, Dup, "dup"));
  exports.Set("unixSendDatagram", Napi::Function::New(env, UnixSendDatagram, "unixSendDatagram"));
}

}  // namespace vhostd
