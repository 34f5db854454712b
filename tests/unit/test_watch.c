/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for watch.c: events of watched directories reported with their ids and names, in
 * order with the markers between them (the fence a capture relies on), overflow, and errors. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "copy.h"
#include "watch.h"

static char dir[64];
static int storefd = -1, privfd = -1;

static void setup(void)
{
	snprintf(dir, sizeof dir, "/tmp/stillfs-ut-wt-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(d, 0);
	cr_assert_eq(mkdirat(d, "store", 0700), 0);
	cr_assert_eq(mkdirat(d, "store/sub", 0700), 0);
	cr_assert_eq(mkdirat(d, "private", 0700), 0);
	storefd = openat(d, "store", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	privfd = openat(d, "private", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert(storefd >= 0 && privfd >= 0);
	close(d);
}

static void teardown(void)
{
	int fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	close(storefd);
	close(privfd);
	cp_rmtree(fd, dir + strlen("/tmp/"));
	close(fd);
}

TestSuite(watch, .init = setup, .fini = teardown, .timeout = 30);

/* The drained events as one line each: "ID NAME MASK" with the marker id as "M". */
struct seen {
	char text[64][48];
	size_t n;
	int overflow;
};

static void record(void *ctx, uint32_t dir_id, const char *name, uint32_t mask)
{
	struct seen *s = ctx;
	if (dir_id == WT_OVERFLOW) {
		s->overflow = 1;
		return;
	}
	if (s->n == 64)
		return;
	const char *kind = mask & IN_CREATE ? "create" : mask & IN_MODIFY ? "modify" :
			   mask & IN_DELETE ? "delete" : mask & IN_MOVED_FROM ? "from" :
			   mask & IN_MOVED_TO ? "to" : mask & IN_ATTRIB ? "attrib" : "other";
	if (dir_id == WT_MARKER)
		snprintf(s->text[s->n++], sizeof s->text[0], "M %s", name);
	else
		snprintf(s->text[s->n++], sizeof s->text[0], "%u %s %s", dir_id, name, kind);
}

static void touch(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0, "%s: %s", name, strerror(errno));
	close(fd);
}

static void expect(const struct seen *s, const char *const *want, size_t n)
{
	for (size_t i = 0; i < n && i < s->n; i++)
		cr_assert_str_eq(s->text[i], want[i], "event %zu", i);
	cr_assert_eq(s->n, n, "%zu events, not %zu (last: %s)", s->n, n,
		     s->n ? s->text[s->n - 1] : "none");
}

Test(watch, events_come_in_order_with_the_markers_between_them)
{
	struct wt *w;
	struct seen s = { 0 };
	int sub = openat(storefd, "sub", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_eq(wt_open(&w, privfd), 0);
	cr_assert_geq(wt_fd(w), 0);
	cr_assert_eq(wt_add(w, storefd, 7), 0);
	cr_assert_eq(wt_add(w, sub, 9), 0);
	cr_assert_eq(wt_drain(w, record, &s), 0, "events before anything happened");

	touch(storefd, "a");
	cr_assert_eq(wt_marker(w, 1), 0);
	touch(sub, "b");
	cr_assert_eq(renameat(sub, "b", storefd, "c"), 0);
	cr_assert_eq(wt_marker(w, 2), 0);
	cr_assert_eq(unlinkat(storefd, "a", 0), 0);
	/* A marker number past the last file wraps around. */
	cr_assert_eq(wt_marker(w, 64 + 3), 0);
	int rc = wt_drain(w, record, &s);
	static const char *const want[] = {
		"7 a create", "M 01", "9 b create", "9 b from", "7 c to", "M 02", "7 a delete",
		"M 03",
	};
	cr_assert_eq(rc, 8);
	expect(&s, want, 8);
	/* Drained: nothing more. */
	s.n = 0;
	cr_assert_eq(wt_drain(w, record, &s), 0);
	close(sub);
	wt_close(w);
}

Test(watch, unwatch_stops_the_store_events)
{
	struct wt *w;
	struct seen s = { 0 };
	cr_assert_eq(wt_open(&w, privfd), 0);
	cr_assert_eq(wt_add(w, storefd, 1), 0);
	wt_unwatch(w);
	touch(storefd, "late");
	cr_assert_geq(wt_drain(w, record, &s), 0);
	cr_assert_eq(s.n, 0, "an event after unwatch: %s", s.n ? s.text[0] : "");
	/* Twice is harmless, as is closing after it. */
	wt_unwatch(w);
	wt_close(w);
	wt_close(NULL);
	wt_unwatch(NULL);
}

Test(watch, a_full_queue_reports_overflow)
{
	/* More events than the kernel queues (fs.inotify.max_queued_events, 16384 by default):
	 * modifications alternating between two files, so that none merges with the one before. */
	FILE *f = fopen("/proc/sys/fs/inotify/max_queued_events", "r");
	long max = 16384;
	if (f) {
		if (fscanf(f, "%ld", &max) != 1)
			max = 16384;
		fclose(f);
	}
	if (max > 1 << 20)
		cr_skip_test("max_queued_events is %ld: too many events to make", max);
	struct wt *w;
	struct seen s = { 0 };
	cr_assert_eq(wt_open(&w, privfd), 0);
	cr_assert_eq(wt_add(w, storefd, 1), 0);
	int fd[2];
	touch(storefd, "x");
	touch(storefd, "y");
	fd[0] = openat(storefd, "x", O_WRONLY | O_CLOEXEC);
	fd[1] = openat(storefd, "y", O_WRONLY | O_CLOEXEC);
	for (long i = 0; i < max + 100; i++)
		cr_assert_eq(pwrite(fd[i & 1], "z", 1, 0), 1);
	close(fd[0]);
	close(fd[1]);
	cr_assert_gt(wt_drain(w, record, &s), max);
	cr_assert(s.overflow, "no overflow reported after %ld events", max + 100);
	wt_close(w);
}

Test(watch, errors)
{
	struct wt *w;
	/* No private directory for the markers. */
	cr_assert_lt(wt_open(&w, -1), 0);
	cr_assert_eq(wt_open(&w, privfd), 0);
	/* A file is not a directory to watch; a closed descriptor is nothing. */
	touch(storefd, "file");
	int fd = openat(storefd, "file", O_RDONLY | O_CLOEXEC);
	cr_assert_eq(wt_add(w, fd, 1), -ENOTDIR);
	close(fd);
	cr_assert_eq(wt_add(w, fd, 1), -ENOENT);
	/* A marker whose file is gone. */
	cr_assert_eq(unlinkat(privfd, "m05", 0), 0);
	cr_assert_eq(wt_marker(w, 5), -ENOENT);
	cr_assert_eq(wt_marker(w, 6), 0);
	wt_close(w);
}
