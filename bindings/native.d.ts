/**
 * Types of the native addon (bindings/src/*.cc). The addon is a set of thin,
 * numeric syscall wrappers: no device logic lives in C++.
 *
 * Conventions shared by every function:
 * - fds are plain numbers; every fd the addon creates is O_CLOEXEC, and every
 *   socket / eventfd is O_NONBLOCK.
 * - "would block" is a return value (-1), never an exception.
 * - Any other failure throws a NativeError whose `code` is the errno name
 *   ('EBADF', 'EINVAL', ...), `errno` the positive errno and `syscall` the call
 *   that failed ('recvmsg', 'mmap', ...).
 * - Functions are safe to call from any worker thread; FdWatcher uses the libuv
 *   loop of the calling environment (napi_get_uv_event_loop), never
 *   uv_default_loop.
 */

export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** Readiness bits for FdWatcher.start() and its callback: see PollEvents in index.ts (Layout.POLL_*). */

/**
 * Watches one fd on the calling thread's libuv loop (uv_poll). The callback
 * runs through node's MakeCallback machinery, so promise reactions queued in it
 * run right after it. `status` is 0 or a negative libuv error.
 * The watcher keeps the loop alive while started. close() is idempotent and
 * must be called before the fd itself is closed.
 */
export declare class FdWatcher {
  constructor(fd: number, callback: (status: number, events: number) => void);
  start(events: number): void;
  stop(): void;
  close(): void;
}

/**
 * Operation codes of FileRing requests (bindings/src/file.h). A request is
 * Layout.FILE_REQ_WORDS numbers of a Float64Array:
 *   [op, fileSlot, offsetBytes, a, b, tag]
 * READV/WRITEV: a = first iov index, b = iov count; FALLOCATE: a = length,
 * b = mode; BLK_DISCARD/BLK_ZEROOUT/PUNCH_ALLOC: a = length; DATASYNC: a = b = 0.
 * An iov is Layout.FILE_IOV_WORDS numbers: [bufferSlot, offsetInBuffer, length].
 */
export const enum FileOp {
  Readv = 0,
  Writev = 1,
  Datasync = 2,
  Fallocate = 3,
  BlkDiscard = 4,
  BlkZeroout = 5,
  /** fallocate(PUNCH_HOLE|KEEP_SIZE) then fallocate(0): zero and keep allocated (no ZERO_RANGE on tmpfs). */
  PunchAlloc = 6,
}

/**
 * A kernel I/O ring over files: IoUring (io_uring, raw syscalls) or LinuxAio
 * (io_setup/io_submit/io_getevents). One per engine worker and engine kind.
 * Buffers are registered once per mapping (the addon keeps the view's base
 * address and length and checks every iov against them); iovecs then point
 * straight into them (zero copy). Requests the addon refuses complete with
 * -EINVAL; the kernel's answer (bytes, or -errno) comes back from reap().
 * Slots: 64 buffers, 64 files. Owned by the thread that made it.
 */
export interface FileRing {
  /** Submission queue depth the kernel granted. */
  readonly entries: number;
  /** Put `fd` in file slot `slot` (io_uring: a registered fixed file); -1 empties it. */
  setFile(slot: number, fd: number): void;
  /** Remember `view` (its address and length) as buffer slot `slot`; null forgets it. */
  setBuffer(slot: number, view: Uint8Array | null): void;
  /** Queue the first `count` requests of `reqs` and enter the kernel once. Returns how many were taken; the rest must be offered again later. */
  submit(reqs: Float64Array, count: number, iovs: Float64Array): number;
  /** Up to `max` completions as (tag, res) pairs into `out`, without blocking. Returns how many. */
  reap(out: Float64Array, max: number): number;
  /** Release the ring (after draining). Idempotent. */
  close(): void;
  /** io_uring only: true when requests on file slot `slot` are served inline (see IoUring). */
  fileInline?(slot: number): boolean;
  /**
   * The ring's completion eventfd (made on the first call, owned and closed
   * by the ring): io_uring registers it (IORING_REGISTER_EVENTFD) and starts
   * with it switched off; AIO signals it from every iocb submitted after the
   * call (IOCB_FLAG_RESFD). For a worker that sleeps in poll(2).
   */
  completionFd?(): number;
  /**
   * Signal the completion eventfd (true) or not (false; io_uring's
   * IORING_CQ_EVENTFD_DISABLED, AIO ignores it). After switching it on, reap()
   * once before sleeping: what completed while it was off signalled nothing.
   */
  setCompletionNotify?(on: boolean): void;
}

/**
 * io_uring_setup(entries) with SINGLE_ISSUER|DEFER_TASKRUN (else COOP_TASKRUN,
 * else plain setup on older kernels). Throws EPERM/ENOSYS where io_uring is
 * disabled. With inlineMemoryFiles (default true), files on tmpfs/ramfs that
 * cannot read without blocking (io_uring would punt each request to an io-wq
 * thread) are served inline in submit() with preadv/pwritev.
 */
export declare class IoUring implements FileRing {
  constructor(entries: number, maxIovPerReq: number, inlineMemoryFiles?: boolean);
  /** True when requests on file slot `slot` are served inline (memory file system without NOWAIT). */
  fileInline(slot: number): boolean;
  readonly entries: number;
  /** True when files are registered (IOSQE_FIXED_FILE). */
  readonly fixedFiles: boolean;
  readonly setupFlags: number;
  setFile(slot: number, fd: number): void;
  setBuffer(slot: number, view: Uint8Array | null): void;
  submit(reqs: Float64Array, count: number, iovs: Float64Array): number;
  reap(out: Float64Array, max: number): number;
  close(): void;
  completionFd(): number;
  setCompletionNotify(on: boolean): void;
}

/** io_setup(entries). FALLOCATE and the BLK ops run synchronously inside submit(). */
export declare class LinuxAio implements FileRing {
  constructor(entries: number, maxIovPerReq: number);
  readonly entries: number;
  setFile(slot: number, fd: number): void;
  setBuffer(slot: number, view: Uint8Array | null): void;
  submit(reqs: Float64Array, count: number, iovs: Float64Array): number;
  reap(out: Float64Array, max: number): number;
  close(): void;
  completionFd(): number;
  setCompletionNotify(on: boolean): void;
}

export interface RbdConnectOptions {
  /** Ceph user without "client." (null: librados' default, admin). */
  userId?: string | null;
  /** A ceph.conf (null: librados' default search path, whose absence is no error). */
  configFile?: string | null;
  /** rados_conf_set pairs, after the file. */
  configParams?: [string, string][];
  /** Sets "keyring". */
  keyFile?: string | null;
  /** CPUs librados' threads may run on (they inherit the connecting thread's affinity). */
  cpus?: number[];
}

export interface RbdOpened {
  /** Image handle (for RbdRing.setFile, rbdClose, rbdResize, rbdSize). */
  image: number;
  sizeBytes: number;
  objectSizeBytes: number;
  /** The image's id in its pool (rbd_get_id). */
  id: string;
}

/**
 * Per-worker librbd I/O (FileRing): setFile(slot, image handle); READV/WRITEV
 * → rbd_aio_readv/writev into the registered buffers, DATASYNC → flush,
 * FALLOCATE(PUNCH_HOLE|KEEP_SIZE) → discard, FALLOCATE(ZERO_RANGE) → write
 * zeroes. Completions come from librbd's threads through a lock-free stack;
 * reap() never blocks; a sleeping owner is woken through completionFd(). `entries` requests can be in flight at once.
 */
export declare class RbdRing implements FileRing {
  constructor(entries: number, maxIovPerReq: number);
  readonly entries: number;
  /** Requests handed to librbd whose callback has not been reaped. */
  readonly inflight: number;
  setFile(slot: number, image: number): void;
  setBuffer(slot: number, view: Uint8Array | null): void;
  submit(reqs: Float64Array, count: number, iovs: Float64Array): number;
  reap(out: Float64Array, max: number): number;
  close(): void;
  /** An eventfd librbd's callbacks signal while notify is on; made on the first call, owned by the ring. */
  completionFd(): number;
  /** Callbacks signal the completion eventfd (true) or not; after turning it on, reap() once more before sleeping. */
  setCompletionNotify(on: boolean): void;
}

/** What fileInfo() reports about an open file. */
export interface FileInfo {
  type: 'file' | 'block' | 'dir' | 'socket' | 'char' | 'fifo' | 'other';
  /** Regular file: st_size; block device: BLKGETSIZE64. */
  sizeBytes: number;
  /** Block devices: BLKSSZGET / BLKPBSZGET; 0 for files. */
  logicalBlockSize: number;
  physicalBlockSize: number;
  /** statx STATX_DIOALIGN (0 when the file system does not say, or O_DIRECT is unsupported). */
  dioMemAlign: number;
  dioOffsetAlign: number;
}

export interface Native {
  FdWatcher: typeof FdWatcher;

  // --- Unix stream sockets -------------------------------------------------
  /**
   * socket+bind+listen on `path` (the caller unlinks stale files first), bound
   * aside, then chown to group `gid` (when given and not -1) and chmod to
   * `mode` before it is renamed into place.
   */
  unixListen(path: string, backlog: number, mode: number, gid?: number): number;
  /**
   * One datagram to the Unix datagram socket `path` ('@name': abstract
   * namespace), as sd_notify(3) sends to $NOTIFY_SOCKET; returns bytes sent.
   */
  unixSendDatagram(path: string, data: Buffer): number;
  /** accept4(SOCK_NONBLOCK|SOCK_CLOEXEC); -1 when no connection is pending. */
  unixAccept(listenFd: number): number;
  /** Blocking connect to `path`; the returned fd is then switched to O_NONBLOCK. */
  unixConnect(path: string): number;
  /** socketpair(AF_UNIX, SOCK_STREAM) → [a, b], both nonblocking. */
  socketPair(): [number, number];
  /**
   * recvmsg into `buf` (all of it is offered) with MSG_CMSG_CLOEXEC, accepting
   * up to 8 SCM_RIGHTS fds. Received fds are written to `fdsOut[0..n)` and the
   * rest of `fdsOut` is set to -1 (fdsOut must have length >= 8).
   * Returns bytes read; 0 = EOF; -1 = would block.
   * If the kernel reports MSG_CTRUNC (more fds than fit) every fd that did
   * arrive is closed and it throws code 'EMSGSIZE', syscall 'recvmsg'.
   */
  recvMsg(fd: number, buf: Uint8Array, fdsOut: Int32Array): number;
  /** sendmsg(MSG_NOSIGNAL) of all of `buf` with optional SCM_RIGHTS fds (at most 8). Returns bytes sent or -1 (would block). */
  sendMsg(fd: number, buf: Uint8Array, fds?: number[] | null): number;
  /** read(2) into buf: bytes, 0 = EOF, -1 = would block. */
  read(fd: number, buf: Uint8Array): number;
  /** write(2) of buf: bytes written or -1 = would block. */
  write(fd: number, buf: Uint8Array): number;
  /** close(2); closing -1 is a no-op. EINTR is ignored; EBADF throws. */
  close(fd: number): void;
  /** fstat → size in bytes and file type ('file' | 'dir' | 'socket' | 'block' | 'char' | 'fifo' | 'other'). */
  fstat(fd: number): { sizeBytes: number; type: string; blockSize: number };
  /** dup fcntl(F_DUPFD_CLOEXEC). */
  dup(fd: number): number;
  /** fcntl(F_GETFL): the file status flags (O_NONBLOCK is 0o4000 on Linux). */
  fdGetFlags(fd: number): number;
  /**
   * fcntl(F_SETFL, flags | O_NONBLOCK). The flag belongs to the open file
   * description, so it is shared with every process holding the fd. True when
   * it was newly set, false when it already was.
   */
  fdSetNonBlocking(fd: number): boolean;
  /** fcntl(F_GET_SEALS): F_SEAL_SEAL 1, SHRINK 2, GROW 4, WRITE 8; -1 when the file cannot be sealed (not memfd/shmem). */
  fdGetSeals(fd: number): number;
  /** fcntl(F_ADD_SEALS) on a memfd made with MFD_ALLOW_SEALING (2). */
  fdAddSeals(fd: number, seals: number): void;

  // --- Memory ---------------------------------------------------------------
  /**
   * mmap(MAP_SHARED) of [offset, offset+length) of `fd`, PROT_READ|PROT_WRITE
   * (PROT_READ only when writable is false), returned as an external
   * ArrayBuffer covering exactly that range. The addon aligns the mapping
   * itself to the fd's mapping granularity (page size, or the huge page size
   * on hugetlbfs, from fstatfs) and remembers the real base/length.
   * Refuses (EINVAL) a range that does not lie inside the file's current size
   * (fstat), so a short memfd cannot SIGBUS us at first touch.
   * If the ArrayBuffer is garbage collected without munmap(), the finalizer
   * unmaps it (safety net only: owners must call munmap).
   */
  mmap(fd: number, offset: number, length: number, writable: boolean): ArrayBuffer;
  /** Detach `buf` (every view of it becomes length 0) and munmap its mapping. Idempotent. */
  munmap(buf: ArrayBuffer): void;
  /** memfd_create(name, MFD_CLOEXEC | flags). */
  memfdCreate(name: string, flags: number): number;
  /** ftruncate(fd, sizeBytes). */
  ftruncate(fd: number, sizeBytes: number): void;

  // --- eventfd --------------------------------------------------------------
  /** eventfd(initval, EFD_NONBLOCK|EFD_CLOEXEC|flags). */
  eventfd(initval: number, flags: number): number;
  /** Read and reset the counter: its value, or -1 when it is zero (would block). */
  eventfdRead(fd: number): number;
  /** Add `value` to the counter. EAGAIN (counter full) is ignored. */
  eventfdWrite(fd: number, value: number): void;
  /**
   * poll(2) the first `count` fds of `fds` for readability, up to timeoutMs
   * (-1 = forever). Returns how many are readable (errors and hang-ups
   * count). With `ready` (at least `count` long), ready[i] is set to 1 when
   * fds[i] was, else 0. Blocks the calling thread: meant for an idle engine
   * worker, never the main thread.
   */
  pollReadable(fds: Int32Array, count: number, timeoutMs: number, ready?: Uint8Array): number;

  // --- Threads --------------------------------------------------------------
  /** Pin the calling OS thread to one CPU (pthread_setaffinity_np). */
  pinThread(cpu: number): void;
  /** sched_getcpu() of the calling thread. */
  currentCpu(): number;
  /** gettid() of the calling thread. */
  threadId(): number;
  /** CPUs this process may run on (sched_getaffinity). */
  allowedCpus(): number[];
  /** sched_yield() of the calling thread: other runnable threads on its CPU go first. */
  yieldCpu(): void;
  /** execve(2): replace the process image (same pid and fds); returns only by throwing the errno. */
  execve(path: string, argv: string[], env: string[]): never;

  // --- Files (bdev_uring / bdev_aio) ------------------------------------------
  IoUring: typeof IoUring;
  LinuxAio: typeof LinuxAio;
  /** open(path, O_RDWR or O_RDONLY | O_CLOEXEC | O_DIRECT when direct). EINVAL when the file system refuses O_DIRECT. */
  fileOpen(path: string, writable: boolean, direct: boolean): number;
  /** fstat + block-device ioctls + statx(STATX_DIOALIGN). */
  fileInfo(fd: number): FileInfo;
  /** Run a synchronous FileOp (Datasync, Fallocate, BlkDiscard, BlkZeroout, PunchAlloc) now: 0 or -errno. */
  fileSyncOp(fd: number, op: number, offsetBytes: number, lengthBytes: number, mode: number): number;

  // --- Ceph RBD (bindings/src/rbd.cc; present only when built with librbd) ----
  /** True when the addon was built with librbd (binding.gyp found its headers); the rbd* members exist only then. */
  readonly rbdAvailable: boolean;
  /** librbd's version (rbd_version), e.g. "1.16.0". */
  readonly rbdVersion?: string;
  /** rados_create + conf + rados_connect on the thread pool → a cluster handle. Rejects with a NativeError (code, errno, syscall). */
  rbdConnect?(opts: RbdConnectOptions): Promise<number>;
  /** rados_shutdown (EBUSY, thrown, while images of it are open). */
  rbdShutdown?(cluster: number): Promise<void>;
  /** rados_ioctx_create + rbd_open (or rbd_open_read_only) + rbd_stat, on the thread pool. */
  rbdOpen?(cluster: number, pool: string, image: string, readOnly: boolean): Promise<RbdOpened>;
  /** rbd_close (releases the exclusive lock) + ioctx destroy; EBUSY (thrown) while a ring slot holds the image. */
  rbdClose?(image: number): Promise<void>;
  /** rbd_resize on the thread pool. */
  rbdResize?(image: number, sizeBytes: number): Promise<void>;
  /** rbd_get_size: librbd's cached header, no round trip. */
  rbdSize?(image: number): number;
  RbdRing?: typeof RbdRing;

  // --- Locks ------------------------------------------------------------------
  /**
   * fcntl(F_SETLK) write lock on the whole file, without waiting. 0 when taken
   * (held until the process exits or closes any fd of that file); when another
   * process holds it, that process's pid (F_GETLK), or -1 if it let go meanwhile.
   */
  lockFile(fd: number): number;

  // --- Layout -----------------------------------------------------------------
  /** The layout constants the addon was compiled with (bindings/layout.ts names them; checked at load). */
  readonly layout: Readonly<Record<string, number>>;
}
