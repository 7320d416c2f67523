// Error helpers: see errors.h.
#include "errors.h"

#include <string.h>

#include <string>

namespace vhostd {

void ThrowErrno(Napi::Env env, int err, const char* syscall) {
  // strerrorname_np / strerrordesc_np (glibc >= 2.32) are thread-safe: they
  // return static strings, unlike strerror().
  const char* name = strerrorname_np(err);
  const char* desc = strerrordesc_np(err);
  std::string code = name != nullptr ? name : "E" + std::to_string(err);
  std::string message = code + ": " + (desc != nullptr ? desc : "unknown error") + ", " + syscall;
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("syscall", Napi::String::New(env, syscall));
  error.ThrowAsJavaScriptException();
}

void ThrowTypeError(Napi::Env env, const std::string& message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
}

}  // namespace vhostd
