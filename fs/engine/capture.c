/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The capture engine: a point-in-time cut of a live store. This file holds the public entry
 * points (cap_snapshot, cap_read_stats, cap_interrupt) and the orchestration of the steps
 * below: the first pass, the quiet waits, the attempts at a cut and their retries, progress.
 *
 * 1. Watch every directory of the store (inotify) and copy every plain file, draining the
 *    event queue before each copy so that any later write to it marks it dirty. A file with
 *    several names is copied once; its other names are linked to that copy at the end.
 * 2. Recopy dirty files until no plain file has changed for a quiet window (--quiet-ms), as the
 *    events and a stat of every copied file (cap_sweep: AIO and other names of a hard link
 *    raise no event, but move ctime) both tell: applications such as ChromaDB rewrite a group
 *    of files in place, one after another, and an instant in the middle of that is a torn
 *    state even though it is a true instant. No lock is held while waiting for this.
 * 3. Hold every database still: rollback-mode ones with SQLite's SHARED lock (taken as an OFD
 *    lock), WAL-mode ones with a read transaction. A marker written into our own inotify queue
 *    right after the last one splits the queue into "before the cut" and "after".
 * 4. If a plain file changed before the marker, release everything at once and go back to 2:
 *    nothing is waited for under the locks, since a writer held up by them stalls wherever it
 *    is (at a commit between two files of a group) and would look quiet. Otherwise copy the
 *    databases that changed (within a hold budget) and release. Every copied file is stat'ed
 *    again then (cap_sweep): one that moved since its copy goes back to 2. A writer that was in a
 *    transaction at the release and writes a plain file within the quiet window after it may
 *    have been stopped inside a group: the cut is redone (cap_after). So is one that finds a
 *    ChromaDB HNSW segment torn (cap_check_segments).
 * 5. Make the database copies self-contained, digest, write the manifest, rename into place.
 * Every file in the snapshot then holds what its live file held at the instant of step 3.
 *
 * The steps live in: cap_tree.c (the entries: walking the store, hard links), cap_watch.c (the
 * event queue and the stat sweep: what tells a file changed), cap_files.c (copying and sharing
 * plain files, steps 1-2), cap_db.c (copying databases, before and under the cut, and making
 * their copies self-contained), cap_cut.c (locks and pins, the hold budget and the checks after
 * the release, steps 3-4), cap_publish.c (the staging place, times, manifest, rename: step 5).
 * Their shared state, struct cap, and their prototypes are in cap_int.h. */
#include "cap_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* How long before the end of the change it dates a file's ctime may be: timestamps may be whole
 * seconds (small ext4 inodes, some network file systems), a file server's clock may lag ours,
 * and a write stamps the ctime when it begins, however long it takes to land (a source buffer
 * paged in from a slow device, dirty-page throttling). */
#define CAP_CTIME_DOUBT_MS 2500
#define CAP_TICK_S 0.02 /* more than a tick of the kernel's coarse clock (HZ 100: 10 ms) */

volatile sig_atomic_t cap_stop;
void cap_interrupt(void) { cap_stop = 1; }

/* Tell cap_opts.progress where the capture is: when forced, else at most once a second. */
void cap_progress(struct cap *c, int force)
{
	if (!c->o->progress)
		return;
	double now = ut_now();
	if (!force && now - c->progress_at < 1.0)
		return;
	c->progress_at = now;
	struct cap_progress p = { .phase = c->step, .bytes_done = c->done_bytes,
				  .bytes_total = c->total_bytes, .retries = c->st->retries };
	for (size_t i = 0; i < c->n; i++) {
		const struct ent *e = &c->e[i];
		if (e->kind != K_FILE && e->kind != K_DB)
			continue;
		p.files_total++;
		p.files_done += e->copied || e->precopied;
	}
	c->o->progress(&p, c->o->progress_arg);
}

static void cap_phase(struct cap *c, const char *phase)
{
	c->step = phase;
	cap_progress(c, 1);
}

/* Bring the staging tree up to date: rescan changed directories, copy dirty files, until a
 * drain finds nothing more to do (0), or `until` passes first (-EAGAIN). */
static int cap_catch_up(struct cap *c, double until)
{
	int copied, rescans;
	do {
		if (c->overflow) {
			/* Events were lost: every file may be stale and the tree may have moved. */
			c->overflow = 0;
			c->last_change = ut_now();
			for (size_t i = 0; i < c->n; i++) {
				c->e[i].dirty = 1;
				if (c->e[i].kind == K_DIR)
					c->e[i].rescan = 1;
			}
		}
		int rc = cap_drain(c);
		if (!rc)
			rc = cap_rescan(c);
		if (!rc)
			rc = cap_classify_dbs(c);
		if (!rc)
			rc = cap_copy_dirty(c, &copied);
		if (rc)
			return rc;
		rescans = 0;
		for (size_t i = 0; i < c->n; i++)
			rescans |= c->e[i].kind == K_DIR && c->e[i].rescan;
		if ((copied || rescans || c->overflow) && ut_now() >= until)
			return -EAGAIN;
	} while (copied || rescans || c->overflow);
	return 0;
}

/* Catch up and wait until no plain file has changed for the quiet window, as both the events
 * and a sweep of every file's stat tell. No lock is held here: a writer that we held up would
 * stall wherever it is, maybe halfway through a group of files, and look quiet.
 * 0 when quiet, -EAGAIN if that did not happen before `until`. */
int cap_quiet(struct cap *c, double until)
{
	double window = c->o->quiet_ms / 1000.0;
	for (;;) {
		int rc = cap_catch_up(c, until);
		if (rc)
			return rc;
		double now = ut_now(), idle = now - c->last_change;
		if (idle >= window && !cap_sweep(c, 0))
			return 0;
		if (idle >= window)
			continue; /* the sweep found changes: copy them, then wait again */
		if (now >= until)
			return -EAGAIN;
		double wait = window - idle < until - now ? window - idle : until - now;
		struct pollfd p = { .fd = wt_fd(c->w), .events = POLLIN };
		poll(&p, 1, (int)(wait * 1000) + 1);
		if (cap_stop)
			return -EINTR;
	}
}

/* Why no cut could be had, for the error line. */
static const char *cap_worst(const struct cap *c)
{
	static char buf[1024], out[1100];
	size_t used = 0;
	buf[0] = 0;
	/* Name the files that changed most often: they are why no cut could be had. */
	for (int shown = 0; shown < 5; shown++) {
		size_t best = SIZE_MAX;
		for (size_t i = 0; i < c->n; i++) {
			if (!c->e[i].dirty_count || (best != SIZE_MAX &&
						     c->e[i].dirty_count <= c->e[best].dirty_count))
				continue;
			if (!c->e[i].path[0] || !strstr(buf, c->e[i].path))
				best = i;
		}
		if (best == SIZE_MAX)
			break;
		int n = snprintf(buf + used, sizeof buf - used, "%s%s (%u changes)", used ? ", " : "",
				 c->e[best].path, c->e[best].dirty_count);
		if (n < 0 || (size_t)n >= sizeof buf - used)
			break;
		used += (size_t)n;
	}
	if (!buf[0] && c->stuck)
		/* Locked at the last attempt too, with nothing changing: held, not busy. */
		snprintf(out, sizeof out, "database %s stayed write-locked (a connection in "
			 "locking_mode=EXCLUSIVE, or a write transaction that never ends)", c->stuck);
	else
		snprintf(out, sizeof out, "kept changing: %s",
			 buf[0] ? buf : c->broken_why ? c->broken_why : "databases stayed locked");
	return out;
}

/* The latest whole second the previous snapshot dated a file in (its manifest's too), or 0. */
static double cap_prev_dated(const struct cap *c)
{
	struct stat st;
	int64_t sec = 0;
	if (!c->have_prev)
		return 0;
	for (size_t i = 0; i < c->prev.n; i++)
		if (c->prev.e[i].mtime_ns / 1000000000LL > sec)
			sec = c->prev.e[i].mtime_ns / 1000000000LL;
	if (fstatat(c->prevfd, CAP_MANIFEST_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_mtime > sec)
		sec = st.st_mtime;
	return (double)sec;
}

static int cap_settle(struct cap *c)
{
	/* The first pass copies the whole store; the settle timeout starts after it. */
	int first = cap_catch_up(c, 0);
	if (first && first != -EAGAIN)
		return first;
	cap_phase(c, "cut");
	/* The cut should fall in a later whole second than any upload of an earlier snapshot
	 * (see cap_set_times); keep up with the store while that second comes. It is at most a
	 * second away unless the clock was stepped back: then it is not waited for, and
	 * cap_set_times dates the changed files past uploads_before instead. With date_ahead the
	 * changed files are dated in that second all the same and the caller holds reads until
	 * it comes; the cut waits only for the second the previous snapshot dated its latest
	 * change in, if that is still to come, so that captures in quick succession never date
	 * a file, or the manifest, which changes every time, more than a second ahead (their
	 * changes are dated at most a second past it: cap_changed_sec). 20 ms into the second
	 * waited for: the snapshot's files are dated in it (their atimes too), and the ctimes
	 * the kernel then stamps on them, from a clock that may lag a tick, must come after
	 * that, or the snapshot looks read already (cap_snapshot_unread). */
	double barrier = c->o->date_ahead ? cap_prev_dated(c) + CAP_TICK_S :
					    floor(c->uploads_before) + 1 + CAP_TICK_S,
	       stop = ut_now() + 1.0 + CAP_TICK_S, left;
	while ((left = ut_wall_left(barrier, stop)) > 0) {
		int rc = cap_quiet(c, ut_now() + left);
		if (rc && rc != -EAGAIN)
			return rc;
		/* Quiet early: wait out the rest, still reading events. The copying cap_quiet
		 * did took time of its own: what is left is counted again. */
		if (rc == 0 && (left = ut_wall_left(barrier, stop)) > 0) {
			struct pollfd p = { .fd = wt_fd(c->w), .events = POLLIN };
			poll(&p, 1, (int)(left * 1000) + 1);
		}
		if (cap_stop)
			return -EINTR;
	}
	double deadline = ut_now() + c->o->settle_timeout;
	for (;;) {
		/* Files quiet first, without any lock; then lock and check that they still are. */
		int rc = cap_quiet(c, deadline);
		if (rc && rc != -EAGAIN)
			return rc;
		if (rc || ut_now() >= deadline)
			goto unsettled;
		rc = cap_attempt(c, deadline);
		if (rc == 0)
			rc = cap_after(c);
		if (rc == 0)
			rc = cap_check_segments(c);
		if (rc == 0)
			return 0;
		if (rc != -EAGAIN)
			return rc;
		c->st->retries++;
		cap_progress(c, 0);
		if (ut_now() > deadline)
			goto unsettled;
	}
unsettled:
	log_err("no consistent cut within %.0f s (databases held %.0f ms at most); %s",
		c->o->settle_timeout, c->st->lock_max_s * 1000, cap_worst(c));
	return -EAGAIN;
}

static void cap_summary(const struct cap *c)
{
	char a[32], b[32];
	ut_format_bytes(c->st->bytes_copied, a, sizeof a);
	ut_format_bytes(c->st->bytes_linked, b, sizeof b);
	char d[32];
	ut_format_bytes(c->st->bytes_cloned, d, sizeof d);
	log_info("snapshot %s: %" PRIu64 " files, %s copied, %s shared, %s cloned, %.2f s "
		 "on %u thread%s, %u retries, longest lock %.1f ms (compares %.1f ms CPU, %" PRIu64
		 " faults)%s%s",
		 c->o->dest, c->st->files, a, b, d, c->st->duration_s, c->st->threads,
		 c->st->threads == 1 ? "" : "s",
		 c->st->retries, c->st->lock_max_s * 1000, c->st->lock_cpu_s * 1000,
		 c->st->lock_faults,
		 c->st->recycled ? ", database copies recycled" : "",
		 c->earlier_unread ? ", earlier snapshot unread since it changed" : "");
}

/* The manifest of an earlier snapshot named in the options, opened as fd (-1: errno says
 * why not). 1 if m holds it; else 0, and a warning saying why and what follows. */
static int cap_load_earlier(const char *dir, int fd, struct mf *m, const char *otherwise)
{
	/* Its manifest says which of its files may stand for which of the store's: one that
	 * someone else may have written would let them have their own file linked into this
	 * snapshot, or one of ours given up, under any name. */
	struct stat st;
	if (fd >= 0 && fstatat(fd, CAP_MANIFEST_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    (!S_ISREG(st.st_mode) || (st.st_uid != geteuid() && st.st_uid != 0) ||
	     (st.st_mode & 022) || st.st_nlink != 1)) {
		log_warn("%s: its %s is not the caller's or root's alone (owner %u, mode %o, %ju "
			 "names); %s", dir, CAP_MANIFEST_NAME, (unsigned)st.st_uid,
			 (unsigned)(st.st_mode & 07777), (uintmax_t)st.st_nlink, otherwise);
		return 0;
	}
	int rc = fd < 0 ? -errno : mf_load(fd, CAP_MANIFEST_NAME, m);
	if (rc && fd < 0)
		log_warn("%s: %s; %s", dir, strerror(-rc), otherwise);
	else if (rc)
		log_warn("%s: not a readable snapshot (%s: %s); %s", dir, CAP_MANIFEST_NAME, m->why,
			 otherwise);
	return !rc;
}

/* An upload reads the snapshot it sends. When no file or directory of the earlier snapshots
 * named in the options has been read or listed since its ctime last changed (when it was
 * published, linked into a later snapshot or moved), every upload of them came before the
 * latest of those ctimes: 1 with *last set to it (real time, s). 0 if anything was read,
 * or this cannot be told (ut_atime_kept; an entry of the manifest missing). Readers that
 * open with O_NOATIME leave no atime and are not seen: --uploads-before is exact. */
static int cap_snapshot_unread(int fd, const struct mf *m, double *last)
{
	struct stat st;
	if (!ut_atime_kept(fd) || fstat(fd, &st) < 0 || !ut_unread_since_change(&st))
		return 0;
	int64_t newest = ut_ts_ns(st.st_ctim);
	for (size_t i = 0; i < m->n; i++) {
		const struct mf_entry *e = &m->e[i];
		if (e->kind == 'l')
			continue; /* read through: its target is an entry, or outside the snapshot */
		if (fstatat(fd, e->path, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !ut_unread_since_change(&st))
			return 0;
		if (ut_ts_ns(st.st_ctim) > newest)
			newest = ut_ts_ns(st.st_ctim);
	}
	*last = (double)newest / 1e9;
	return 1;
}

static int cap_earlier_unread(const struct cap *c, double *last)
{
	double a = 0, b = 0;
	if ((!c->have_prev && !c->have_recy) || (c->o->previous && !c->have_prev) ||
	    (c->o->recycle && !c->have_recy))
		return 0;
	if (c->have_prev && !cap_snapshot_unread(c->prevfd, &c->prev, &a))
		return 0;
	if (c->have_recy && !c->recy_is_prev && !cap_snapshot_unread(c->recyfd, &c->recy, &b))
		return 0;
	*last = a > b ? a : b;
	return 1;
}

/* What cap_recycle may take from a snapshot given up: a database's copy with block digests. */
static int cap_recyclable(const struct mf_entry *e)
{
	return e->kind == K_DB && e->blocks;
}

void cap_opts_init(struct cap_opts *o)
{
	memset(o, 0, sizeof *o);
	o->settle_timeout = 30;
	o->quiet_ms = 400;
	errno = 0;
	int nice = getpriority(PRIO_PROCESS, 0);
	o->hold_nice = errno ? CAP_NICE_KEEP : nice;
}

int cap_snapshot(const struct cap_opts *o, struct cap_stats *st)
{
	struct cap c = { .o = o, .st = st, .storefd = -1, .parentfd = -1, .stagefd = -1,
			 .workfd = -1, .prevfd = -1, .recyfd = -1, .wbfd = -1, .extfd = -1 };
	int rc;
	size_t root;
	double t0 = ut_now();

	unsigned errors_before = log_error_count();
	struct timespec start = ut_realtime();
	c.uploads_before = o->uploads_before > 0 ? o->uploads_before
						 : (double)start.tv_sec + start.tv_nsec / 1e9;
	memset(st, 0, sizeof *st);
	cap_stop = 0;
	c.storefd = open(o->store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c.storefd < 0) {
		rc = -errno;
		log_err("%s: %s", o->store, errno == ENOTDIR ? "not a directory" : strerror(errno));
		goto out;
	}
	if (o->writeback && (c.wbfd = open(o->writeback, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = -errno;
		log_err("%s: %s", o->writeback, strerror(errno));
		goto out;
	}
	if (o->extents && (c.extfd = open(o->extents, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = -errno;
		log_err("%s: %s", o->extents, strerror(errno));
		goto out;
	}
	rc = cap_prepare_dest(&c);
	if (rc)
		goto out;
	if (o->previous) {
		c.prevfd = open(o->previous, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		c.have_prev = cap_load_earlier(o->previous, c.prevfd, &c.prev, "copying everything");
	}
	if (o->recycle) {
		/* Files are moved out of it: never out of the live store, nor out of a snapshot
		 * a symlink put in its place leads to. */
		c.recyfd = open(o->recycle, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (c.recyfd >= 0 && cap_inside_store(&c, c.recyfd)) {
			log_err("%s is inside the store %s", o->recycle, o->store);
			rc = -EINVAL;
			goto out;
		}
		/* The previous snapshot given up (stillctl --recycle): one manifest serves both. */
		struct stat a, b;
		c.recy_is_prev = c.have_prev && c.recyfd >= 0 && fstat(c.prevfd, &a) == 0 &&
				 fstat(c.recyfd, &b) == 0 && ut_same_file(&a, &b);
		c.have_recy = c.recy_is_prev ||
			      cap_load_earlier(o->recycle, c.recyfd, &c.recy, "nothing recycled");
	}
	/* Before this capture reads anything of them (it compares, links and moves their files). */
	if (o->uploads_before <= 0) {
		double last = 0;
		if (cap_earlier_unread(&c, &last) && last < c.uploads_before) {
			c.uploads_before = last;
			c.earlier_unread = 1;
		}
	}
	/* Of another snapshot given up, only the databases' copies are taken (cap_recycle). */
	if (c.have_recy && !c.recy_is_prev)
		mf_keep(&c.recy, cap_recyclable);
	rc = wt_open(&c.w, c.workfd);
	if (rc) {
		log_err("cannot watch the store: %s", strerror(-rc));
		goto out;
	}
	rc = cap_add(&c, 0, "", K_DIR, &root);
	if (rc)
		goto out;
	c.e[root].rescan = 1;
	cap_phase(&c, "scan");
	rc = cap_rescan(&c);
	if (rc)
		goto out;
	/* Writes made before the watches began were not seen as events, but they left their
	 * ctime: the store last changed at most the doubt after the newest one (and not after
	 * now), so only an old ctime says the store has been still. Now is the earlier of our
	 * clock and the one that stamps ctimes (the staging directory's, touched), in case ours
	 * runs ahead. */
	int64_t now_ns = cap_ns(ut_realtime());
	struct stat probe;
	if (futimens(c.stagefd, NULL) == 0 && fstat(c.stagefd, &probe) == 0 &&
	    cap_ns(probe.st_ctim) < now_ns)
		now_ns = cap_ns(probe.st_ctim);
	int64_t since = now_ns - c.newest_ctime;
	int64_t doubt = CAP_CTIME_DOUBT_MS * 1000000LL;
	c.last_change = ut_now();
	if (since > doubt)
		c.last_change -= (double)(since - doubt) / 1e9;
	for (size_t i = 0; i < c.n; i++)
		if (c.e[i].kind == K_FILE)
			c.total_bytes += (uint64_t)c.e[i].st.st_size;
	cap_phase(&c, "copy");
	rc = cap_writeback(&c);
	if (!rc)
		rc = cap_settle(&c);
	if (rc)
		goto out;
	/* The cut holds: no event matters from here on. */
	wt_unwatch(c.w);
	/* A removed store we still hold open lists as empty, and its removal reports no event
	 * while we hold it: an empty snapshot would have an uploader's sync --delete wipe the
	 * copies of the store. */
	struct stat sst;
	if (fstat(c.storefd, &sst) == 0 && sst.st_nlink == 0) {
		log_err("%s: the store directory vanished", o->store);
		rc = -ENOENT;
		goto out;
	}
	cap_phase(&c, "publish");
	rc = cap_publish(&c, t0);
	if (rc)
		goto out;
	if (!o->quiet)
		cap_summary(&c);
out:
	if (rc == -ENOSPC)
		log_err("no space left for the snapshot at %s", o->dest);
	else if (rc == -EINTR)
		log_err("interrupted; nothing was published");
	else if (rc && log_error_count() == errors_before)
		log_err("snapshot of %s failed: %s", o->store, strerror(-rc));
	cap_db_release(&c);
	for (size_t i = 0; i < c.n; i++)
		cp_pending_discard(c.e[i].pend); /* digests nobody will use now */
	cap_remove_stage(&c);
	wt_close(c.w);
	for (size_t i = 0; i < c.n; i++) {
		if (c.e[i].d) {
			free(c.e[i].d->ident);
			free(c.e[i].d->db_ident);
			dd_free(&c.e[i].d->blk);
			free(c.e[i].d);
		}
	}
	free(c.e);
	ut_arena_free(&c.paths);
	free(c.index.slot);
	ut_map_free(&c.inodes);
	for (size_t i = 0; i < c.nikeys; i++)
		free(c.ikeys[i]);
	free(c.ikeys);
	if (c.have_prev)
		mf_free(&c.prev);
	if (c.have_recy && !c.recy_is_prev)
		mf_free(&c.recy);
	int fds[] = { c.storefd, c.parentfd, c.stagefd, c.workfd, c.prevfd, c.recyfd, c.wbfd,
		      c.extfd };
	for (unsigned i = 0; i < sizeof fds / sizeof fds[0]; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return rc;
}

int cap_read_stats(const char *dir, struct cap_stats *st)
{
	struct mf m;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = mf_load(fd, CAP_MANIFEST_NAME, &m);
	close(fd);
	if (rc)
		return rc;
	*st = m.stats;
	mf_free(&m);
	return 0;
}
