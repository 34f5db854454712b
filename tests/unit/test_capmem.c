/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The capture engine's memory per file. A capture holds an entry per file of the store and,
 * with an earlier snapshot to share files with, that snapshot's manifest: both grow with the
 * store, and on a large one they are most of what the capture helper takes. Each capture here
 * runs in a process of its own, which reports its peak resident size (VmHWM); that of a
 * small store is subtracted from that of a large one, so that only what grows with the number
 * of files counts, not the program, its libraries or its buffers. No timing is involved. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "capture.h"
#include "util.h"

/* AddressSanitizer's shadow memory and quarantine grow with what is allocated: nothing to
 * measure there (scripts/sanitize.sh runs the unit suite so). */
#if defined(__SANITIZE_ADDRESS__)
#define CAPMEM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CAPMEM_ASAN 1
#endif
#endif

#define SMALL 2000      /* files in the small store */
#define LARGE 12000     /* and in the large one */
#define PER_DIR 100     /* files per directory, as in bench/stillbench's trees */
/* Bytes of peak resident memory per file that a capture may take, whole and with a previous
 * snapshot: about 280 and 440 at the time of writing (the bench's figure 9 measures the same
 * on 100,000 files). Well above both, to fail only on a real regression. */
#define MAX_PER_FILE_FULL 400
#define MAX_PER_FILE_PREV 600

static char base[64];

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *f)
{
	(void)s, (void)flag, (void)f;
	return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

static void setup(void)
{
	snprintf(base, sizeof base, "/tmp/stillfs-ut-mem-XXXXXX");
	cr_assert_not_null(mkdtemp(base));
	log_init("test_capmem");
	log_set_quiet(1);
}

static void teardown(void)
{
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* base/NAME: n files of 100 bytes in directories of PER_DIR, paths like the bench's. */
static void make_store(const char *name, unsigned n)
{
	char path[PATH_MAX], data[100];
	memset(data, 'x', sizeof data);
	snprintf(path, sizeof path, "%s/%s", base, name);
	cr_assert_eq(mkdir(path, 0755), 0);
	for (unsigned i = 0; i < n; i++) {
		if (i % PER_DIR == 0) {
			snprintf(path, sizeof path, "%s/%s/d%04u", base, name, i / PER_DIR);
			cr_assert_eq(mkdir(path, 0755), 0);
		}
		snprintf(path, sizeof path, "%s/%s/d%04u/f%06u", base, name, i / PER_DIR, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
		cr_assert_eq(write(fd, data, sizeof data), (ssize_t)sizeof data);
		close(fd);
	}
}

static long status_kib(const char *key)
{
	char line[256];
	long v = -1;
	size_t k = strlen(key);
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, k) && line[k] == ':')
			v = atol(line + k + 1);
	fclose(f);
	return v;
}

/* Snapshot base/STORE into base/DEST (sharing with base/PREV unless NULL) in a child process:
 * the child's peak resident size over the capture, in KiB. */
static long capture_peak(const char *store, const char *dest, const char *prev)
{
	char s[PATH_MAX], d[PATH_MAX], p[PATH_MAX];
	int pfd[2];
	snprintf(s, sizeof s, "%s/%s", base, store);
	snprintf(d, sizeof d, "%s/%s", base, dest);
	snprintf(p, sizeof p, "%s/%s", base, prev ? prev : "");
	cr_assert_eq(pipe(pfd), 0);
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* meson test sets MALLOC_PERTURB_, which fills every allocation and so makes
		 * resident what the capture allocates but never touches: measure without it. */
		mallopt(M_PERTURB, 0);
		struct cap_opts o;
		struct cap_stats st;
		cap_opts_init(&o);
		o.store = s;
		o.dest = d;
		o.previous = prev ? p : NULL;
		o.quiet_ms = 0;
		o.uploads_before = 1; /* nothing was ever uploaded: no second to wait for */
		o.quiet = 1;
		long peak = cap_snapshot(&o, &st) == 0 ? status_kib("VmHWM") : -1;
		ssize_t w = write(pfd[1], &peak, sizeof peak);
		_exit(w == (ssize_t)sizeof peak ? 0 : 1);
	}
	close(pfd[1]);
	long peak = -1;
	ssize_t got = read(pfd[0], &peak, sizeof peak);
	close(pfd[0]);
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(got == (ssize_t)sizeof peak && peak > 0, "the capture of %s failed", store);
	return peak;
}

Test(capmem, peak_per_file, .init = setup, .fini = teardown, .timeout = 300)
{
#ifdef CAPMEM_ASAN
	cr_skip_test("built with AddressSanitizer, whose own memory grows with the capture's");
#endif
	make_store("small", SMALL);
	make_store("large", LARGE);
	long full_s = capture_peak("small", "s1", NULL), full_l = capture_peak("large", "l1", NULL);
	/* One file changed: the second capture shares all others with the first. */
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/large/d0000/f000000", base);
	FILE *f = fopen(path, "a");
	cr_assert_not_null(f);
	fputs("changed", f);
	cr_assert_eq(fclose(f), 0);
	long prev_s = capture_peak("small", "s2", "s1"), prev_l = capture_peak("large", "l2", "l1");
	double full = (full_l - full_s) * 1024.0 / (LARGE - SMALL);
	double prev = (prev_l - prev_s) * 1024.0 / (LARGE - SMALL);
	cr_log_info("peak per file: %.0f bytes for a whole capture (%ld, %ld KiB), %.0f with a "
		    "previous snapshot (%ld, %ld KiB)", full, full_s, full_l, prev, prev_s, prev_l);
	cr_expect_leq(full, MAX_PER_FILE_FULL, "a whole capture takes %.0f bytes per file at its peak "
		      "(%ld KiB for %d files, %ld KiB for %d)", full, full_l, LARGE, full_s, SMALL);
	cr_expect_leq(prev, MAX_PER_FILE_PREV, "a capture with a previous snapshot takes %.0f bytes per "
		      "file at its peak (%ld KiB for %d files, %ld KiB for %d)", prev, prev_l, LARGE,
		      prev_s, SMALL);
}
