/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for gen.c, the generation manager: when `.snapshot` gets a new generation, what a
 * pin holds, what a failed capture leaves, which directories of the cache go and which stay
 * (spare, kept), with a fake capture that only makes the generation's directory. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "copy.h"
#include "gen.h"
#include "util.h"

static char dir[64];
static int cachefd = -1;

/* What the fake capture was asked, and what it is to answer. */
struct fake {
	int calls;
	int fail;               /* -errno to return instead of capturing */
	double delay;           /* seconds to take */
	int gate;               /* > 0: a pipe to read a byte from before capturing */
	char name[32], prev[32], recycle[32];
	double uploads_before;
	int64_t redate_after, redate_until;
};

static int fake_capture(void *arg, const char *name, const char *prev, const char *recycle,
			double uploads_before, int64_t redate_after, int64_t redate_until,
			struct cap_stats *st, char *err, size_t errlen)
{
	struct fake *f = arg;
	f->calls++;
	snprintf(f->name, sizeof f->name, "%s", name);
	snprintf(f->prev, sizeof f->prev, "%s", prev ? prev : "");
	snprintf(f->recycle, sizeof f->recycle, "%s", recycle ? recycle : "");
	f->uploads_before = uploads_before;
	f->redate_after = redate_after;
	f->redate_until = redate_until;
	if (f->delay > 0)
		usleep((useconds_t)(f->delay * 1e6));
	char byte;
	if (f->gate > 0 && read(f->gate, &byte, 1) != 1)
		return -EIO;
	if (f->fail) {
		snprintf(err, errlen, "fake capture failed");
		return f->fail;
	}
	/* What the capture leaves is the generation's directory; a file in it shows a later
	 * recycle or removal. */
	if (mkdirat(cachefd, name, 0700) < 0)
		return -errno;
	char path[64];
	snprintf(path, sizeof path, "%s/f", name);
	int fd = openat(cachefd, path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	close(fd);
	snprintf(st->id, sizeof st->id, "id-%s", name);
	st->files = 1;
	return 0;
}

static void setup(void)
{
	snprintf(dir, sizeof dir, "/tmp/stillfs-ut-gen-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	cachefd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(cachefd, 0);
	log_set_quiet(1);
}

static void teardown(void)
{
	int fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cp_rmtree(fd, dir + strlen("/tmp/"));
	close(fd);
	close(cachefd);
}

TestSuite(gen, .init = setup, .fini = teardown, .timeout = 30);

static int exists(const char *name)
{
	return faccessat(cachefd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

static struct genmgr *mgr(struct fake *f, double max_age, double linger, int recycle,
			  double kept_until)
{
	struct genmgr *gm;
	struct gen_cfg cfg = { .cachefd = cachefd, .max_age = max_age, .linger = linger,
			       .recycle = recycle, .kept_until = kept_until,
			       .capture = fake_capture, .arg = f };
	cr_assert_eq(gen_init(&gm, &cfg), 0);
	return gm;
}

/* gen_acquire's generation, its reference dropped at once. */
static unsigned long acquire_seq(struct genmgr *gm)
{
	struct gen *g;
	int rc = gen_acquire(gm, &g);
	if (rc)
		return 0;
	unsigned long s = gen_seq(g);
	gen_unref(gm, g);
	return s;
}

static int status_has(struct genmgr *gm, int detailed, const char *line)
{
	char *s = gen_status(gm, detailed);
	cr_assert_not_null(s);
	int has = strstr(s, line) != NULL;
	free(s);
	return has;
}

Test(gen, first_acquire_captures_then_serves_the_same_until_max_age)
{
	struct fake f = { 0 };
	struct genmgr *gm = mgr(&f, 3600, 0, 0, 0);
	cr_assert_eq(gen_current_seq(gm), 0);
	cr_assert_eq(gen_open_current(gm), -ENOENT);
	cr_assert(status_has(gm, 0, "generation: none\n"));

	cr_assert_eq(acquire_seq(gm), 1);
	cr_assert_eq(f.calls, 1);
	cr_assert_str_eq(f.name, "gen-1");
	cr_assert_str_eq(f.prev, "", "the first capture has nothing to share with");
	cr_assert(exists("gen-1"));
	/* Younger than max_age: served again, no new capture. */
	cr_assert_eq(acquire_seq(gm), 1);
	cr_assert_eq(f.calls, 1);
	int fd = gen_open_current(gm);
	cr_assert_geq(fd, 0);
	cr_assert_eq(faccessat(fd, "f", F_OK, 0), 0, "not the generation's directory");
	close(fd);
	cr_assert(status_has(gm, 0, "generation: 1\n"));
	cr_assert(status_has(gm, 0, "id: id-gen-1\n"));
	cr_assert(status_has(gm, 0, "captures_ok: 1\n"));
	gen_destroy(gm);
}

Test(gen, stale_and_unpinned_is_replaced_pinned_is_not)
{
	struct fake f = { 0 };
	struct genmgr *gm = mgr(&f, 0, 0, 0, 0);
	struct gen *g;
	cr_assert_eq(gen_acquire(gm, &g), 0);
	cr_assert_eq(gen_seq(g), 1);
	/* An open handle pins it: max_age 0 does not replace it. */
	cr_assert_eq(gen_pin(gm, g, 1), 0);
	cr_assert_eq(acquire_seq(gm), 1);
	cr_assert_eq(f.calls, 1);
	cr_assert(status_has(gm, 0, "pinned: yes\n"));
	/* ... but a refresh does, sharing files with it. */
	cr_assert_eq(gen_refresh(gm), 0);
	cr_assert_eq(gen_current_seq(gm), 2);
	cr_assert_str_eq(f.prev, "gen-1");
	/* The old one is still open: not deleted. */
	cr_assert_eq(gen_reap(gm, NULL) > 0, 1);
	cr_assert(exists("gen-1"));
	gen_unpin(gm, g, 1);
	gen_unref(gm, g);
	/* Unpinned, linger 0: the next acquire replaces gen-2, and gen-1 can go. */
	cr_assert_eq(acquire_seq(gm), 3);
	cr_assert_str_eq(f.prev, "gen-2");
	gen_destroy(gm);
}

/* An upload reading generation 1 after a refresh made generation 2: generation 2 may have
 * dated its changes before that upload ended. Once the old file is closed, the next opener
 * gets a new capture, pinned or not, even while another file is open, that dates anew the
 * files dated between generation 1's cut and that read; a capture after that one redates
 * nothing. */
Test(gen, read_of_an_older_generation_after_a_newer_cut_is_captured_anew)
{
	struct fake f = { 0 };
	struct genmgr *gm = mgr(&f, 3600, 3600, 0, 0);
	struct gen *g;
	cr_assert_eq(gen_acquire(gm, &g), 0);
	cr_assert_eq(gen_pin(gm, g, 1), 0);
	cr_assert_eq(gen_refresh(gm), 0);
	cr_assert_eq(f.redate_until, 0, "nothing was read late yet");
	/* Still open: a new capture now would be overtaken again; generation 2 is served. */
	struct gen *g2;
	cr_assert_eq(gen_acquire(gm, &g2), 0);
	cr_assert_eq(gen_seq(g2), 2);
	cr_assert_eq(f.calls, 2);
	cr_assert_eq(gen_pin(gm, g2, 1), 0);
	gen_unpin(gm, g, 1);
	gen_unref(gm, g);
	/* Closed: generation 2 is pinned (a file open, linger 3600) but is replaced: whoever
	 * opened it now would skip what it dated before that read ended. */
	cr_assert_eq(acquire_seq(gm), 3);
	cr_assert_eq(f.calls, 3);
	cr_assert_str_eq(f.prev, "gen-2");
	cr_assert_gt(f.redate_until, f.redate_after, "the files dated before the read end");
	cr_assert_geq(f.uploads_before + 1, (double)f.redate_until,
		      "uploads_before %.3f is before the late read %lld", f.uploads_before,
		      (long long)f.redate_until);
	/* The upload of generation 2 reads past that cut in turn: the next opener, another. */
	gen_unpin(gm, g2, 1);
	gen_unref(gm, g2);
	cr_assert_eq(acquire_seq(gm), 4);
	cr_assert_eq(f.calls, 4);
	/* Taken into account: served again, and the next capture redates nothing. */
	cr_assert_eq(acquire_seq(gm), 4);
	cr_assert_eq(gen_refresh(gm), 0);
	cr_assert_eq(f.redate_until, 0);
	gen_destroy(gm);
}

static struct gen *dead_seen[8];
static size_t n_dead_seen;

static void on_dead(struct gen *g)
{
	cr_assert(gen_dead(g));
	if (n_dead_seen < 8)
		dead_seen[n_dead_seen++] = g;
}

Test(gen, reap_deletes_old_unpinned_generations_and_calls_on_dead)
{
	struct fake f = { 0 };
	struct genmgr *gm = mgr(&f, 0, 0, 0, 0);
	struct gen *old;
	cr_assert_eq(gen_acquire(gm, &old), 0);   /* a node's reference: outlives the directory */
	cr_assert_eq(acquire_seq(gm), 2);
	n_dead_seen = 0;
	cr_assert_eq(gen_reap(gm, on_dead), 0, "something was deleted: 0 (look again now)");
	cr_assert_eq(n_dead_seen, 1);
	cr_assert_eq(dead_seen[0], old);
	cr_assert(!exists("gen-1"));
	cr_assert(exists("gen-2"), "the current generation is never reaped");
	cr_assert_eq(gen_pin(gm, old, 0), -ESTALE, "a handle opened on a deleted generation");
	cr_assert(status_has(gm, 0, "generations_deleted: 1\n"));
	gen_unref(gm, old);
	gen_destroy(gm);
}

Test(gen, linger_keeps_a_generation_after_its_last_use)
{
	struct fake f = { 0 };
	struct genmgr *gm = mgr(&f, 0, 3600, 0, 0);
	cr_assert_eq(acquire_seq(gm), 1);
	/* Used a moment ago: pinned for an hour, whatever max_age says. */
	cr_assert_eq(acquire_seq(gm), 1);
	cr_assert_eq(f.calls, 1);
	cr_assert_eq(gen_refresh(gm), 0);
	double next = gen_reap(gm, NULL);
	cr_assert(exists("gen-1"), "deleted within its linger time");
	cr_assert_gt(next, 0, "nothing was deletable, yet the next look is now");
	gen_destroy(gm);
}

Test(gen, recycle_keeps_the_newest_deleted_one_as_spare_for_the_next_capture)
{
	struct fake f = { 0 };
	struct genmgr *gm = mgr(&f, 0, 0, 1, 0);
	cr_assert_eq(acquire_seq(gm), 1);
	cr_assert_eq(acquire_seq(gm), 2);
	cr_assert_str_eq(f.recycle, "", "no spare yet");
	cr_assert_eq(gen_reap(gm, NULL), 0);
	cr_assert(!exists("gen-1"));
	cr_assert(exists("spare/f"), "gen-1 was not kept as the spare");
	cr_assert(status_has(gm, 0, "spare_kept: yes\n"));
	cr_assert_eq(acquire_seq(gm), 3);
	cr_assert_str_eq(f.recycle, "spare");
	cr_assert(!exists("spare"), "the capture that took the spare leaves none behind");
	cr_assert(status_has(gm, 0, "spare_kept: no\n"));
	gen_destroy(gm);
}

Test(gen, failed_capture_backs_off_and_keeps_serving_the_previous)
{
	struct fake f = { .fail = -EIO };
	struct genmgr *gm = mgr(&f, 0, 0, 0, 0);
	struct gen *g = (struct gen *)&f;
	cr_assert_eq(gen_acquire(gm, &g), -EIO);
	cr_assert_null(g);
	cr_assert_eq(f.calls, 1);
	/* Within the back-off no new attempt: a store that never settles must not stall every
	 * lookup for a whole capture. */
	cr_assert_eq(acquire_seq(gm), 0);
	cr_assert_eq(f.calls, 1);
	cr_assert(status_has(gm, 1, "last_error: fake capture failed\n"));
	/* Without detail, only the kind: the message may name a private file. */
	cr_assert(status_has(gm, 0, "last_error: capture failed: Input/output error\n"));
	cr_assert(status_has(gm, 0, "captures_failed: 1\n"));
	/* A refresh tries at once, and works; a failure after that keeps the generation. */
	f.fail = 0;
	cr_assert_eq(gen_refresh(gm), 0);
	cr_assert_eq(gen_current_seq(gm), 1, "a failed attempt must not use up a number");
	f.fail = -ENOSPC;
	cr_assert_eq(gen_refresh(gm), -ENOSPC);
	cr_assert_eq(acquire_seq(gm), 1, "the previous generation is no longer served");
	cr_assert_eq(f.calls, 3);
	cr_assert(exists("gen-1"));
	gen_destroy(gm);
}

Test(gen, a_leftover_with_the_next_name_is_removed_first)
{
	struct fake f = { 0 };
	struct genmgr *gm = mgr(&f, 3600, 0, 0, 0);
	cr_assert_eq(mkdirat(cachefd, "gen-1", 0700), 0);
	cr_assert_eq(acquire_seq(gm), 1, "a stale gen-1 in the cache failed the capture");
	gen_destroy(gm);
}

struct racer {
	struct genmgr *gm;
	unsigned long seq;
};

static void *racer_run(void *arg)
{
	struct racer *r = arg;
	r->seq = acquire_seq(r->gm);
	return NULL;
}

Test(gen, callers_during_a_capture_take_its_result)
{
	struct fake f = { .delay = 0.3 };
	struct genmgr *gm = mgr(&f, 3600, 0, 0, 0);
	struct racer r[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++) {
		r[i].gm = gm;
		cr_assert_eq(pthread_create(&t[i], NULL, racer_run, &r[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(r[i].seq, 1);
	}
	cr_assert_eq(f.calls, 1, "one capture at a time, and its result for all");
	gen_destroy(gm);
}

/* Wait (the suite's timeout bounds it) until the status holds line. */
static void status_wait(struct genmgr *gm, const char *line)
{
	while (!status_has(gm, 1, line))
		usleep(1000);
}

Test(gen, callers_beyond_max_waiters_are_refused_while_a_capture_runs)
{
	int gate[2];
	cr_assert_eq(pipe(gate), 0);
	struct fake f = { .gate = gate[0] };
	struct genmgr *gm;
	struct gen_cfg cfg = { .cachefd = cachefd, .max_age = 3600, .capture = fake_capture,
			       .arg = &f, .max_waiters = 2 };
	cr_assert_eq(gen_init(&gm, &cfg), 0);
	struct racer r[3];
	pthread_t t[3];
	for (int i = 0; i < 3; i++) {
		r[i].gm = gm;
		cr_assert_eq(pthread_create(&t[i], NULL, racer_run, &r[i]), 0);
		/* the first captures, the next two wait for it */
		status_wait(gm, i ? (i == 1 ? "capture_waiters: 1\n" : "capture_waiters: 2\n")
			      : "capturing: yes\n");
	}
	struct gen *g = NULL;
	cr_assert_eq(gen_acquire(gm, &g), -EBUSY, "a third waiter must be refused at once");
	cr_assert_null(g);
	cr_assert_eq(gen_refresh(gm), -EBUSY);
	cr_assert(status_has(gm, 0, "capture_waiters_refused: 2\n"));
	cr_assert_eq(write(gate[1], "x", 1), 1);
	for (int i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(r[i].seq, 1, "caller %d waited for the capture and took its result", i);
	}
	cr_assert(status_has(gm, 0, "capture_waiters: 0\n"));
	cr_assert_eq(acquire_seq(gm), 1, "waiting is allowed again");
	cr_assert_eq(f.calls, 1);
	gen_destroy(gm);
	close(gate[0]);
	close(gate[1]);
}

/* ---- the cache across daemons ------------------------------------------------------------ */

Test(gen, clean_shutdown_keeps_the_current_generation_for_the_next_daemon)
{
	struct fake f = { 0 };
	struct genmgr *gm = mgr(&f, 0, 0, 0, 0);
	cr_assert_eq(acquire_seq(gm), 1);
	cr_assert_eq(acquire_seq(gm), 2);
	double before = (double)ut_realtime().tv_sec;
	gen_destroy(gm);
	cr_assert(exists("kept/f"), "the current generation was not kept");
	cr_assert(!exists("gen-1") && !exists("gen-2"));

	/* The next daemon finds it, and starts incremental on it without serving it. */
	double kept_until;
	cr_assert_eq(mkdirat(cachefd, "gen-7", 0700), 0);   /* leftovers of a crash */
	cr_assert_eq(mkdirat(cachefd, "marker", 0700), 0);
	cr_assert_eq(gen_clean_cache(cachefd, "marker", &kept_until), 0);
	cr_assert(kept_until >= before && kept_until < before + 60, "kept_until %.0f",
		  kept_until);
	cr_assert(!exists("gen-7"));
	cr_assert(exists("marker") && exists("kept") && exists("kept.time"));

	struct fake f2 = { 0 };
	gm = mgr(&f2, 3600, 0, 1, kept_until);
	cr_assert(status_has(gm, 0, "earlier_generation: kept\n"));
	cr_assert_eq(acquire_seq(gm), 1);
	cr_assert_str_eq(f2.prev, "kept");
	cr_assert_str_eq(f2.recycle, "kept");
	/* Changes are dated after the time the earlier daemon stopped serving, not our start. */
	cr_assert(f2.uploads_before <= kept_until + 1, "uploads_before %.3f, kept until %.3f",
		  f2.uploads_before, kept_until);
	cr_assert(!exists("kept") && !exists("kept.time"), "the kept generation outlived its use");
	cr_assert(status_has(gm, 0, "earlier_generation: none\n"));
	gen_destroy(gm);
}

Test(gen, no_generation_is_kept_while_a_file_of_one_is_open)
{
	struct fake f = { 0 };
	struct genmgr *gm = mgr(&f, 3600, 0, 0, 0);
	struct gen *g;
	cr_assert_eq(gen_acquire(gm, &g), 0);
	cr_assert_eq(gen_pin(gm, g, 1), 0);
	gen_destroy(gm);
	cr_assert(!exists("kept") && !exists("kept.time") && !exists("gen-1"));
}

Test(gen, a_kept_generation_without_a_valid_time_is_not_used)
{
	static const char *bad[] = { NULL, "", "12x\n", "-5\n", "1700000000" /* no newline */ };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		double kept_until = -1;
		cr_assert_eq(mkdirat(cachefd, "kept", 0700), 0);
		if (bad[i]) {
			int fd = openat(cachefd, "kept.time", O_WRONLY | O_CREAT | O_TRUNC, 0600);
			cr_assert_geq(fd, 0);
			cr_assert_eq(write(fd, bad[i], strlen(bad[i])), (ssize_t)strlen(bad[i]));
			close(fd);
		}
		cr_assert_eq(gen_clean_cache(cachefd, "marker", &kept_until), 0);
		cr_assert_eq(kept_until, 0, "case %zu", i);
		cr_assert(!exists("kept") && !exists("kept.time"), "case %zu: not removed", i);
	}
	/* A valid time without the directory is no kept generation either. */
	int fd = openat(cachefd, "kept.time", O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_eq(write(fd, "1700000000.5\n", 13), 13);
	close(fd);
	double kept_until = -1;
	cr_assert_eq(gen_clean_cache(cachefd, "marker", &kept_until), 0);
	cr_assert_eq(kept_until, 0);
	cr_assert(!exists("kept.time"));
}

Test(gen, clean_cache_reports_an_unreadable_cache)
{
	double kept_until;
	cr_assert_eq(gen_clean_cache(-1, "marker", &kept_until), -EBADF);
}
