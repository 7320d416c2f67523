// FdWatcher: readiness of one fd on the calling environment's libuv loop
// (uv_poll on napi_get_uv_event_loop, so it works in worker threads). Owned by
// the JS thread that created it; every method must be called on that thread.
//
// Lifetime: the uv_poll_t lives in a separate heap block (Poll) that is freed
// only by uv_close's callback, so libuv never sees freed memory even when the
// JS object is collected first. While started, the JS object holds a strong
// reference to itself (the loop keeps it alive, like a socket). A per-watcher
// async cleanup hook closes the handle when the environment is torn down
// (worker exit), and node waits for uv_close to finish before it closes the
// loop.
#include <napi.h>
#include <uv.h>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace vhostd {
namespace {

class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit FdWatcher(const Napi::CallbackInfo& info);
  ~FdWatcher() override;

 private:
  // The libuv handle and what survives the JS object until uv_close is done.
  struct Poll {
    uv_poll_t handle;
    FdWatcher* owner = nullptr;  // nullptr once closing
    napi_async_cleanup_hook_handle hook = nullptr;
    bool closing = false;
  };

  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  void StopPolling();
  void Deliver(int status, int events);
  void DestroyAsyncContext();

  // Detaches `poll` from its owner and closes its handle; idempotent.
  static void BeginClose(Poll* poll);
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnClosed(uv_handle_t* handle);
  static void OnEnvCleanup(napi_async_cleanup_hook_handle hook, void* arg);

  Poll* poll_ = nullptr;  // nullptr before init succeeds and after close
  bool started_ = false;  // holds a strong reference to the JS object while true
  bool inCallback_ = false;
  bool destroyContextAfterCallback_ = false;
  Napi::FunctionReference callback_;
  napi_async_context asyncContext_ = nullptr;
};

constexpr int kAllEvents = UV_READABLE | UV_WRITABLE | UV_DISCONNECT | UV_PRIORITIZED;

Napi::Function FdWatcher::Define(Napi::Env env) {
  return DefineClass(env, "FdWatcher",
                     {
                         InstanceMethod<&FdWatcher::Start>("start"),
                         InstanceMethod<&FdWatcher::Stop>("stop"),
                         InstanceMethod<&FdWatcher::Close>("close"),
                     });
}

FdWatcher::FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return;
  if (info.Length() < 2 || !info[1].IsFunction()) {
    ThrowTypeError(env, "callback must be a function");
    return;
  }
  if (fd < 0) {
    ThrowErrno(env, EBADF, "uv_poll_init");
    return;
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    Napi::Error::New(env, "FdWatcher: no event loop").ThrowAsJavaScriptException();
    return;
  }
  napi_value resourceName = Napi::String::New(env, "vhostd:FdWatcher");
  if (napi_async_init(env, info.This(), resourceName, &asyncContext_) != napi_ok) {
    asyncContext_ = nullptr;
    if (!env.IsExceptionPending()) Napi::Error::New(env, "FdWatcher: napi_async_init failed").ThrowAsJavaScriptException();
    return;
  }
  Poll* poll = new Poll();
  int r = uv_poll_init(loop, &poll->handle, fd);
  if (r != 0) {
    delete poll;  // libuv did not register an uninitialized handle
    ThrowErrno(env, -r, "uv_poll_init");
    return;
  }
  poll->handle.data = poll;
  poll->owner = this;
  if (napi_add_async_cleanup_hook(env, OnEnvCleanup, poll, &poll->hook) != napi_ok) {
    poll->hook = nullptr;
    BeginClose(poll);
    if (!env.IsExceptionPending()) Napi::Error::New(env, "FdWatcher: cannot add a cleanup hook").ThrowAsJavaScriptException();
    return;
  }
  poll_ = poll;
  callback_ = Napi::Persistent(info[1].As<Napi::Function>());
}

FdWatcher::~FdWatcher() {
  if (poll_ != nullptr) {
    Poll* poll = poll_;
    poll_ = nullptr;
    BeginClose(poll);
  }
  DestroyAsyncContext();
}

void FdWatcher::DestroyAsyncContext() {
  if (asyncContext_ == nullptr) return;
  if (inCallback_) {
    destroyContextAfterCallback_ = true;
    return;
  }
  napi_async_destroy(Env(), asyncContext_);
  asyncContext_ = nullptr;
}

Napi::Value FdWatcher::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t events;
  if (!ArgInteger(info, 0, "events", 0, kAllEvents, &events)) return Napi::Value();
  if ((events & ~int64_t(kAllEvents)) != 0) {
    ThrowTypeError(env, "events must be a combination of PollEvents bits");
    return Napi::Value();
  }
  if (poll_ == nullptr) {
    ThrowErrno(env, EBADF, "uv_poll_start");  // closed
    return Napi::Value();
  }
  if (events == 0) {
    StopPolling();
    return env.Undefined();
  }
  int r = uv_poll_start(&poll_->handle, static_cast<int>(events), OnPoll);
  if (r != 0) {
    ThrowErrno(env, -r, "uv_poll_start");
    return Napi::Value();
  }
  if (!started_) {
    started_ = true;
    Ref();
  }
  return env.Undefined();
}

void FdWatcher::StopPolling() {
  if (poll_ != nullptr) uv_poll_stop(&poll_->handle);
  if (started_) {
    started_ = false;
    Unref();
  }
}

Napi::Value FdWatcher::Stop(const Napi::CallbackInfo& info) {
  StopPolling();
  return info.Env().Undefined();
}

Napi::Value FdWatcher::Close(const Napi::CallbackInfo& info) {
  if (poll_ != nullptr) {
    StopPolling();
    Poll* poll = poll_;
    poll_ = nullptr;
    BeginClose(poll);
    callback_.Reset();
    DestroyAsyncContext();
  }
  return info.Env().Undefined();
}

void FdWatcher::BeginClose(Poll* poll) {
  if (poll->closing) return;
  poll->closing = true;
  poll->owner = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&poll->handle), OnClosed);
}

void FdWatcher::OnClosed(uv_handle_t* handle) {
  Poll* poll = static_cast<Poll*>(handle->data);
  // Removing the hook also tells node that a pending teardown may go on.
  if (poll->hook != nullptr) napi_remove_async_cleanup_hook(poll->hook);
  delete poll;
}

void FdWatcher::OnEnvCleanup(napi_async_cleanup_hook_handle /*hook*/, void* arg) {
  Poll* poll = static_cast<Poll*>(arg);
  // The environment is going away: no JS runs any more. Forget the owner and
  // close; OnClosed removes the hook, which lets node finish the teardown.
  if (poll->owner != nullptr) poll->owner->poll_ = nullptr;
  BeginClose(poll);
}

void FdWatcher::OnPoll(uv_poll_t* handle, int status, int events) {
  Poll* poll = static_cast<Poll*>(handle->data);
  if (poll->owner != nullptr) poll->owner->Deliver(status, events);
}

void FdWatcher::Deliver(int status, int events) {
  Napi::Env env = Env();
  if (callback_.IsEmpty()) return;
  Napi::HandleScope scope(env);
  napi_value argv[2] = {Napi::Number::New(env, status), Napi::Number::New(env, events)};
  napi_value result;
  inCallback_ = true;
  // MakeCallback semantics: async hooks see the call, and the microtask queue
  // (promise reactions) and process.nextTick queue run when it returns.
  napi_status callStatus = napi_make_callback(env, asyncContext_, Value(), callback_.Value(), 2, argv, &result);
  inCallback_ = false;
  if (destroyContextAfterCallback_) {
    destroyContextAfterCallback_ = false;
    DestroyAsyncContext();
  }
  if (callStatus != napi_ok || env.IsExceptionPending()) {
    // An exception thrown by the callback: report it as uncaught, as node
    // does for its own handles.
    napi_value error;
    if (napi_get_and_clear_last_exception(env, &error) == napi_ok) napi_fatal_exception(env, error);
  }
}

}  // namespace

void InitWatcher(Napi::Env env, Napi::Object exports) {
  exports.Set("FdWatcher", FdWatcher::Define(env));
}

}  // namespace vhostd
