/*
 * stale-check: a guest workload whose memory is written by the device only,
 * for the live-migration e2e test (test/e2e/guest-migrate-dirtylog.test.ts).
 * Built on the host with `gcc -static` at test time and carried into the
 * test guest in the per-test cpio (test/lib/guest.ts `files`).
 *
 *   stale-check prep DEV REGIONS REGION_KIB
 *     writes REGIONS regions of REGION_KIB each at the start of DEV
 *     (O_DIRECT), region r's page p word w holding pattern(r, p, w).
 *   stale-check run DEV REGIONS REGION_KIB CTRL_OFFSET
 *     loops: reads the 4 KiB control block at CTRL_OFFSET and stops when it
 *     starts with "STOPSTOP"; re-checks that the data buffer still holds the
 *     region read last (pages that changed under it count as stale: on a
 *     migrated guest, device writes the dirty log did not carry); reads the
 *     next region into the same buffer (O_DIRECT, regions in turn) and
 *     checks it (mismatches count as bad).
 *
 * The data buffer is page-aligned and never written by the CPU: only the
 * device's DMA changes it, so its pages are dirtied for migration only
 * through the vhost dirty log. Prints `@@STALE ...` / `@@BAD ...` at each
 * event, `@@PROGRESS n` every 50 iterations, and at the end `@@VALUE`
 * lines (iterations, stale_events, stale_pages, bad_pages). Exit status 0
 * when nothing was stale or bad, 1 when something was, 2 on a usage or
 * I/O error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS_PER_PAGE (PAGE / 8u)

static uint64_t pattern(uint64_t region, uint64_t page, uint64_t word) {
  return 0x5a17c0de00000000ull ^ (region << 40) ^ (page << 20) ^ word;
}

/* The region a page seems to hold (from its first word), or -1 when it holds no region's pattern. */
static long holds(const uint64_t *p, uint64_t page) {
  uint64_t x = p[0] ^ 0x5a17c0de00000000ull ^ (page << 20);
  if ((x & 0xffffffffffull) != 0) return -1;
  return (long)(x >> 40);
}

/* Pages of `buf` (`pages` long) that do not hold region r's pattern; the first one in *first. */
static unsigned check(const uint64_t *buf, unsigned pages, uint64_t r, long *first) {
  unsigned wrong = 0;
  *first = -1;
  for (unsigned p = 0; p < pages; p++) {
    const uint64_t *pg = buf + (size_t)p * WORDS_PER_PAGE;
    for (unsigned w = 0; w < WORDS_PER_PAGE; w++) {
      if (pg[w] != pattern(r, p, w)) {
        if (*first < 0) *first = p;
        wrong++;
        break;
      }
    }
  }
  return wrong;
}

static int preadAll(int fd, void *buf, size_t len, off_t off) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, (char *)buf + done, len - done, off + (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

static int pwriteAll(int fd, const void *buf, size_t len, off_t off) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, (const char *)buf + done, len - done, off + (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

static void *pages(size_t len) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: stale-check prep|run DEV REGIONS REGION_KIB [CTRL_OFFSET]\n");
    return 2;
  }
  const char *mode = argv[1];
  unsigned regions = (unsigned)strtoul(argv[3], NULL, 0);
  size_t len = (size_t)strtoul(argv[4], NULL, 0) * 1024u;
  unsigned npages = (unsigned)(len / PAGE);
  if (regions == 0 || regions > 255 || npages == 0 || len % PAGE != 0) {
    fprintf(stderr, "stale-check: bad REGIONS or REGION_KIB\n");
    return 2;
  }
  int fd = open(argv[2], O_RDWR | O_DIRECT | O_CLOEXEC);
  if (fd < 0) {
    perror("stale-check: open");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  if (strcmp(mode, "prep") == 0) {
    uint64_t *w = pages(len);
    if (w == NULL) return 2;
    for (unsigned r = 0; r < regions; r++) {
      for (unsigned p = 0; p < npages; p++)
        for (unsigned i = 0; i < WORDS_PER_PAGE; i++) w[(size_t)p * WORDS_PER_PAGE + i] = pattern(r, p, i);
      if (pwriteAll(fd, w, len, (off_t)r * (off_t)len) != 0) {
        perror("stale-check: write");
        return 2;
      }
    }
    if (fsync(fd) != 0) {
      perror("stale-check: fsync");
      return 2;
    }
    printf("stale-check: wrote %u regions of %zu KiB\n", regions, len / 1024u);
    return 0;
  }
  if (strcmp(mode, "run") != 0 || argc < 6) {
    fprintf(stderr, "stale-check: unknown mode or no CTRL_OFFSET\n");
    return 2;
  }
  off_t ctrlOff = (off_t)strtoull(argv[5], NULL, 0);
  /* Written by the device only (never by this program's CPU). */
  uint64_t *buf = pages(len);
  char *ctrl = pages(PAGE);
  if (buf == NULL || ctrl == NULL) return 2;

  unsigned long iter = 0, staleEvents = 0, stalePages = 0, badPages = 0;
  long last = -1;
  for (;;) {
    if (preadAll(fd, ctrl, PAGE, ctrlOff) != 0) {
      perror("stale-check: read control block");
      return 2;
    }
    if (memcmp(ctrl, "STOPSTOP", 8) == 0) break;
    long first;
    if (last >= 0) {
      unsigned s = check(buf, npages, (uint64_t)last, &first);
      if (s > 0) {
        staleEvents++;
        stalePages += s;
        printf("@@STALE iteration %lu: %u of %u pages no longer hold region %ld (page %ld holds region %ld)\n", iter, s, npages, last,
               first, holds(buf + (size_t)first * WORDS_PER_PAGE, (uint64_t)first));
      }
    }
    uint64_t r = iter % regions;
    if (preadAll(fd, buf, len, (off_t)r * (off_t)len) != 0) {
      perror("stale-check: read region");
      return 2;
    }
    unsigned b = check(buf, npages, r, &first);
    if (b > 0) {
      badPages += b;
      printf("@@BAD iteration %lu: %u of %u pages read from region %lu do not hold it (page %ld holds region %ld)\n", iter, b, npages,
             (unsigned long)r, first, holds(buf + (size_t)first * WORDS_PER_PAGE, (uint64_t)first));
    }
    last = (long)r;
    iter++;
    if (iter % 50 == 0) printf("@@PROGRESS %lu\n", iter);
  }
  printf("@@VALUE iterations %lu\n@@VALUE stale_events %lu\n@@VALUE stale_pages %lu\n@@VALUE bad_pages %lu\n", iter, staleEvents, stalePages,
         badPages);
  return staleEvents == 0 && badPages == 0 ? 0 : 1;
}
