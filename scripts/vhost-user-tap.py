#!/usr/bin/env python3
"""vhost-user-tap: record the vhost-user messages between a front-end and a back-end.

usage: vhost-user-tap.py LISTEN_SOCKET BACKEND_SOCKET OUT.json [--peer TEXT]

Listens on LISTEN_SOCKET, and for each front-end that connects, connects to
BACKEND_SOCKET and forwards every message both ways, file descriptors included
(SCM_RIGHTS), one message at a time: a 12-byte header (u32 request, u32 flags,
u32 size; vhost-user.rst "Message Specification") read with recvmsg together
with its fds, then `size` payload bytes. Each message is appended to OUT.json
(rewritten after every message, so a killed tap leaves a valid file) as
{"conn": n, "dir": "fe" | "be", "hex": header+payload, "fds": [kind, ...]}
where kind describes the fd without naming this machine's paths:
"eventfd", "memfd", "hugetlbfs", "file", "socket" or "other", plus the file
size for regular files ("memfd:SIZE", "hugetlbfs:SIZE").

Used to capture SPDK's virtio-user initiator (bdevperf's bdev_virtio) against
vhostd for test/fixtures/spdk-v23.05-virtio-user-blk.json. A capture tool, not
part of vhostd; python3 standard library only. Stops on SIGINT/SIGTERM or when
--conns connections have ended (default 1).
"""
import array
import json
import os
import select
import signal
import socket
import stat
import struct
import sys

HDR = 12
MAX_FDS = 8


def fd_kind(fd):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = ""
    st = os.fstat(fd)
    if target == "anon_inode:[eventfd]":
        return "eventfd"
    if stat.S_ISSOCK(st.st_mode):
        return "socket"
    if stat.S_ISREG(st.st_mode):
        if target.startswith("/memfd:"):
            return f"memfd:{st.st_size}"
        if "/hugepages" in target or "huge" in target:
            return f"hugetlbfs:{st.st_size}"
        return f"file:{st.st_size}"
    return "other"


def recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return bytes(out)


def recv_message(sock):
    """One vhost-user message: (bytes, [fds]); EOFError when the peer closed."""
    fds = array.array("i")
    data, anc, flags, _ = sock.recvmsg(HDR, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    if not data:
        raise EOFError
    for level, typ, cdata in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
    if flags & socket.MSG_CTRUNC:
        raise RuntimeError("control data truncated")
    if len(data) < HDR:
        data += recv_exact(sock, HDR - len(data))
    size = struct.unpack_from("<I", data, 8)[0]
    payload = recv_exact(sock, size) if size else b""
    return data + payload, list(fds)


def send_message(sock, msg, fds):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sent = sock.sendmsg([msg[:HDR]], anc)
    assert sent == HDR
    if len(msg) > HDR:
        sock.sendall(msg[HDR:])


def main():
    args = sys.argv[1:]
    peer = ""
    conns_wanted = 1
    if "--peer" in args:
        i = args.index("--peer")
        peer = args[i + 1]
        del args[i : i + 2]
    if "--conns" in args:
        i = args.index("--conns")
        conns_wanted = int(args[i + 1])
        del args[i : i + 2]
    if len(args) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    listen_path, backend_path, out_path = args
    record = {"peer": peer, "messages": []}

    def save():
        tmp = out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        os.replace(tmp, out_path)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        os.unlink(listen_path)
    except FileNotFoundError:
        pass
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(listen_path)
    lsock.listen(4)
    save()
    conn_no = 0
    try:
        while conn_no < conns_wanted:
            fe, _ = lsock.accept()
            be = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            be.connect(backend_path)
            side = {fe.fileno(): ("fe", fe, be), be.fileno(): ("be", be, fe)}
            live = True
            while live:
                ready, _, _ = select.select([fe, be], [], [])
                for s in ready:
                    name, src, dst = side[s.fileno()]
                    try:
                        msg, fds = recv_message(src)
                    except (EOFError, ConnectionResetError):
                        live = False
                        break
                    record["messages"].append(
                        {"conn": conn_no, "dir": name, "hex": msg.hex(), "fds": [fd_kind(f) for f in fds]}
                    )
                    save()
                    try:
                        send_message(dst, msg, fds)
                    finally:
                        for f in fds:
                            os.close(f)
            fe.close()
            be.close()
            conn_no += 1
    finally:
        save()
        lsock.close()
        try:
            os.unlink(listen_path)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    main()
