// Argument readers shared by the addon's functions. Each returns false after
// throwing a TypeError (argument missing, wrong type, or out of range), so a
// wrong argument never reaches a syscall and never crashes the process.
// Stateless; header-only.
#ifndef VHOSTD_ARGS_H_
#define VHOSTD_ARGS_H_

#include <napi.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <string>

#include "errors.h"

namespace vhostd {

// Largest integer a double holds exactly (2^53). Sizes and offsets above it
// are refused.
constexpr double kMaxExactInteger = 9007199254740992.0;

inline bool ArgNumber(const Napi::CallbackInfo& info, size_t i, const char* name, double* out) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    ThrowTypeError(info.Env(), std::string(name) + " must be a number");
    return false;
  }
  *out = info[i].As<Napi::Number>().DoubleValue();
  return true;
}

// An integer in [min, max] (both within int64 and exactly representable).
inline bool ArgInteger(const Napi::CallbackInfo& info, size_t i, const char* name, double min, double max,
                       int64_t* out) {
  double d;
  if (!ArgNumber(info, i, name, &d)) return false;
  if (!(d == trunc(d)) || d < min || d > max) {
    ThrowTypeError(info.Env(), std::string(name) + " must be an integer in [" + std::to_string(int64_t(min)) + ", " +
                                   std::to_string(int64_t(max)) + "]");
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

inline bool ArgInt32(const Napi::CallbackInfo& info, size_t i, const char* name, int32_t* out) {
  int64_t v;
  if (!ArgInteger(info, i, name, double(INT32_MIN), double(INT32_MAX), &v)) return false;
  *out = static_cast<int32_t>(v);
  return true;
}

// A file descriptor: any int32 (the kernel answers EBADF for bad ones).
inline bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* out) {
  int32_t v;
  if (!ArgInt32(info, i, "fd", &v)) return false;
  *out = v;
  return true;
}

// A byte count or offset: an integer in [0, 2^53].
inline bool ArgSize(const Napi::CallbackInfo& info, size_t i, const char* name, uint64_t* out) {
  int64_t v;
  if (!ArgInteger(info, i, name, 0, kMaxExactInteger, &v)) return false;
  *out = static_cast<uint64_t>(v);
  return true;
}

inline bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name, bool* out) {
  if (i >= info.Length() || !info[i].IsBoolean()) {
    ThrowTypeError(info.Env(), std::string(name) + " must be a boolean");
    return false;
  }
  *out = info[i].As<Napi::Boolean>().Value();
  return true;
}

// A string without NUL characters (it goes to a C API).
inline bool ArgCString(const Napi::CallbackInfo& info, size_t i, const char* name, std::string* out) {
  if (i >= info.Length() || !info[i].IsString()) {
    ThrowTypeError(info.Env(), std::string(name) + " must be a string");
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
  if (out->find('\0') != std::string::npos) {
    ThrowTypeError(info.Env(), std::string(name) + " must not contain NUL characters");
    return false;
  }
  return true;
}

// A typed array of the given type: its data pointer and element count.
template <typename T>
inline bool ArgTypedArray(const Napi::CallbackInfo& info, size_t i, const char* name, napi_typedarray_type type,
                          const char* typeName, T** data, size_t* count) {
  napi_typedarray_type actual;
  size_t length = 0;
  void* raw = nullptr;
  if (i >= info.Length() || !info[i].IsTypedArray() ||
      napi_get_typedarray_info(info.Env(), info[i], &actual, &length, &raw, nullptr, nullptr) != napi_ok ||
      actual != type) {
    ThrowTypeError(info.Env(), std::string(name) + " must be a " + typeName);
    return false;
  }
  // napi_get_typedarray_info already adds the view's byte offset.
  *data = static_cast<T*>(raw);
  *count = raw != nullptr ? length : 0;  // a detached view has no data
  return true;
}

inline bool ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name, uint8_t** data, size_t* len) {
  return ArgTypedArray<uint8_t>(info, i, name, napi_uint8_array, "Uint8Array", data, len);
}

inline bool ArgInt32Array(const Napi::CallbackInfo& info, size_t i, const char* name, int32_t** data, size_t* count) {
  return ArgTypedArray<int32_t>(info, i, name, napi_int32_array, "Int32Array", data, count);
}

}  // namespace vhostd

#endif  // VHOSTD_ARGS_H_
