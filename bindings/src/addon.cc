// Module entry of vhostd_native: thin numeric syscall wrappers for vhostd
// (contract: bindings/native.d.ts). Context-aware: loaded once per napi_env,
// so it works in worker threads; the only process-wide state is the mmap
// registry in memory.cc (mutex-protected).
#include <napi.h>

#include "addon.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vhostd::InitSocket(env, exports);
  vhostd::InitWatcher(env, exports);
  vhostd::InitMemory(env, exports);
  vhostd::InitEventfd(env, exports);
  vhostd::InitAffinity(env, exports);
  vhostd::InitExec(env, exports);
  vhostd::InitFile(env, exports);
  vhostd::InitUring(env, exports);
  vhostd::InitAio(env, exports);
  vhostd::InitFdFlags(env, exports);
  vhostd::InitLock(env, exports);
  vhostd::InitLayout(env, exports);
  vhostd::InitRbd(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(vhostd_native, Init)
