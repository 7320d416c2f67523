# shellcheck shell=bash
# Per-thread CPU time of processes over a stretch of a bench, from
# /proc/PID/task/TID/stat (utime + stime, in clock ticks): where the time of
# a request goes (the target's own threads vs librbd's vs the OSD's).
# Sourced by bench scripts:
#
#   thread_ticks LABEL PID...      one line "LABEL TID COMM TICKS WAIT_NS" per live thread, on
#                                  stdout (WAIT_NS: time runnable but waiting for a CPU,
#                                  /proc/.../schedstat's second field)
#   thread_report BEFORE AFTER REQUESTS
#                                  from two thread_ticks snapshots (files): CPU ms and µs per
#                                  request, the share of each LABEL:thread group (COMM with
#                                  digits folded: msgr-worker-N), largest first; then the µs
#                                  per request the target's threads other than "engine" (librbd's
#                                  or QEMU's) waited runnable for a CPU. One line.
#
# A thread that ended between the two snapshots is not counted (librbd's and
# the OSD's threads live as long as their process; QEMU's and vhostd's too).

thread_ticks() {  # label pid...
  local label=$1 pid t; shift
  for pid in "$@"; do
    for t in /proc/"$pid"/task/*; do
      awk -v l="$label" -v tid="${t##*/}" -v c="$(cat "$t/comm" 2>/dev/null || echo '?')" \
        -v w="$(cut -d' ' -f2 "$t/schedstat" 2>/dev/null || echo 0)" \
        '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); gsub(/ /, "_", c); print l, tid, c, f[12] + f[13], w }' "$t/stat" 2>/dev/null || true
    done
  done
}

thread_report() {  # before after requests
  awk -v reqs="$3" -v hz="$(getconf CLK_TCK)" '
    FNR == NR { before[$1 " " $2] = $4; bwait[$1 " " $2] = $5; next }
    ($1 " " $2) in before {
      if ($1 == "target" && $3 != "engine") wait += $5 - bwait[$1 " " $2]
      d = $4 - before[$1 " " $2]; if (d <= 0) next
      g = $3; gsub(/[0-9]+/, "N", g); key = $1 ":" g
      ms[key] += d * 1000 / hz; total += d * 1000 / hz
    }
    END {
      n = 0; for (k in ms) keys[n++] = k
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (ms[keys[j]] > ms[keys[i]]) { x = keys[i]; keys[i] = keys[j]; keys[j] = x }
      line = sprintf("CPU %.0f ms (%.0f us/request):", total, reqs > 0 ? total * 1000 / reqs : 0)
      for (i = 0; i < n && i < 10; i++) line = line sprintf(" %s %.0f%%", keys[i], 100 * ms[keys[i]] / total)
      line = line sprintf("; target helper threads waited for a CPU %.0f us/request", reqs > 0 ? wait / 1000 / reqs : 0)
      print line
    }' "$1" "$2"
}
