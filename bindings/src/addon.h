// Registration entry points of the addon's source files: each adds its
// functions (or classes) to the module's exports. Called once per napi_env
// (main thread and every worker that loads the addon).
#ifndef VHOSTD_ADDON_H_
#define VHOSTD_ADDON_H_

#include <napi.h>

namespace vhostd {

void InitSocket(Napi::Env env, Napi::Object exports);
void InitWatcher(Napi::Env env, Napi::Object exports);
void InitMemory(Napi::Env env, Napi::Object exports);
void InitEventfd(Napi::Env env, Napi::Object exports);
void InitAffinity(Napi::Env env, Napi::Object exports);
void InitExec(Napi::Env env, Napi::Object exports);
void InitFile(Napi::Env env, Napi::Object exports);
void InitUring(Napi::Env env, Napi::Object exports);
void InitAio(Napi::Env env, Napi::Object exports);
void InitFdFlags(Napi::Env env, Napi::Object exports);
void InitLock(Napi::Env env, Napi::Object exports);
void InitLayout(Napi::Env env, Napi::Object exports);
void InitRbd(Napi::Env env, Napi::Object exports);

}  // namespace vhostd

#endif  // VHOSTD_ADDON_H_
