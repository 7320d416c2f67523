// Thread placement: pin the calling OS thread to a CPU, report the current
// CPU, the kernel thread id and the CPUs the process may use. Each call acts
// on the calling thread (main thread or worker).
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "layout.h"

namespace vhostd {
namespace {

Napi::Value PinThread(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t cpu;
  if (!ArgInteger(info, 0, "cpu", 0, kMaxCpus - 1, &cpu)) return Napi::Value();
  cpu_set_t* set = CPU_ALLOC(kMaxCpus);
  if (set == nullptr) {
    ThrowErrno(env, ENOMEM, "pthread_setaffinity_np");
    return Napi::Value();
  }
  size_t size = CPU_ALLOC_SIZE(kMaxCpus);
  CPU_ZERO_S(size, set);
  CPU_SET_S(size_t(cpu), size, set);
  int err = pthread_setaffinity_np(pthread_self(), size, set);
  CPU_FREE(set);
  if (err != 0) {
    ThrowErrno(env, err, "pthread_setaffinity_np");
    return Napi::Value();
  }
  return env.Undefined();
}

Napi::Value CurrentCpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int cpu = sched_getcpu();
  if (cpu < 0) {
    ThrowErrno(env, errno, "sched_getcpu");
    return Napi::Value();
  }
  return Napi::Number::New(env, cpu);
}

Napi::Value ThreadId(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(gettid()));
}

Napi::Value AllowedCpus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  cpu_set_t* set = CPU_ALLOC(kMaxCpus);
  if (set == nullptr) {
    ThrowErrno(env, ENOMEM, "sched_getaffinity");
    return Napi::Value();
  }
  size_t size = CPU_ALLOC_SIZE(kMaxCpus);
  CPU_ZERO_S(size, set);
  // The process's mask is the main thread's (tid == pid): a worker that has
  // pinned itself still sees every CPU the process may use.
  if (sched_getaffinity(getpid(), size, set) != 0) {
    int err = errno;
    CPU_FREE(set);
    ThrowErrno(env, err, "sched_getaffinity");
    return Napi::Value();
  }
  Napi::Array result = Napi::Array::New(env);
  uint32_t n = 0;
  for (int cpu = 0; cpu < kMaxCpus; cpu++) {
    if (CPU_ISSET_S(size_t(cpu), size, set)) result.Set(n++, Napi::Number::New(env, cpu));
  }
  CPU_FREE(set);
  return result;
}

// sched_yield() for a busy-polling worker whose outstanding I/O is completed
// by other threads of the process on its own core (librbd's): they get the
// CPU now rather than at the end of the poller's time slice. Returns at once
// when nothing else is runnable there.
Napi::Value YieldCpu(const Napi::CallbackInfo& info) {
  sched_yield();
  return info.Env().Undefined();
}

}  // namespace

void InitAffinity(Napi::Env env, Napi::Object exports) {
  exports.Set("pinThread", Napi::Function::New(env, PinThread, "pinThread"));
  exports.Set("currentCpu", Napi::Function::New(env, CurrentCpu, "currentCpu"));
  exports.Set("threadId", Napi::Function::New(env, ThreadId, "threadId"));
  exports.Set("allowedCpus", Napi::Function::New(env, AllowedCpus, "allowedCpus"));
  exports.Set("yieldCpu", Napi::Function::New(env, YieldCpu, "yieldCpu"));
}

}  // namespace vhostd
