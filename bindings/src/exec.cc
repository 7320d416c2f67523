// execve(2) for the launcher: bin/vhostd.js replaces the node process it was
// started in with one started with the V8 flags vhostd needs (same pid, same
// fds, same environment), since a running isolate's heap limits are fixed.
// Node marks stdin, stdout and stderr close-on-exec at start-up; they are
// the process's stdio, so they are kept open across the exec (and marked
// again if it fails). Returns only on failure, by throwing the errno.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace vhostd {
namespace {

// An array of strings without NUL bytes, for argv or envp.
bool ArgStringList(const Napi::CallbackInfo& info, size_t i, const char* name, std::vector<std::string>* out) {
  if (i >= info.Length() || !info[i].IsArray()) {
    ThrowTypeError(info.Env(), std::string(name) + " must be an array of strings");
    return false;
  }
  Napi::Array arr = info[i].As<Napi::Array>();
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    if (!v.IsString()) {
      ThrowTypeError(info.Env(), std::string(name) + " must be an array of strings");
      return false;
    }
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s.find('\0') != std::string::npos) {
      ThrowTypeError(info.Env(), std::string(name) + " must not contain NUL bytes");
      return false;
    }
    out->push_back(std::move(s));
  }
  return true;
}

std::vector<char*> CStrings(std::vector<std::string>& list) {
  std::vector<char*> out;
  out.reserve(list.size() + 1);
  for (std::string& s : list) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

Napi::Value Execve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  std::vector<std::string> argv;
  std::vector<std::string> envp;
  if (!ArgCString(info, 0, "path", &path) || !ArgStringList(info, 1, "argv", &argv) ||
      !ArgStringList(info, 2, "env", &envp)) {
    return Napi::Value();
  }
  std::vector<char*> cargv = CStrings(argv);
  std::vector<char*> cenv = CStrings(envp);
  int stdioFlags[3];
  for (int fd = 0; fd < 3; fd++) {
    stdioFlags[fd] = fcntl(fd, F_GETFD);
    if (stdioFlags[fd] >= 0) fcntl(fd, F_SETFD, stdioFlags[fd] & ~FD_CLOEXEC);
  }
  execve(path.c_str(), cargv.data(), cenv.data());
  int err = errno;
  for (int fd = 0; fd < 3; fd++) {
    if (stdioFlags[fd] >= 0) fcntl(fd, F_SETFD, stdioFlags[fd]);
  }
  ThrowErrno(env, err, "execve");
  return Napi::Value();
}

}  // namespace

void InitExec(Napi::Env env, Napi::Object exports) {
  exports.Set("execve", Napi::Function::New(env, Execve, "execve"));
}

}  // namespace vhostd
