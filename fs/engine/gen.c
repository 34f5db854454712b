/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Snapshot generations: which one `.snapshot` shows, when to capture a new one, when an old
 * one may go. Knows nothing of FUSE or processes; a capture is a callback.
 *
 * Rules (see SNAPSHOT GENERATIONS in stillfs(1)):
 * - `.snapshot` resolves to the current generation; a new one is captured first when there is
 *   none, or the current one is older than max_age and not pinned.
 * - A generation is pinned while a handle under it is open and for `linger` seconds after it
 *   was last used (a handle closed, or a path through .snapshot resolved to it). Pinning only
 *   stops automatic replacement; gen_refresh replaces anyway.
 * - One capture at a time; whoever asks while it runs waits for it and takes its result, but
 *   at most cfg.max_waiters at once: each waiter holds one of the daemon's request threads,
 *   and the capture itself needs some free (its helper writes mapped pages back through the
 *   mount), as does the live view. Those beyond get -EBUSY at once.
 * - An old generation is deleted as soon as it is no longer pinned; but with cfg.recycle the
 *   last one deleted is kept, renamed GEN_SPARE, for the next capture, which takes over the
 *   copies of databases that changed and rewrites only their changed pages (cap_opts.recycle)
 *   rather than writing whole new copies. Nothing can open it any more (it is dead); the
 *   capture that used it removes what is left of it.
 * - After a failed capture the previous generation stays current (or there is none, and
 *   callers get -EIO) and no new attempt is made for GEN_FAIL_BACKOFF seconds.
 * - At a clean shutdown with no file of a generation open, the current generation stays in
 *   the cache as GEN_KEPT, beside GEN_KEPT_TIME: when it stopped being readable. The next
 *   daemon never serves it; its first capture is incremental on it, so unchanged files keep
 *   their mtimes (uploaders do not send the whole store again after a restart), changed
 *   databases are recycled from it, and the cut need only fall after that time, not after the
 *   daemon's start.
 * - An upload may go on reading an older generation after a newer one was cut (a stillctl
 *   refresh while it holds files open, or names opened through a `.snapshot` handle): its
 *   objects then get upload times in or after the seconds the newer generations dated their
 *   changes in, and `aws s3 sync` would skip those files for good. Each such read (a file of a
 *   generation other than the current one closed, or one closed while a capture runs) is
 *   noted as overtaken; the next capture dates anew every file whose mtime lies between the
 *   cut of the generation read and the read (cap_opts.redate_after/until), and a current
 *   generation made before the reads is not served to the next opener: a new one is captured
 *   first, pinned or not, even while files of some generation are open. */
#include "gen.h"

#include "copy.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Captures one gen_acquire makes of its own, at most: a reader that keeps reading an older
 * generation would otherwise have every opener capture again and again. */
#define GEN_ROUNDS 1
#define GEN_SPARE "spare"
#define GEN_KEPT "kept"
#define GEN_KEPT_TIME "kept.time"

struct gen {
	struct gen *next;
	unsigned long seq;
	char name[32];             /* directory in the cache */
	int fd;                    /* O_PATH of the generation root */
	struct cap_stats stats;
	double born;               /* monotonic time the capture finished */
	double hold_until;         /* monotonic: opens of its files wait until then at most
				    * (gen_hold_reads) */
	unsigned handles;
	unsigned files;            /* of the handles, those of files: they read data */
	double last_close;
	double last_lookup;
	unsigned refs;             /* the manager's list (until dead), nodes, borrowers */
	atomic_int dead;
	/* Inode numbers of its files (gen_index), when known: a file of an older generation
	 * that is one of these holds this generation's bytes too. */
	uint64_t *inos;            /* sorted */
	size_t ninos;
	int have_inos;
};

struct genmgr {
	struct gen_cfg cfg;
	pthread_mutex_t mu;
	pthread_cond_t done;       /* a capture finished */
	pthread_cond_t wake;       /* something for the housekeeper */
	struct gen *list;
	struct gen *cur;
	unsigned long next_seq;
	int capturing;
	unsigned waiters;          /* callers waiting for the capture under way */
	unsigned long n_busy;      /* callers refused: cfg.max_waiters were waiting already */
	int spare;                 /* GEN_SPARE is in the cache, for the next capture */
	int rotating;              /* gen_reap is making a dead generation GEN_SPARE */
	unsigned long epoch;       /* captures finished so far */
	double fail_until;
	unsigned long n_ok, n_fail, n_deleted;
	double last_attempt_s;     /* wall time of the last capture, helper included */
	double born;               /* monotonic time the manager started */
	double kept_until;         /* GEN_KEPT is there, unread since (real time); else 0 */
	double dead_used;          /* the last use of a generation deleted since (monotonic) */
	/* Reads of a generation that may have ended after a newer cut (see the top): files of
	 * later generations dated in (over_lo, over_hi], whole seconds of real time, are to be
	 * dated anew. over_n counts those reads not yet taken into account by a capture. */
	int64_t over_lo, over_hi;
	unsigned long over_n;
	int last_rc;
	char last_err[512];
	struct timespec last_err_at;
};

int gen_init(struct genmgr **out, const struct gen_cfg *cfg)
{
	struct genmgr *gm = calloc(1, sizeof *gm);
	if (!gm)
		return -ENOMEM;
	gm->cfg = *cfg;
	gm->born = ut_now();
	gm->kept_until = cfg->kept_until;
	pthread_mutex_init(&gm->mu, NULL);
	pthread_cond_init(&gm->done, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&gm->wake, &ca);
	pthread_condattr_destroy(&ca);
	*out = gm;
	return 0;
}

static void gen_free(struct gen *g)
{
	if (g->fd >= 0)
		close(g->fd);
	free(g->inos);
	free(g);
}

struct gen_inos {
	uint64_t *v;
	size_t n, cap;
};

/* Add the inode number of every regular file below directory fd (consumed) to a. 0 or
 * -errno. */
static int gen_index_dir(int fd, struct gen_inos *a, int depth)
{
	DIR *d = depth > 256 ? NULL : fdopendir(fd);
	if (!d) {
		int rc = depth > 256 ? -ELOOP : -errno;
		close(fd);
		return rc;
	}
	int rc = 0;
	struct dirent *de;
	while (!rc && (de = readdir(d))) {
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISREG(st.st_mode)) {
			if (a->n == a->cap) {
				size_t cap = a->cap ? a->cap * 2 : 1024;
				uint64_t *v = realloc(a->v, cap * sizeof *v);
				if (!v) {
					rc = -ENOMEM;
					break;
				}
				a->v = v;
				a->cap = cap;
			}
			a->v[a->n++] = (uint64_t)st.st_ino;
		} else if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd(d), de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				rc = gen_index_dir(sub, a, depth + 1);
		}
	}
	closedir(d);
	return rc;
}

static int gen_cmp_ino(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* g's file inodes into g->inos (have_inos set on success; on failure, nothing is known and
 * every read of an older generation counts as overtaking, as before). */
static void gen_index(int cachefd, const char *name, struct gen *g)
{
	struct gen_inos a = { 0 };
	int fd = openat(cachefd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || gen_index_dir(fd, &a, 0)) {
		free(a.v);
		return;
	}
	qsort(a.v, a.n, sizeof *a.v, gen_cmp_ino);
	g->inos = a.v;
	g->ninos = a.n;
	g->have_inos = 1;
}

static int gen_has_ino(const struct gen *g, uint64_t ino)
{
	return g->have_inos && bsearch(&ino, g->inos, g->ninos, sizeof ino, gen_cmp_ino);
}

static void gen_unref_locked(struct genmgr *gm, struct gen *g)
{
	if (--g->refs)
		return;
	for (struct gen **pp = &gm->list; *pp; pp = &(*pp)->next)
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	gen_free(g);
}

/* Keep g as GEN_KEPT for the next daemon. GEN_KEPT_TIME is written last, so that a GEN_KEPT
 * without it (a crash in between) is never used; and only once the cache's file system has
 * written everything back: captures never sync, and the next daemon shares the kept files
 * after checking only their size and mtime, so after a power cut they must not be torn.
 * 0 or -errno. */
static int gen_keep(struct genmgr *gm, struct gen *g)
{
	int cfd = gm->cfg.cachefd, rc = 0;
	char buf[64];
	unlinkat(cfd, GEN_KEPT_TIME, 0);
	cp_rmtree(cfd, GEN_KEPT);
	if (renameat(cfd, g->name, cfd, GEN_KEPT) < 0)
		return -errno;
	double t0 = ut_now();
	if (syncfs(cfd) < 0) {
		rc = -errno;
		cp_rmtree(cfd, GEN_KEPT);
		return rc;
	}
	if (ut_now() - t0 > 1)
		log_info("writing the kept generation back to disk took %.1f s", ut_now() - t0);
	struct timespec rt = ut_realtime();
	int n = snprintf(buf, sizeof buf, "%lld.%09ld\n", (long long)rt.tv_sec, rt.tv_nsec);
	errno = 0;
	int fd = openat(cfd, GEN_KEPT_TIME ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW |
			O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, buf, (size_t)n) != n || fsync(fd) < 0)
		rc = errno ? -errno : -EIO;
	if (fd >= 0)
		close(fd);
	if (!rc && renameat(cfd, GEN_KEPT_TIME ".tmp", cfd, GEN_KEPT_TIME) < 0)
		rc = -errno;
	if (!rc && fsync(cfd) < 0)
		rc = -errno;
	if (rc) {
		unlinkat(cfd, GEN_KEPT_TIME ".tmp", 0);
		unlinkat(cfd, GEN_KEPT_TIME, 0);
		cp_rmtree(cfd, GEN_KEPT);
	}
	return rc;
}

void gen_destroy(struct genmgr *gm)
{
	if (!gm)
		return;
	/* Shutdown: the session is gone, so the daemon answers nothing any more; but a file still
	 * open after a lazy unmount (a SIGTERM while an upload runs) can still be read, through
	 * passthrough or the page cache. Only with no file of any generation open is now when the
	 * last upload of a snapshot may have ended: then the current generation stays for the next
	 * daemon, and the others go. A directory still open reads no data, and its files can no
	 * longer be opened. */
	int kept = 0;
	unsigned open = 0;
	for (struct gen *g = gm->list; g; g = g->next)
		open += g->files;
	if (gm->cur && open)
		log_info("not keeping generation %lu for the next start: %u files of generations "
			 "are still open", gm->cur->seq, open);
	else if (gm->cur && gm->over_n)
		log_info("not keeping generation %lu for the next start: an older generation was "
			 "read after it was cut, and it has not been captured anew since",
			 gm->cur->seq);
	if (gm->cur && !open && !gm->over_n) {
		int rc = gen_keep(gm, gm->cur);
		kept = rc == 0;
		if (rc)
			log_warn("cannot keep generation %lu for the next start: %s", gm->cur->seq,
				 strerror(-rc));
		else
			log_info("generation %lu kept in the cache for the next start",
				 gm->cur->seq);
	}
	for (struct gen *g = gm->list, *next; g; g = next) {
		next = g->next;
		if (!(kept && g == gm->cur))
			cp_rmtree(gm->cfg.cachefd, g->name);
		gen_free(g);
	}
	cp_rmtree(gm->cfg.cachefd, GEN_SPARE);
	pthread_mutex_destroy(&gm->mu);
	pthread_cond_destroy(&gm->done);
	pthread_cond_destroy(&gm->wake);
	free(gm);
}

/* GEN_KEPT_TIME as seconds of real time, when it and GEN_KEPT are both usable; else 0. */
static double gen_kept_time(int cachefd)
{
	char buf[64];
	struct stat st;
	double t = 0;
	int fd = openat(cachefd, GEN_KEPT_TIME, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n > 1 && buf[n - 1] == '\n') {
		char *end;
		buf[n - 1] = 0;
		t = strtod(buf, &end);
		if (*end || !(t > 0 && t < 1e12))
			t = 0;
	}
	if (fstatat(cachefd, GEN_KEPT, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
		t = 0;
	return t;
}

int gen_clean_cache(int cachefd, const char *keep, double *kept_until)
{
	*kept_until = gen_kept_time(cachefd);
	int fd = openat(cachefd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    !strcmp(de->d_name, keep))
			continue;
		if (*kept_until && (!strcmp(de->d_name, GEN_KEPT) ||
				    !strcmp(de->d_name, GEN_KEPT_TIME)))
			continue;
		int r = cp_rmtree(cachefd, de->d_name);
		if (r && !rc)
			rc = r;
	}
	closedir(d);
	return rc;
}

/* Last time g was used: a handle closed, or a path through .snapshot resolved to it. A
 * lookup counts because tools look a name up (stat, chdir) and open it moments later without
 * holding anything in between; they must find the same generation. */
static double gen_last_use(const struct gen *g)
{
	return g->last_close > g->last_lookup ? g->last_close : g->last_lookup;
}

static int gen_pinned(const struct genmgr *gm, const struct gen *g, double now)
{
	return g->handles > 0 || now < gen_last_use(g) + gm->cfg.linger;
}

static int gen_stale(const struct genmgr *gm, const struct gen *g, double now)
{
	return !g || (now - g->born >= gm->cfg.max_age && !gen_pinned(gm, g, now));
}

/* 1 if an older generation was read after the current one was cut (see the top): a capture
 * now dates those reads' files anew. Also while files of some generation are still open: the
 * current generation dated its changes before those reads ended, and whoever opens it next
 * would upload them with upload times at or after their mtimes, and skip them for good. An
 * upload that goes on reading an older generation overtakes this capture in turn, and the
 * opener after it gets another (one per new opening of `.snapshot`, not per read). */
static int gen_overtaken(struct genmgr *gm)
{
	if (!gm->over_n || !gm->cur)
		return 0;
	log_info("generation %lu was cut before an upload of an older generation ended: "
		 "capturing anew so that no upload skips what changed", gm->cur->seq);
	return 1;
}

/* Called and returns with gm->mu held; drops it while the capture runs. */
static int gen_capture_locked(struct genmgr *gm)
{
	struct gen *prev = gm->cur, *g = NULL;
	struct cap_stats st;
	char name[32], err[512] = "";
	int fd = -1;

	/* Numbers count generations served; a failed attempt does not use one up. */
	unsigned long seq = gm->next_seq + 1;
	snprintf(name, sizeof name, "gen-%lu", seq);
	if (prev)
		prev->refs++;       /* the capture shares files with it: keep it */
	const char *prevname = prev ? prev->name : NULL;
	const char *recycle = prev && gm->spare && !gm->rotating ? GEN_SPARE : NULL;
	if (recycle)
		gm->spare = 0;      /* taken: gone after this capture, whatever its outcome */
	double kept_until = prev ? 0 : gm->kept_until;
	if (kept_until) {
		/* An earlier daemon's last generation: shared and recycled like a previous one and
		 * a spare, and gone after this capture, whatever its outcome. Its time goes first,
		 * so that generations of ours are never taken for uploads before that time. */
		gm->kept_until = 0;
		unlinkat(gm->cfg.cachefd, GEN_KEPT_TIME, 0);
		prevname = GEN_KEPT;
		recycle = gm->cfg.recycle ? GEN_KEPT : NULL;
	}
	/* When readers last used a generation, on the monotonic clock: now if one holds a handle
	 * (an upload reading it now), else its last use. Older generations count too: a long
	 * reader of one may still be uploading it. */
	double used = gm->dead_used;
	for (struct gen *i = gm->list; i; i = i->next) {
		double u = i->handles ? ut_now() : gen_last_use(i);
		if (!atomic_load(&i->dead) && u > used)
			used = u;
	}
	/* Reads that may have overtaken the mtimes of later generations: those files are dated
	 * anew by this capture (and uploads_before, above, is after those reads). */
	unsigned long over_n = gm->over_n;
	int64_t redate_after = over_n ? gm->over_lo : 0, redate_until = over_n ? gm->over_hi : 0;
	gm->capturing = 1;
	pthread_mutex_unlock(&gm->mu);

	/* Numbers only grow, so nothing of ours has this name: whatever is there (say, what the
	 * helper of a killed daemon published late) would fail this capture and every retry. */
	if (faccessat(gm->cfg.cachefd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		log_warn("removing %s from the cache: not a generation of this daemon", name);
		cp_rmtree(gm->cfg.cachefd, name);
	}
	double t0 = ut_now();
	/* When readers last used a generation (above), on the real-time clock; with none, when
	 * the earlier daemon stopped serving the one it kept, or else when this daemon started
	 * (uploads of an earlier daemon's snapshots came before). */
	struct timespec rt = ut_realtime();
	double rt_now = (double)rt.tv_sec + rt.tv_nsec / 1e9;
	double since = prev ? t0 - used : kept_until ? rt_now - kept_until :
			      t0 - gm->born;
	if (kept_until > rt_now + 1)
		log_warn("the clock is %.0f s behind the time the earlier daemon stopped (%s): "
			 "this capture dates its changes after now only", kept_until - rt_now,
			 GEN_KEPT_TIME);
	double uploads_before = rt_now - (since > 0 ? since : 0);
	memset(&st, 0, sizeof st);
	int rc = gm->cfg.capture(gm->cfg.arg, name, prevname, recycle, uploads_before,
				 redate_after, redate_until, &st, err, sizeof err);
	if (recycle)
		cp_rmtree(gm->cfg.cachefd, recycle);
	if (kept_until && !recycle)
		cp_rmtree(gm->cfg.cachefd, GEN_KEPT);
	if (rc == 0) {
		fd = openat(gm->cfg.cachefd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			rc = -errno;
			snprintf(err, sizeof err, "cannot open the new generation %s: %s", name,
				 strerror(errno));
		}
	}
	if (rc == 0 && !(g = calloc(1, sizeof *g))) {
		rc = -ENOMEM;
		close(fd);
		cp_rmtree(gm->cfg.cachefd, name);
	}
	if (rc == 0)
		gen_index(gm->cfg.cachefd, name, g);

	pthread_mutex_lock(&gm->mu);
	double now = ut_now();
	gm->capturing = 0;
	gm->epoch++;
	gm->last_attempt_s = now - t0;
	if (rc == 0) {
		g->seq = gm->next_seq = seq;
		snprintf(g->name, sizeof g->name, "%s", name);
		g->fd = fd;
		g->stats = st;
		g->born = now;
		/* The second its changes are dated in, as far off on the monotonic clock as it is
		 * now on the real-time one (and a moment more): a clock stepped back later does not
		 * hold readers longer. */
		double ahead = ut_wall_left((double)st.dated_until, HUGE_VAL);
		g->hold_until = now + (ahead > 0 ? ahead + 0.05 : 0);
		g->refs = 1;
		g->next = gm->list;
		gm->list = g;
		gm->cur = g;
		gm->n_ok++;
		gm->fail_until = 0;
		if (gm->over_n == over_n)
			gm->over_n = 0; /* all taken into account; later ones stay for the next */
		log_info("generation %lu (%s) ready in %.2f s", g->seq, st.id, gm->last_attempt_s);
	} else {
		gm->n_fail++;
		gm->last_rc = rc;
		gm->fail_until = now + GEN_FAIL_BACKOFF;
		gm->last_err_at = ut_realtime();
		snprintf(gm->last_err, sizeof gm->last_err, "%s", err[0] ? err : strerror(-rc));
		/* last_err is escaped already (hp_capture). */
		log_relay(LOG_KIND_ERR, "capture failed (%s): %s; %s", strerror(-rc), gm->last_err,
			prev ? "still serving the previous generation" : "no generation to serve");
	}
	if (prev)
		gen_unref_locked(gm, prev);
	pthread_cond_broadcast(&gm->done);
	pthread_cond_signal(&gm->wake);
	return rc;
}

/* With gm->mu held and a capture under way: 1 if the caller may wait for it (counted in
 * gm->waiters), else 0 with gm->mu released. */
static int gen_wait_begin(struct genmgr *gm)
{
	if (!gm->cfg.max_waiters || gm->waiters < gm->cfg.max_waiters) {
		gm->waiters++;
		return 1;
	}
	if (gm->n_busy++ % 1000 == 0)
		log_warn("%u callers are waiting for the capture under way already: one more "
			 "refused (EBUSY; %lu so far)", gm->waiters, gm->n_busy);
	pthread_mutex_unlock(&gm->mu);
	return 0;
}

int gen_acquire(struct genmgr *gm, struct gen **out)
{
	struct gen *g;
	pthread_mutex_lock(&gm->mu);
	/* Take the result of a capture under way rather than starting another; but not when an
	 * older generation was read while it ran (an upload that ended just before this opener
	 * began, in the second that capture dated its changes in): capture once more. Once at
	 * most: uploads that never stop reading older generations get what there is then. */
	int fresh = 0; /* the current generation was captured since this call began */
	for (int round = 0;; round++) {
		if (gm->capturing) {
			unsigned long e = gm->epoch;
			if (!gen_wait_begin(gm))
				return -EBUSY;
			while (gm->capturing && gm->epoch == e)
				pthread_cond_wait(&gm->done, &gm->mu);
			gm->waiters--;
			fresh = 1;
		}
		double now = ut_now();
		if (round < GEN_ROUNDS && !gm->capturing && now >= gm->fail_until &&
		    ((!fresh && gen_stale(gm, gm->cur, now)) || gen_overtaken(gm))) {
			gen_capture_locked(gm);
			fresh = 1;
			continue;
		}
		break;
	}
	g = gm->cur;
	if (g) {
		g->refs++;
		g->last_lookup = ut_now();
	}
	pthread_mutex_unlock(&gm->mu);
	*out = g;
	return g ? 0 : -EIO;
}

int gen_refresh(struct genmgr *gm)
{
	pthread_mutex_lock(&gm->mu);
	/* A capture already running may have cut before the caller asked: wait, then take one. */
	if (gm->capturing) {
		if (!gen_wait_begin(gm))
			return -EBUSY;
		while (gm->capturing)
			pthread_cond_wait(&gm->done, &gm->mu);
		gm->waiters--;
	}
	int rc = gen_capture_locked(gm);
	pthread_mutex_unlock(&gm->mu);
	return rc;
}

void gen_ref(struct genmgr *gm, struct gen *g)
{
	pthread_mutex_lock(&gm->mu);
	g->refs++;
	pthread_mutex_unlock(&gm->mu);
}

void gen_unref(struct genmgr *gm, struct gen *g)
{
	pthread_mutex_lock(&gm->mu);
	gen_unref_locked(gm, g);
	pthread_mutex_unlock(&gm->mu);
}

void gen_hold_reads(const struct gen *g, int64_t sec)
{
	double left;
	if (sec > g->stats.dated_until)
		sec = g->stats.dated_until;
	while ((left = ut_wall_left((double)sec, g->hold_until)) > 0) {
		struct timespec ts = { (time_t)left, (long)((left - (double)(time_t)left) * 1e9) + 1 };
		if (ts.tv_nsec >= 1000000000L)
			ts = (struct timespec){ ts.tv_sec + 1, 0 };
		nanosleep(&ts, NULL);
	}
}

int gen_pin(struct genmgr *gm, struct gen *g, int file)
{
	int rc = 0;
	pthread_mutex_lock(&gm->mu);
	if (atomic_load(&g->dead)) {
		rc = -ESTALE;
	} else {
		g->handles++;
		g->files += file != 0;
	}
	pthread_mutex_unlock(&gm->mu);
	return rc;
}

static void gen_unpin_as(struct genmgr *gm, struct gen *g, int file, int known, uint64_t ino)
{
	pthread_mutex_lock(&gm->mu);
	g->handles--;
	g->files -= file != 0;
	g->last_close = ut_now();
	/* A file the current generation shares (the same inode) held its bytes as well: an
	 * upload of it ending late leaves nothing stale (and a capture started after this read
	 * counts it in uploads_before). While a capture runs, the new bytes are not known. */
	int shared = known && g != gm->cur && !gm->capturing && gm->cur &&
		     gen_has_ino(gm->cur, ino);
	if (file && (g != gm->cur || gm->capturing) && !shared) {
		/* Read while a newer generation exists or is being cut: an upload of it may end
		 * after files of the newer one were dated. */
		int64_t lo = (int64_t)g->stats.cut.tv_sec, hi = (int64_t)ut_realtime().tv_sec;
		if (!gm->over_n || lo < gm->over_lo)
			gm->over_lo = lo;
		if (!gm->over_n || hi > gm->over_hi)
			gm->over_hi = hi;
		gm->over_n++;
	}
	if (!g->handles)
		pthread_cond_signal(&gm->wake);
	pthread_mutex_unlock(&gm->mu);
}

void gen_unpin(struct genmgr *gm, struct gen *g, int file)
{
	gen_unpin_as(gm, g, file, 0, 0);
}

void gen_unpin_file(struct genmgr *gm, struct gen *g, uint64_t ino)
{
	gen_unpin_as(gm, g, 1, 1, ino);
}

int gen_dead(const struct gen *g) { return atomic_load(&g->dead); }
int gen_fd(const struct gen *g) { return g->fd; }
unsigned long gen_seq(const struct gen *g) { return g->seq; }

unsigned long gen_current_seq(struct genmgr *gm)
{
	pthread_mutex_lock(&gm->mu);
	unsigned long s = gm->cur ? gm->cur->seq : 0;
	pthread_mutex_unlock(&gm->mu);
	return s;
}

int gen_open_current(struct genmgr *gm)
{
	int fd = -ENOENT;
	pthread_mutex_lock(&gm->mu);
	if (gm->cur) {
		fd = openat(gm->cur->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			fd = -errno;
	}
	pthread_mutex_unlock(&gm->mu);
	return fd;
}

double gen_reap(struct genmgr *gm, void (*on_dead)(struct gen *g))
{
	struct gen *doomed[32], *spare = NULL;
	size_t n = 0;
	double now = ut_now(), next = 60;

	pthread_mutex_lock(&gm->mu);
	for (struct gen *g = gm->list; g; g = g->next) {
		if (g == gm->cur || atomic_load(&g->dead) || g->handles)
			continue;
		double last = gen_last_use(g);
		if (now < last + gm->cfg.linger) {
			if (last + gm->cfg.linger - now < next)
				next = last + gm->cfg.linger - now;
		} else if (n < sizeof doomed / sizeof doomed[0]) {
			atomic_store(&g->dead, 1);
			if (last > gm->dead_used)
				gm->dead_used = last;
			g->refs++;
			doomed[n++] = g;
			if (!spare || g->seq > spare->seq)
				spare = g;
		}
	}
	/* The newest one goes to the next capture, unless one is using the spare now. */
	if (spare && gm->cfg.recycle && !gm->capturing && !gm->rotating)
		gm->rotating = 1;
	else
		spare = NULL;
	pthread_mutex_unlock(&gm->mu);

	for (size_t i = 0; i < n; i++) {
		struct gen *g = doomed[i];
		int rc, kept = 0;
		if (g == spare) {
			cp_rmtree(gm->cfg.cachefd, GEN_SPARE);
			kept = renameat(gm->cfg.cachefd, g->name, gm->cfg.cachefd, GEN_SPARE) == 0;
		}
		rc = kept ? 0 : cp_rmtree(gm->cfg.cachefd, g->name);
		if (rc)
			log_warn("cannot delete generation %lu: %s", g->seq, strerror(-rc));
		else
			log_info("generation %lu deleted%s", g->seq,
				 kept ? " (its database copies kept for the next capture)" : "");
		/* Nodes the kernel still remembers keep the deleted files open; free their space. */
		if (on_dead)
			on_dead(g);
		pthread_mutex_lock(&gm->mu);
		if (g == spare) {
			gm->spare = kept;
			gm->rotating = 0;
		}
		gm->n_deleted++;
		g->refs--;                 /* ours; the list's reference still holds it */
		gen_unref_locked(gm, g);   /* the list's: nodes may still hold it for a while */
		pthread_mutex_unlock(&gm->mu);
	}
	return n ? 0 : next;
}

void gen_wait(struct genmgr *gm, double timeout)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)timeout;
	ts.tv_nsec += (long)((timeout - (double)(time_t)timeout) * 1e9);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&gm->mu);
	pthread_cond_timedwait(&gm->wake, &gm->mu, &ts);
	pthread_mutex_unlock(&gm->mu);
}

void gen_wake(struct genmgr *gm)
{
	pthread_mutex_lock(&gm->mu);
	pthread_cond_signal(&gm->wake);
	pthread_mutex_unlock(&gm->mu);
}

static void gen_fmt_time(struct timespec t, char *buf, size_t len)
{
	struct tm tm;
	char s[32];
	gmtime_r(&t.tv_sec, &tm);
	strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%06ldZ", s, t.tv_nsec / 1000);
}

char *gen_status(struct genmgr *gm, int detailed)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	pthread_mutex_lock(&gm->mu);
	double now = ut_now();
	struct gen *g = gm->cur;
	unsigned kept = 0, handles = 0;
	for (struct gen *i = gm->list; i; i = i->next)
		if (!atomic_load(&i->dead)) {
			kept++;
			handles += i->handles;
		}
	if (g) {
		char cut[64];
		gen_fmt_time(g->stats.cut, cut, sizeof cut);
		fprintf(f, "generation: %lu\n", g->seq);
		fprintf(f, "id: %s\n", g->stats.id);
		fprintf(f, "cut: %s\n", cut);
		fprintf(f, "cut_unix: %lld.%09ld\n", (long long)g->stats.cut.tv_sec,
			g->stats.cut.tv_nsec);
		fprintf(f, "age_s: %.1f\n", now - g->born);
		fprintf(f, "capture_s: %.3f\n", g->stats.duration_s);
		fprintf(f, "files: %" PRIu64 "\n", g->stats.files);
		fprintf(f, "bytes_copied: %" PRIu64 "\n", g->stats.bytes_copied);
		fprintf(f, "bytes_shared: %" PRIu64 "\n", g->stats.bytes_linked);
		fprintf(f, "bytes_cloned: %" PRIu64 "\n", g->stats.bytes_cloned);
		fprintf(f, "lock_max_s: %.6f\n", g->stats.lock_max_s);
		fprintf(f, "retries: %u\n", g->stats.retries);
		fprintf(f, "pinned: %s\n", gen_pinned(gm, g, now) ? "yes" : "no");
		fprintf(f, "handles: %u\n", g->handles);
	} else {
		fprintf(f, "generation: none\n");
	}
	fprintf(f, "capturing: %s\n", gm->capturing ? "yes" : "no");
	fprintf(f, "capture_waiters: %u\n", gm->waiters);
	fprintf(f, "capture_waiters_refused: %lu\n", gm->n_busy);
	fprintf(f, "generations_kept: %u\n", kept);
	fprintf(f, "handles_all: %u\n", handles);
	fprintf(f, "captures_ok: %lu\n", gm->n_ok);
	fprintf(f, "captures_failed: %lu\n", gm->n_fail);
	fprintf(f, "generations_deleted: %lu\n", gm->n_deleted);
	fprintf(f, "spare_kept: %s\n", gm->spare ? "yes" : "no");
	fprintf(f, "earlier_generation: %s\n", gm->kept_until ? "kept" : "none");
	fprintf(f, "last_attempt_s: %.3f\n", gm->last_attempt_s);
	fprintf(f, "snapshot_max_age_s: %g\n", gm->cfg.max_age);
	fprintf(f, "snapshot_linger_s: %g\n", gm->cfg.linger);
	if (gm->last_err[0]) {
		char at[64];
		gen_fmt_time(gm->last_err_at, at, sizeof at);
		if (detailed)
			fprintf(f, "last_error: %s\n", gm->last_err);
		else
			fprintf(f, "last_error: capture failed: %s\n", strerror(-gm->last_rc));
		fprintf(f, "last_error_at: %s\n", at);
	} else {
		fprintf(f, "last_error: none\n");
	}
	pthread_mutex_unlock(&gm->mu);
	fclose(f);
	return buf;
}
