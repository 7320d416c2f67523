{
  "variables": {
    "have_librbd": "<!(test -f /usr/include/rbd/librbd.h && test -f /usr/include/rados/librados.h && echo 1 || echo 0)"
  },
  "targets": [
    {
      "target_name": "vhostd_native",
      "sources": [
        "bindings/src/addon.cc",
        "bindings/src/errors.cc",
        "bindings/src/socket.cc",
        "bindings/src/watcher.cc",
        "bindings/src/memory.cc",
        "bindings/src/eventfd.cc",
        "bindings/src/affinity.cc",
        "bindings/src/exec.cc",
        "bindings/src/file.cc",
        "bindings/src/uring.cc",
        "bindings/src/aio.cc",
        "bindings/src/fdflags.cc",
        "bindings/src/lock.cc",
        "bindings/src/layout.cc",
        "bindings/src/rbd.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fno-exceptions"],
      "cflags_cc!": ["-fno-rtti"],
      "conditions": [
        ["have_librbd==1", {
          "defines": ["HAVE_LIBRBD"],
          "libraries": ["-lrbd", "-lrados"]
        }]
      ]
    }
  ]
}
