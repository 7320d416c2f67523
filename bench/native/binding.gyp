# vhostd_perf, bench's native vhost-user-blk load generator. It has its own
# gyp file (built with `node-gyp rebuild -C bench/native`, prebuilt into
# bench/native/prebuilds/) so that node-gyp-build, which loads the first
# .node file of a directory, can never confuse it with vhostd_native.
{
  "targets": [
    {
      "target_name": "vhostd_perf",
      "sources": ["crc32c.cc", "job.cc", "perf_addon.cc", "vhost_user.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fno-exceptions"],
      "cflags_cc!": ["-fno-rtti"]
    }
  ]
}
