// Module entry of vhostd_perf, the native vhost-user-blk load generator
// (TypeScript side: bench/perf/perf.ts). `run(options)` validates the options
// on the JS thread, starts one std::thread (the generator thread, which pins
// itself and runs the whole job), and returns a Promise; the thread hands its
// result back through a thread-safe function, so the event loop never blocks.
// Context-aware: no process-wide state.
#include <napi.h>

#include <cmath>
#include <string>
#include <thread>

#include "crc32c.h"
#include "job.h"

namespace {

using vhostd_perf::JobOptions;
using vhostd_perf::JobResult;
using vhostd_perf::Pattern;
using vhostd_perf::VerifyMode;

struct RunContext {
  explicit RunContext(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise::Deferred deferred;
  Napi::ThreadSafeFunction tsfn;
  JobOptions options;
  JobResult result;
  std::thread thread;
};

// Reads options[name] as an integer in [min, max]; absent or undefined keeps
// *out. Returns false with a pending TypeError otherwise.
bool GetInteger(Napi::Object obj, const char* name, double min, double max, double* out) {
  Napi::Env env = obj.Env();
  Napi::Value v = obj.Get(name);
  if (env.IsExceptionPending()) return false;
  if (v.IsUndefined()) return true;
  if (!v.IsNumber()) {
    Napi::TypeError::New(env, std::string("options.") + name + " must be a number").ThrowAsJavaScriptException();
    return false;
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < min || d > max) {
    Napi::TypeError::New(env, std::string("options.") + name + " must be an integer in [" +
                                  std::to_string(static_cast<long long>(min)) + ", " +
                                  std::to_string(static_cast<long long>(max)) + "]")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = d;
  return true;
}

bool GetSeconds(Napi::Object obj, const char* name, double* out) {
  Napi::Env env = obj.Env();
  Napi::Value v = obj.Get(name);
  if (env.IsExceptionPending()) return false;
  if (v.IsUndefined()) return true;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!std::isfinite(d) || d < 0 || d > 1e6) {
    Napi::TypeError::New(env, std::string("options.") + name + " must be a number of seconds in [0, 1e6]")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = d;
  return true;
}

bool GetBool(Napi::Object obj, const char* name, bool* out) {
  Napi::Env env = obj.Env();
  Napi::Value v = obj.Get(name);
  if (env.IsExceptionPending()) return false;
  if (v.IsUndefined()) return true;
  if (!v.IsBoolean()) {
    Napi::TypeError::New(env, std::string("options.") + name + " must be a boolean").ThrowAsJavaScriptException();
    return false;
  }
  *out = v.As<Napi::Boolean>().Value();
  return true;
}

bool GetString(Napi::Object obj, const char* name, bool required, std::string* out) {
  Napi::Env env = obj.Env();
  Napi::Value v = obj.Get(name);
  if (env.IsExceptionPending()) return false;
  if (v.IsUndefined() && !required) return true;
  if (!v.IsString()) {
    Napi::TypeError::New(env, std::string("options.") + name + " must be a string").ThrowAsJavaScriptException();
    return false;
  }
  *out = v.As<Napi::String>().Utf8Value();
  return true;
}

// options.nvme: what bench/perf/nvme.ts set up over vfio-user (fds stay the caller's).
bool ParseNvme(Napi::Value value, JobOptions* o) {
  Napi::Env env = value.Env();
  constexpr double kMaxSafe = 9007199254740991.0;
  if (!value.IsObject()) {
    Napi::TypeError::New(env, "options.nvme must be an object").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Object n = value.As<Napi::Object>();
  o->nvme = true;
  double v = -1;
  if (!GetInteger(n, "memFd", 0, 1 << 30, &v)) return false;
  o->nvme_mem_fd = int(v);
  struct U64Field {
    const char* name;
    uint64_t* out;
  };
  const U64Field u64s[] = {{"memBase", &o->nvme_mem_base},
                           {"memSize", &o->nvme_mem_size},
                           {"doorbellOffset", &o->nvme_doorbell_offset},
                           {"doorbellSize", &o->nvme_doorbell_size},
                           {"doorbellBarOffset", &o->nvme_doorbell_bar_offset},
                           {"nsze", &o->nvme_nsze}};
  for (const U64Field& f : u64s) {
    v = double(*f.out);
    if (!GetInteger(n, f.name, 0, kMaxSafe, &v)) return false;
    *f.out = uint64_t(v);
  }
  v = -1;
  if (!GetInteger(n, "doorbellFd", -1, 1 << 30, &v)) return false;
  o->nvme_doorbell_fd = int(v);
  v = -1;
  if (!GetInteger(n, "socketFd", -1, 1 << 30, &v)) return false;
  o->nvme_socket_fd = int(v);
  v = o->nvme_doorbell_stride;
  if (!GetInteger(n, "doorbellStride", 4, 1 << 16, &v)) return false;
  o->nvme_doorbell_stride = uint32_t(v);
  v = o->nvme_nsid;
  if (!GetInteger(n, "nsid", 1, 0xfffffffe, &v)) return false;
  o->nvme_nsid = uint32_t(v);
  v = o->nvme_lba_size;
  if (!GetInteger(n, "lbaSize", 512, 1 << 16, &v)) return false;
  o->nvme_lba_size = uint32_t(v);
  Napi::Value qv = n.Get("queues");
  if (env.IsExceptionPending()) return false;
  if (!qv.IsArray()) {
    Napi::TypeError::New(env, "options.nvme.queues must be an array").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Array qs = qv.As<Napi::Array>();
  if (qs.Length() < 1 || qs.Length() > 64) {
    Napi::TypeError::New(env, "options.nvme.queues must hold 1 to 64 queues").ThrowAsJavaScriptException();
    return false;
  }
  for (uint32_t i = 0; i < qs.Length(); i++) {
    Napi::Value e = qs.Get(i);
    if (env.IsExceptionPending()) return false;
    if (!e.IsObject()) {
      Napi::TypeError::New(env, "options.nvme.queues[] must be objects").ThrowAsJavaScriptException();
      return false;
    }
    Napi::Object q = e.As<Napi::Object>();
    JobOptions::NvmeQueue nq;
    v = 0;
    if (!GetInteger(q, "qid", 1, 65535, &v)) return false;
    nq.qid = uint32_t(v);
    v = 0;
    if (!GetInteger(q, "size", 2, 32768, &v)) return false;
    nq.size = uint32_t(v);
    const U64Field addrs[] = {{"sqGpa", &nq.sq_gpa}, {"cqGpa", &nq.cq_gpa}, {"dataGpa", &nq.data_gpa}, {"prpGpa", &nq.prp_gpa}};
    for (const U64Field& f : addrs) {
      v = 0;
      if (!GetInteger(q, f.name, 0, kMaxSafe, &v)) return false;
      *f.out = uint64_t(v);
    }
    o->nvme_queues.push_back(nq);
  }
  o->queues = uint32_t(o->nvme_queues.size());
  return true;
}

bool ParseOptions(Napi::Object obj, JobOptions* o) {
  Napi::Env env = obj.Env();
  constexpr double kMaxSafe = 9007199254740991.0;
  if (!GetString(obj, "socketPath", true, &o->socket_path)) return false;
  std::string rw = "randread";
  if (!GetString(obj, "rw", false, &rw)) return false;
  if (rw == "randread") {
    o->rw = Pattern::kRandRead;
  } else if (rw == "randwrite") {
    o->rw = Pattern::kRandWrite;
  } else if (rw == "read") {
    o->rw = Pattern::kRead;
  } else if (rw == "write") {
    o->rw = Pattern::kWrite;
  } else if (rw == "randrw") {
    o->rw = Pattern::kRandRw;
  } else {
    Napi::TypeError::New(env, "options.rw must be randread, randwrite, read, write or randrw")
        .ThrowAsJavaScriptException();
    return false;
  }
  std::string verify = "off";
  if (!GetString(obj, "verify", false, &verify)) return false;
  if (verify == "off") {
    o->verify = VerifyMode::kOff;
  } else if (verify == "write-read") {
    o->verify = VerifyMode::kWriteRead;
  } else if (verify == "write") {
    o->verify = VerifyMode::kWrite;
  } else if (verify == "read") {
    o->verify = VerifyMode::kRead;
  } else {
    Napi::TypeError::New(env, "options.verify must be off, write-read, write or read").ThrowAsJavaScriptException();
    return false;
  }
  std::string completion = "poll";
  if (!GetString(obj, "completion", false, &completion)) return false;
  if (completion != "poll" && completion != "interrupt") {
    Napi::TypeError::New(env, "options.completion must be poll or interrupt").ThrowAsJavaScriptException();
    return false;
  }
  o->interrupt = completion == "interrupt";
  double v;
  v = o->rwmixread;
  if (!GetInteger(obj, "rwmixread", 0, 100, &v)) return false;
  o->rwmixread = uint32_t(v);
  v = o->block_size;
  if (!GetInteger(obj, "blockSizeBytes", 512, 64 << 20, &v)) return false;
  o->block_size = uint32_t(v);
  v = o->iodepth;
  if (!GetInteger(obj, "iodepth", 1, 4096, &v)) return false;
  o->iodepth = uint32_t(v);
  v = o->queues;
  if (!GetInteger(obj, "queues", 1, 64, &v)) return false;
  o->queues = uint32_t(v);
  v = o->queue_size;
  if (!GetInteger(obj, "queueSize", 0, 32768, &v)) return false;
  o->queue_size = uint32_t(v);
  v = double(o->offset_bytes);
  if (!GetInteger(obj, "offsetBytes", 0, kMaxSafe, &v)) return false;
  o->offset_bytes = uint64_t(v);
  v = double(o->size_bytes);
  if (!GetInteger(obj, "sizeBytes", 0, kMaxSafe, &v)) return false;
  o->size_bytes = uint64_t(v);
  v = double(o->verify_seed);
  if (!GetInteger(obj, "verifySeed", 0, kMaxSafe, &v)) return false;
  o->verify_seed = uint64_t(v);
  v = double(o->seed);
  if (!GetInteger(obj, "seed", 0, kMaxSafe, &v)) return false;
  o->seed = uint64_t(v);
  v = o->cpu;
  if (!GetInteger(obj, "cpu", -1, 1023, &v)) return false;
  o->cpu = int(v);
  v = o->timeout_ms;
  if (!GetInteger(obj, "timeoutMs", 1, 3600000, &v)) return false;
  o->timeout_ms = int(v);
  if (!GetSeconds(obj, "runtimeSec", &o->runtime_sec)) return false;
  if (!GetSeconds(obj, "rampSec", &o->ramp_sec)) return false;
  if (!(o->runtime_sec > 0)) {
    Napi::TypeError::New(env, "options.runtimeSec must be > 0").ThrowAsJavaScriptException();
    return false;
  }
  if (!GetBool(obj, "eventIdx", &o->event_idx)) return false;
  if (!GetBool(obj, "hugepages", &o->hugepages)) return false;
  if (!GetBool(obj, "inflight", &o->inflight)) return false;
  if (!GetBool(obj, "packed", &o->packed)) return false;
  if (!GetBool(obj, "indirect", &o->indirect)) return false;
  if (!GetBool(obj, "descFreeList", &o->desc_free_list)) return false;
  if (!GetBool(obj, "scsi", &o->scsi)) return false;
  v = o->scsi_target;
  if (!GetInteger(obj, "scsiTarget", 0, 255, &v)) return false;
  o->scsi_target = uint32_t(v);
  Napi::Value nv = obj.Get("nvme");
  if (env.IsExceptionPending()) return false;
  if (!nv.IsUndefined()) return ParseNvme(nv, o);
  return true;
}

// Runs on the JS thread once the generator thread has finished its job.
void Deliver(Napi::Env env, Napi::Function /*unused*/, RunContext* ctx) {
  ctx->thread.join();  // it has at most tsfn.Release() left to do
  if (static_cast<napi_env>(env) != nullptr) {
    Napi::HandleScope scope(env);
    if (ctx->result.ok) {
      ctx->deferred.Resolve(Napi::String::New(env, ctx->result.json));
    } else {
      Napi::Error error = Napi::Error::New(env, "vhostd-perf: " + ctx->result.error);
      error.Set("code", Napi::String::New(env, "ERR_VHOSTD_PERF"));
      ctx->deferred.Reject(error.Value());
    }
  }
  delete ctx;
}

void Noop(const Napi::CallbackInfo& /*info*/) {}

// run(options): Promise<string> (the JSON report).
Napi::Value Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::TypeError::New(env, "run(options) needs an options object").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  JobOptions options;
  if (!ParseOptions(info[0].As<Napi::Object>(), &options)) return env.Undefined();
  RunContext* ctx = new RunContext(env);
  ctx->options = options;
  ctx->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, Noop), "vhostd_perf", 0, 1);
  Napi::Promise promise = ctx->deferred.Promise();
  ctx->thread = std::thread([ctx]() {
    vhostd_perf::RunJob(ctx->options, &ctx->result);
    Napi::ThreadSafeFunction tsfn = ctx->tsfn;
    // After BlockingCall the JS thread owns ctx (Deliver frees it).
    tsfn.BlockingCall(ctx, Deliver);
    tsfn.Release();
  });
  return promise;
}

// crc32c(buffer): number — the generator's checksum, exposed for tests.
Napi::Value Crc32cJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    Napi::TypeError::New(env, "crc32c(data) needs a Uint8Array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  const uint8_t* data = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return Napi::Number::New(env, vhostd_perf::Crc32c(data, ta.ByteLength()));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("run", Napi::Function::New(env, Run, "run"));
  exports.Set("crc32c", Napi::Function::New(env, Crc32cJs, "crc32c"));
  return exports;
}

}  // namespace

NODE_API_MODULE(vhostd_perf, Init)
