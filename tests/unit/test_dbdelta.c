/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for dbdelta.c: a copy brought up to date page by page, its block digests, and a
 * live file truncated while it is being compared. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "copy.h"
#include "dbdelta.h"

#define MiB ((uint64_t)1 << 20)
#define PAGE 4096

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof dir, "/tmp/stillfs-ut-dd-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char p[128];
	const char *names[] = { "live", "copy" };
	for (size_t i = 0; i < 2; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
}

TestSuite(dbdelta, .init = setup, .fini = teardown, .timeout = 60);

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
		p[i] = (uint8_t)rng;
	}
}

static int open_in_dir(const char *name)
{
	char p[128];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0, "open %s: %s", p, strerror(errno));
	return fd;
}

static void put(int fd, const void *p, size_t n, uint64_t off)
{
	cr_assert_eq(pwrite(fd, p, n, (off_t)off), (ssize_t)n);
}

static uint8_t *slurp(int fd, uint64_t *len)
{
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	*len = (uint64_t)st.st_size;
	uint8_t *b = malloc(*len + 1);
	cr_assert_not_null(b);
	cr_assert_eq(pread(fd, b, *len, 0), (ssize_t)*len);
	return b;
}

Test(dbdelta, sync_rewrites_only_the_pages_that_differ)
{
	const uint64_t len = 8 * MiB + 3 * 1024;
	uint8_t *data = malloc(len + 200 * 1024);
	cr_assert_not_null(data);
	fill_random(data, len);
	int live = open_in_dir("live"), copy = open_in_dir("copy");
	put(live, data, len, 0);

	struct dd_blocks b;
	struct dd_result r;
	dd_init(&b);
	cr_assert_eq(dd_copy(live, copy, 1, 2, &b, &r), 0);
	cr_assert(dd_all_valid(&b));

	/* Three pages change (two of them adjacent, in block 2; one in block 5) and the file
	 * grows by 200 KiB, which changes the last block and adds one. */
	fill_random(data + 2 * MiB + 5 * PAGE, 2 * PAGE);
	fill_random(data + 5 * MiB + 100 * PAGE, 10);
	fill_random(data + len, 200 * 1024);
	put(live, data + 2 * MiB + 5 * PAGE, 2 * PAGE, 2 * MiB + 5 * PAGE);
	put(live, data + 5 * MiB + 100 * PAGE, PAGE, 5 * MiB + 100 * PAGE);
	put(live, data + len, 200 * 1024, len);

	cr_assert_eq(dd_sync(live, copy, -1, 2, &b, &r), 0);
	uint64_t clen, llen;
	uint8_t *got = slurp(copy, &clen), *want = slurp(live, &llen);
	cr_assert_eq(clen, llen);
	cr_assert(!memcmp(got, want, llen), "the copy is not the live file");
	/* The last old page was partial (3 KiB) and now differs; the rest is new and different. */
	uint64_t grown = 200 * 1024 + (len - 8 * MiB);
	cr_assert_eq(r.written, 3 * PAGE + grown, "wrote %llu bytes",
		     (unsigned long long)r.written);
	for (size_t i = 0; i < b.n; i++)
		cr_assert_eq(b.valid[i], !(i == 2 || i == 5 || i == 8), "block %zu valid %d", i,
			     b.valid[i]);

	/* Rehashed, the digest is the one the manifest would get from a fresh copy. */
	struct cp_result ref;
	cr_assert_eq(dd_rehash(copy, 2, &b), 0);
	cr_assert_eq(cp_digest_fd(live, &ref), 0);
	uint8_t d[32];
	dd_digest(&b, d);
	cr_assert_arr_eq(d, ref.digest, 32);

	dd_free(&b);
	free(got), free(want), free(data);
	close(live), close(copy);
}

/* ---- a live file that shrinks while it is compared ---------------------------------------- */

struct shrinker {
	int fd;
	uint64_t len;
	volatile int stop;
};

static void *shrink_loop(void *arg)
{
	struct shrinker *s = arg;
	while (!s->stop) {
		if (ftruncate(s->fd, 0) < 0 || ftruncate(s->fd, (off_t)s->len) < 0)
			break;
	}
	return NULL;
}

/* Compare the live file with its copy over and over while another thread truncates and
 * extends it (b describes the copy afterwards); returns how many compares saw the truncation (stops at `enough` or after
 * `seconds`). Any result but 0 or -EAGAIN fails. */
static int race_truncation(int live, int copy, uint64_t len, unsigned threads,
			   struct dd_blocks *b, int enough, int seconds,
			   const struct dd_premap *p)
{
	struct dd_result r;
	cr_assert_eq(dd_copy(live, copy, 0, 1, b, &r), 0);
	struct shrinker s = { .fd = open_in_dir("live"), .len = len };
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, shrink_loop, &s), 0);
	int again = 0;
	time_t t0 = time(NULL);
	while (again < enough && time(NULL) - t0 < seconds) {
		int rc = p ? dd_sync_premapped(live, copy, threads, b, p, &r)
			   : dd_sync(live, copy, -1, threads, b, &r);
		cr_assert(rc == 0 || rc == -EAGAIN, "dd_sync: %s", strerror(-rc));
		again += rc == -EAGAIN;
	}
	s.stop = 1;
	pthread_join(t, NULL);
	close(s.fd);
	return again;
}

static int make_live(uint64_t len, int *copy)
{
	uint8_t *data = malloc(len);
	cr_assert_not_null(data);
	fill_random(data, len);
	int live = open_in_dir("live");
	put(live, data, len, 0);
	free(data);
	*copy = open_in_dir("copy");
	return live;
}

Test(dbdelta, live_file_truncated_during_the_compare)
{
	/* The compare reads the live file through a mapping; pages past a truncation raise
	 * SIGBUS, which must come back as -EAGAIN (the caller retries later), never kill us.
	 * Another thread truncates and extends the file as fast as it can; the compares must
	 * see that at least 20 times, within the time allowed. */
	const uint64_t len = 32 * MiB;
	struct dd_blocks b;
	struct dd_result r;
	int copy, live = make_live(len, &copy);
	dd_init(&b);
	int again = race_truncation(live, copy, len, 2, &b, 20, 20, NULL);
	cr_assert_geq(again, 20, "only %d compares saw the truncation", again);

	/* Afterwards, b still describes the copy: a quiet sync makes it the live file. */
	cr_assert_eq(dd_sync(live, copy, -1, 2, &b, &r), 0);
	uint64_t clen, llen;
	uint8_t *got = slurp(copy, &clen), *want = slurp(live, &llen);
	cr_assert_eq(clen, llen);
	cr_assert(!memcmp(got, want, llen));
	/* ... and the blocks it calls valid are: rehashed, the digest is the live file's. */
	struct cp_result ref;
	uint8_t d[32];
	cr_assert_eq(dd_rehash(copy, 2, &b), 0);
	cr_assert_eq(cp_digest_fd(live, &ref), 0);
	dd_digest(&b, d);
	cr_assert_arr_eq(d, ref.digest, 32);
	free(got), free(want);
	dd_free(&b);
	close(live), close(copy);
}

static int child_status(pid_t pid)
{
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return st;
}

Test(dbdelta, caller_blocking_sigbus_is_not_killed)
{
	/* The calling thread compares too; if it blocks SIGBUS, a fault in the mapping would kill
	 * the process, so it must read with pread instead. In a child, since it may die. The
	 * child's exit status says whether the compares really met the truncation (exit 3 if
	 * fewer than 10 saw it): a run in which no compare did proves nothing. */
	const uint64_t len = 16 * MiB;
	int copy, live = make_live(len, &copy);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		sigset_t bus;
		sigemptyset(&bus);
		sigaddset(&bus, SIGBUS);
		pthread_sigmask(SIG_BLOCK, &bus, NULL);
		struct dd_blocks b;
		dd_init(&b);
		_exit(race_truncation(live, copy, len, 1, &b, 10, 20, NULL) >= 10 ? 0 : 3);
	}
	int st = child_status(pid);
	cr_assert(!WIFSIGNALED(st), "the compare was killed by signal %d", WTERMSIG(st));
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 3,
		  "fewer than 10 compares saw the truncation: the race was not run");
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the compare failed (status %#x)", st);
	close(live), close(copy);
}

static void earlier_handler(int sig)
{
	(void)sig;
	_exit(42);
}

Test(dbdelta, sigbus_not_ours_keeps_its_action)
{
	/* After dbdelta's handler is in place, a SIGBUS sent with kill(2), or a fault in a
	 * mapping of someone else's, must still reach the handler that was there before. */
	const uint64_t len = 4 * MiB;
	for (int how = 0; how < 2; how++) {
		int copy, live = make_live(len, &copy);
		pid_t pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			struct dd_blocks b;
			struct dd_result r;
			struct sigaction sa = { .sa_handler = earlier_handler };
			sigemptyset(&sa.sa_mask);
			if (sigaction(SIGBUS, &sa, NULL) < 0)
				_exit(4);
			dd_init(&b);
			if (dd_copy(live, copy, 0, 1, &b, &r) || dd_sync(live, copy, -1, 2, &b, &r))
				_exit(2);
			if (how == 0) {
				kill(getpid(), SIGBUS);
			} else {
				uint8_t *m = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, live, 0);
				if (m == MAP_FAILED || ftruncate(live, 0) < 0)
					_exit(3);
				volatile uint8_t x = m[PAGE];
				(void)x;
			}
			_exit(0);
		}
		int st = child_status(pid);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 42,
			  "%s: status %#x, the earlier handler did not run", how ? "fault" : "kill", st);
		close(live), close(copy);
	}
}

Test(dbdelta, zerofill_reads_zeros_past_a_truncation)
{
	/* SQLite's own mapping of a live database (dd_zerofill): a page past a truncation reads
	 * as zeros and is reported; outside dd_zerofill_begin/end the fault is not ours and goes
	 * to the handler that was there before (it exits 42). In a child, which says "ok" when it
	 * gets to that last fault; an exit code under 42 says what went wrong before. */
	const uint64_t len = 4 * MiB;
	int copy, live = make_live(len, &copy), pp[2];
	cr_assert_eq(pipe(pp), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(pp[0]);
		struct sigaction sa = { .sa_handler = earlier_handler };
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGBUS, &sa, NULL) < 0)
			_exit(1);
		uint8_t first;
		if (pread(live, &first, 1, 0) != 1)
			_exit(2);
		const volatile uint8_t *m = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, live, 0);
		if (m == MAP_FAILED || ftruncate(live, PAGE) < 0)
			_exit(3);
		if (dd_zerofill_begin() != 0)
			_exit(4);
		uint8_t a = m[0], b = m[PAGE + 7];
		if (dd_zerofill_end() != 1)
			_exit(5);
		if (a != first || b != 0)
			_exit(6);
		if (dd_zerofill_begin() != 0)
			_exit(7);
		a = m[1];
		if (dd_zerofill_end() != 0)
			_exit(7);
		munmap((void *)(uintptr_t)m, 2 * PAGE);
		m = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, live, 0);
		if (m == MAP_FAILED)
			_exit(8);
		if (write(pp[1], "ok", 2) != 2)
			_exit(9);
		(void)m[PAGE]; /* not within begin/end: the earlier handler */
		_exit(10);
	}
	close(pp[1]);
	char got[3] = { 0 };
	ssize_t n = read(pp[0], got, 2);
	close(pp[0]);
	int st = child_status(pid);
	cr_assert(n == 2 && WIFEXITED(st) && WEXITSTATUS(st) == 42,
		  "status %#x (exit %d, %s): zeros past the truncation, reported, and the earlier "
		  "handler outside", st, WIFEXITED(st) ? WEXITSTATUS(st) : -1,
		  n == 2 ? "reached the end" : "stopped before");
	close(live), close(copy);
}

/* Both files mapped in before "the lock": writes in place, growth and truncation after that
 * are all seen, and the compare takes (almost) no page fault where one without the premap
 * takes one per few pages. */
#if defined(__SANITIZE_ADDRESS__)
#define DBDELTA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DBDELTA_ASAN 1
#endif
#endif

Test(dbdelta, premapped_compare_sees_later_writes_without_faults)
{
	const uint64_t len = 16 * MiB;
	uint8_t *data = malloc(32 * MiB);
	cr_assert_not_null(data);
	fill_random(data, 32 * MiB);
	int live = open_in_dir("live"), copy = open_in_dir("copy");
	put(live, data, len, 0);
	struct dd_blocks b;
	struct dd_result r, plain;
	struct dd_premap p;
	dd_init(&b);
	cr_assert_eq(dd_copy(live, copy, 0, 1, &b, &r), 0);

	/* Without a premap: the control. */
	put(live, data + 20 * MiB, PAGE, 3 * MiB);
	cr_assert_eq(dd_sync_premapped(live, copy, 2, &b, NULL, &plain), 0);
	cr_assert_eq(plain.pages, 1);

	/* Pages rewritten in place and the file grown, after the premap. */
	cr_assert_eq(dd_premap(live, copy, &p), 0);
	put(live, data + 21 * MiB, 2 * PAGE, 7 * MiB + 3 * PAGE);
	put(live, data + 22 * MiB, PAGE, 15 * MiB);
	put(live, data + 23 * MiB, 64 * 1024, len);
	cr_assert_eq(dd_sync_premapped(live, copy, 2, &b, &p, &r), 0);
	uint64_t clen, llen;
	uint8_t *got = slurp(copy, &clen), *want = slurp(live, &llen);
	cr_assert_eq(clen, llen);
	cr_assert(!memcmp(got, want, llen), "the copy is not the live file");
	free(got), free(want);
	cr_assert_eq(r.pages, 3 + 16, "%llu pages", (unsigned long long)r.pages);
#ifndef DBDELTA_ASAN /* its memcmp reads shadow memory too, which faults in as it goes */
	cr_assert(plain.faults >= 64 && r.faults * 8 < plain.faults,
		  "faults: %llu premapped, %llu not", (unsigned long long)r.faults,
		  (unsigned long long)plain.faults);
#endif
	/* Again through the same mappings: the pages written stay mapped. */
	put(live, data + 24 * MiB, PAGE, 9 * MiB);
	cr_assert_eq(dd_sync_premapped(live, copy, 2, &b, &p, &r), 0);
	cr_assert_eq(r.pages, 1);
	dd_premap_drop(&p);

	/* Shrunk after the premap. */
	cr_assert_eq(dd_premap(live, copy, &p), 0);
	cr_assert_eq(ftruncate(live, (off_t)(5 * MiB + 100)), 0);
	put(live, data + 25 * MiB, PAGE, 2 * MiB);
	cr_assert_eq(dd_sync_premapped(live, copy, 2, &b, &p, &r), 0);
	got = slurp(copy, &clen), want = slurp(live, &llen);
	cr_assert_eq(clen, 5 * MiB + 100);
	cr_assert(clen == llen && !memcmp(got, want, llen), "the shrunk copy differs");
	free(got), free(want);
	dd_premap_drop(&p);

	/* Grown past what was mapped, and mappings of other files: not used. */
	cr_assert_eq(dd_premap(live, copy, &p), 0);
	put(live, data, 30 * MiB, 0);
	cr_assert_eq(dd_sync_premapped(live, copy, 2, &b, &p, &r), 0);
	dd_premap_drop(&p);
	cr_assert_eq(dd_premap(copy, live, &p), 0);
	put(live, data + 26 * MiB, PAGE, 29 * MiB);
	cr_assert_eq(dd_sync_premapped(live, copy, 2, &b, &p, &r), 0);
	dd_premap_drop(&p);
	got = slurp(copy, &clen), want = slurp(live, &llen);
	cr_assert_eq(clen, 30 * MiB);
	cr_assert(clen == llen && !memcmp(got, want, llen), "the grown copy differs");
	free(got), free(want);

	/* Truncated and extended over and over while compared through a premap. */
	cr_assert_eq(dd_premap(live, copy, &p), 0);
	race_truncation(live, copy, 30 * MiB, 2, &b, 20, 5, &p);
	dd_premap_drop(&p);
	dd_free(&b);
	free(data);
	close(live), close(copy);
}
