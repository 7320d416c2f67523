// Error helpers of the vhostd native addon: every failing syscall becomes a JS
// Error carrying `code` (errno name, e.g. 'EBADF'), `errno` (positive number)
// and `syscall`, and every malformed argument becomes a TypeError.
// Stateless; safe on any thread that owns the napi_env it is given.
#ifndef VHOSTD_ERRORS_H_
#define VHOSTD_ERRORS_H_

#include <napi.h>

#include <string>

namespace vhostd {

// Throws (as a pending JS exception) an Error for errno value `err` raised by
// `syscall`. Callers return right after.
void ThrowErrno(Napi::Env env, int err, const char* syscall);

// Throws a TypeError with `message`.
void ThrowTypeError(Napi::Env env, const std::string& message);

}  // namespace vhostd

#endif  // VHOSTD_ERRORS_H_
