// Exports the layout constants of layout.h (and the libuv poll bits and the
// FileOp codes) as `exports.layout`, a frozen object of numbers, so that
// bindings/index.ts can check its own copy against what this build was
// compiled with.
#include <uv.h>

#include "addon.h"
#include "file.h"
#include "layout.h"

namespace vhostd {

void InitLayout(Napi::Env env, Napi::Object exports) {
  Napi::Object layout = Napi::Object::New(env);
  auto set = [&](const char* name, double value) { layout.Set(name, Napi::Number::New(env, value)); };
  set("FILE_REQ_WORDS", double(kReqWords));
  set("FILE_IOV_WORDS", double(kIovWords));
  set("FILE_COMPLETION_WORDS", double(kCompletionWords));
  set("FILE_BUFFER_SLOTS", double(kMaxBufferSlots));
  set("FILE_SLOTS", double(kMaxFileSlots));
  set("FILE_MAX_IOV_PER_REQ", double(kMaxIovLimit));
  set("FILE_OP_READV", double(kOpReadv));
  set("FILE_OP_WRITEV", double(kOpWritev));
  set("FILE_OP_DATASYNC", double(kOpDatasync));
  set("FILE_OP_FALLOCATE", double(kOpFallocate));
  set("FILE_OP_BLK_DISCARD", double(kOpBlkDiscard));
  set("FILE_OP_BLK_ZEROOUT", double(kOpBlkZeroout));
  set("FILE_OP_PUNCH_ALLOC", double(kOpPunchAlloc));
  set("FILE_OP_COUNT", double(kOpCount));
  set("MAX_FDS", double(kMaxFds));
  set("MAX_CPUS", double(kMaxCpus));
  set("POLL_READABLE", double(UV_READABLE));
  set("POLL_WRITABLE", double(UV_WRITABLE));
  set("POLL_DISCONNECT", double(UV_DISCONNECT));
  layout.Freeze();
  exports.Set("layout", layout);
}

}  // namespace vhostd
