#!/usr/bin/env python3
"""Tables for bench/spdk-vs-vhostd.sh: usage: spdk-vs-vhostd-table.py RESULTS.jsonl

Per generator, bdev and job: median over rounds of IOPS, p50, p99 (µs) for SPDK's vhost and vhostd,
the ratio vhostd/SPDK (IOPS; and p50 SPDK/vhostd, > 1 means vhostd answers faster), and IOPS per busy
target core (completed I/Os / busy seconds summed over the target's threads from thread_get_stats).
Then the idle cost per mode. Markdown, so it pastes into bench/README.md.
"""
import json
import statistics
import sys
from collections import defaultdict


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    cases = defaultdict(lambda: defaultdict(list))
    order = []
    for r in rows:
        if r["kind"] != "case":
            continue
        key = (r["gen"], r["bdev"], r["rw"], r["bs"], r["qd"])
        if key not in order:
            order.append(key)
        cases[key][r["target"]].append(r)
    print("| generator | bdev | job | SPDK IOPS | vhostd IOPS | vhostd/SPDK | SPDK p50 / p99 µs | vhostd p50 / p99 µs "
          "| SPDK IOPS/busy core | vhostd IOPS/busy core | ratio/busy core | rounds | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in order:
        gen, bdev, rw, bs, qd = key
        t = cases[key]

        def stat(target, f):
            return med([f(r) for r in t.get(target, []) if not r.get("failed")])

        iops = {k: stat(k, lambda r: r["iops"]) for k in ("spdk", "vhostd")}
        p50 = {k: stat(k, lambda r: r["p50_us"]) for k in ("spdk", "vhostd")}
        p99 = {k: stat(k, lambda r: r["p99_us"]) for k in ("spdk", "vhostd")}
        per_busy = {
            k: stat(k, lambda r: r["iops"] * r["runtime_s"] / r["busy_s"] if r["busy_s"] > 0 else None)
            for k in ("spdk", "vhostd")
        }
        ratio = iops["vhostd"] / iops["spdk"] if iops["spdk"] and iops["vhostd"] is not None else None
        rb = per_busy["vhostd"] / per_busy["spdk"] if per_busy["spdk"] and per_busy["vhostd"] else None
        n = min(len(t.get("spdk", [])), len(t.get("vhostd", [])))
        fails = sum(1 for k in t for r in t[k] if r.get("failed"))
        loads = [r["load"] for k in t for r in t[k] if "load" in r]
        job = f"{rw} {bs // 1024}k QD{qd}"
        print(
            f"| {gen} | {bdev} | {job} | {fmt(iops['spdk'])} | {fmt(iops['vhostd'])} | {fmt(ratio, 2)} "
            f"| {fmt(p50['spdk'], 1)} / {fmt(p99['spdk'], 1)} | {fmt(p50['vhostd'], 1)} / {fmt(p99['vhostd'], 1)} "
            f"| {fmt(per_busy['spdk'])} | {fmt(per_busy['vhostd'])} | {fmt(rb, 2)} "
            f"| {n}{' (' + str(fails) + ' failed)' if fails else ''} | {fmt(min(loads), 1) if loads else '–'}–{fmt(max(loads), 1) if loads else '–'} |"
        )
    idle = [r for r in rows if r["kind"] == "idle"]
    if idle:
        print()
        print("| idle target | mode | controllers | CPU (% of one core) | busy s (thread_get_stats) | load |")
        print("|---|---|---|---|---|---|")
        for r in idle:
            print(f"| {r['target']} | {r['mode']} | {r['devs']} | {r['cpu_pct']:.2f} | {r['busy_s']:.3f} | {r['load']} |")


if __name__ == "__main__":
    main()
