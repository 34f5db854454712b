/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Capture, steps 3-4, the cut: hold every database still (locks for rollback-mode ones, read
 * transactions for WAL ones) within a hold budget, put a marker in the event queue, and judge
 * whether anything moved before it (cap_attempt, cap_pin_and_check). After the release, a writer
 * we held up may have been stopped inside a group of files (cap_after), and an HNSW segment may
 * be torn (cap_check_segments): either redoes the cut. capture.c retries the attempts. */
#include "cap_int.h"
#include "hnsw.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writers of the databases wait for us from the first lock to the last release. Locks after
 * the first are waited for only within this budget, and no database copy starts past it: the
 * attempt is given up and redone instead. (One copy already started runs to its end: it
 * rewrites only the pages that changed since the copy made without the lock.) */
#define CAP_HOLD_BUDGET 0.2
/* A writer that waited for our locks resumes where it stopped when they are released. If it
 * stopped inside a group of files of its own accord (a stall longer than the quiet window), its
 * next plain-file write shows it: the cut is redone when one comes this soon after the release
 * (the quiet window, at least). SQLite's busy handler sleeps up to 100 ms between tries. */
#define CAP_AFTER_MIN 0.25
/* A segment of files found torn and unchanged for this long is torn in the store itself: no
 * writer stalls inside a persist that long (they are let stall for a second). */
#define CAP_TORN_PATIENCE 3.0

/* How long a lock may be waited for now: the first without limit (CAP_LOCK_WAIT: nobody waits
 * on us yet), the others only within what is left of the hold budget. */
static double cap_lock_wait(const struct cap *c)
{
	if (c->lock_t0 <= 0)
		return CAP_LOCK_WAIT;
	double left = c->lock_t0 + CAP_HOLD_BUDGET - ut_now();
	return left > 0 ? left : 0;
}

/* Pin every WAL database, each behind a marker, then a final marker; drain and judge.
 * 0 if the cut holds, -EAGAIN if something changed before it, -errno on errors. */
static int cap_pin_and_check(struct cap *c)
{
	int nwal = 0, rc = 0;
	c->in_attempt = 1;
	c->broken = 0;
	c->phase = -1;
	c->end_phase = INT_MAX;
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		if (e->kind != K_DB || e->d->dbmode != DB_WAL)
			continue;
		rc = wt_marker(c->w, (unsigned)nwal);
		if (rc)
			return rc;
		e->d->wal_phase = nwal++;
		e->d->raced = 0;
		/* The index header read on either side of the pin: a commit whose -wal write came
		 * before the marker, published as it was pinned, is on no known side of it. */
		uint8_t before[SQ_WAL_HDR];
		int had = sq_wal_header(e->d->db, before) == 0; /* prepared: it reads the WAL */
		double wait = cap_lock_wait(c);
		rc = wait > 0 ? sq_begin_read(e->d->db, wait) : -EAGAIN;
		if (rc)
			return rc == -EIO ? cap_db_unreadable(c, e) : -EAGAIN;
		e->d->pinned = 1;
		e->d->whdr_ok = sq_wal_header(e->d->db, e->d->whdr) == 0;
		if (e->d->whdr_ok && (!had || memcmp(before, e->d->whdr, SQ_WAL_HDR)))
			e->d->raced = 1;
	}
	/* Right after the last pin, the cut: an earlier pinned database whose index header moved
	 * since its pin committed before the cut and after its pin. */
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		uint8_t now[SQ_WAL_HDR];
		if (e->kind == K_DB && e->d->wal_phase >= 0 && e->d->wal_phase < nwal - 1 &&
		    e->d->whdr_ok && (sq_wal_header(e->d->db, now) != 0 ||
				      memcmp(now, e->d->whdr, SQ_WAL_HDR)))
			e->d->raced = 1;
	}
	c->cut_ns = cap_ns(ut_realtime());
	c->end_phase = nwal; /* events after this marker come after the cut */
	rc = wt_marker(c->w, (unsigned)nwal);
	if (rc)
		return rc;
	rc = cap_drain(c);
	if (rc)
		return rc;
	/* A WAL database pinned before the last pin must not have committed in between: its
	 * index header moved, or its -wal was written (inotify). */
	for (size_t i = 0; !c->broken && i < c->n; i++) {
		struct ent *e = &c->e[i];
		if (e->kind == K_DB && e->d->wal_phase >= 0 && e->d->wal_phase < nwal - 1 &&
		    e->d->raced) {
			c->broken = 1;
			c->broken_why = e->path;
		}
	}
	return c->broken || c->overflow ? -EAGAIN : 0;
}

/* 1 if a writer is in a transaction on a database we hold: it may be waiting for us. */
static int cap_writer_waiting(const struct cap *c)
{
	for (size_t i = 0; i < c->n; i++) {
		const struct ent *e = &c->e[i];
		if (e->kind == K_DB && e->d->locked && sq_writer_active(e->d->dbfd) != 0)
			return 1;
	}
	return 0;
}

/* While databases are held their writers wait for this thread and the compare threads it
 * starts (which inherit its niceness): run them at cap_opts.hold_nice, best effort (lowering
 * the niceness needs CAP_SYS_NICE or RLIMIT_NICE). Niceness is per thread on Linux. Returns
 * the niceness to go back to (cap_unboost), or CAP_NICE_KEEP. */
static int cap_boost(const struct cap *c)
{
	pid_t tid = gettid();
	errno = 0;
	int cur = getpriority(PRIO_PROCESS, (id_t)tid);
	if (c->o->hold_nice == CAP_NICE_KEEP || errno || cur <= c->o->hold_nice ||
	    setpriority(PRIO_PROCESS, (id_t)tid, c->o->hold_nice) < 0)
		return CAP_NICE_KEEP;
	return cur;
}

static void cap_unboost(int was)
{
	if (was != CAP_NICE_KEEP)
		(void)setpriority(PRIO_PROCESS, (id_t)gettid(), was);
}

/* One attempt at a cut, the files quiet. 0 when the snapshot's databases are staged, -EAGAIN
 * to retry. Nothing here waits for files while databases are held: a writer held up by our
 * lock stalls wherever it is, maybe halfway through a group of files, and would look quiet.
 * If anything moved before the cut, the locks are given back at once. Where there is nothing
 * to lock (WAL databases only, or none), it waits for quiet itself: nobody waits on us. */
int cap_attempt(struct cap *c, double deadline)
{
	/* A -shm (or a database) truncated under the mappings SQLite makes of it reads as zeros
	 * instead of killing us (a user who may write the store could otherwise stop every
	 * capture), and the attempt is redone with new connections. */
	int zerofill = dd_zerofill_begin() == 0, nice_was = CAP_NICE_KEEP;
	/* The plain files copied so far are hashed before any writer is made to wait on us, not
	 * while the databases are held. */
	int rc = cap_collect_all(c);
	if (!rc)
		rc = cap_db_prepare(c);
	if (rc)
		goto out;
	cap_db_premap(c);
	c->lock_t0 = 0;
	c->lock_cpu_s = 0;
	c->lock_faults = 0;
	c->stuck = NULL;
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		if (e->kind != K_DB || e->d->dbmode == DB_WAL)
			continue;
		double wait = cap_lock_wait(c);
		rc = wait > 0 ? sq_lock_shared(e->d->dbfd, wait) : -EAGAIN;
		if (rc) {
			if (rc == -EAGAIN) {
				if (wait >= CAP_LOCK_WAIT)
					log_info("database %s stayed write-locked; retrying", e->path);
				c->stuck = e->path;
			}
			goto out;
		}
		if (c->lock_t0 <= 0) {
			c->lock_t0 = ut_now(); /* writers wait from here, not while we waited */
			nice_was = cap_boost(c);
		}
		e->d->locked = 1;
		c->holding = 1;
		cap_held_mark(e);
		/* A writer may have switched it to WAL, or opened the cold WAL, before our lock. */
		if (cap_held_disturbed(e)) {
			rc = -EAGAIN;
			goto out;
		}
		rc = sq_journal_is_hot(e->d->dirfd, e->name, e->d->dbfd);
		if (rc < 0)
			goto out;
		e->hot = rc == 1;
	}
	c->watch_after = 0;
	rc = c->lock_t0 > 0 ? 0 : cap_quiet(c, deadline);
	for (size_t i = 0; !rc && i < c->n; i++)
		if (c->e[i].kind == K_DB && c->e[i].d->dirfd < 0)
			rc = -EAGAIN; /* a new database appeared: start over to lock it too */
	if (!rc)
		rc = cap_pin_and_check(c);
	if (rc)
		goto out;
	/* The cut holds. Copy what changed while everything is still held. */
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		if (e->kind != K_DB)
			continue;
		if (c->lock_t0 > 0 && ut_now() - c->lock_t0 > CAP_HOLD_BUDGET) {
			/* The next attempt finds the copies made so far, and copies less. */
			c->broken_why = "database copies outlasting the hold budget";
			rc = -EAGAIN;
			goto out;
		}
		/* Mode and owner as of the cut: a database's were last read when it was classified,
		 * and a chmod of it breaks no cut, so it would otherwise never be seen. */
		struct stat cur;
		if (fstatat(e->d->dirfd, e->name, &cur, AT_SYMLINK_NOFOLLOW) == 0) {
			e->st.st_mode = cur.st_mode;
			e->st.st_uid = cur.st_uid;
			e->st.st_gid = cur.st_gid;
			/* Its ACL as well (cap_acl_narrow), through an O_PATH descriptor: closing
			 * that one drops none of our POSIX locks on the database. A name that is
			 * no longer the file just stat'ed keeps only its owner's rights. */
			struct stat held;
			int pfd = openat(e->d->dirfd, e->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
			if (pfd >= 0 && fstat(pfd, &held) == 0 && held.st_ino == cur.st_ino &&
			    held.st_dev == cur.st_dev)
				cap_acl_narrow(pfd, &e->st);
			else
				e->st.st_mode &= ~(mode_t)077;
			if (pfd >= 0)
				close(pfd);
		}
		char *now = cap_db_ident(e, e->d->dirfd);
		const struct mf_entry *pe = e->hot ? NULL : cap_prev_same(c, e, now);
		free(now);
		e->dbcopied = 0;
		cap_drop_clone(c, e);
		if (pe && cap_link_prev(c, e, pe, NULL) == 0)
			continue;
		if (e->d->dbmode == DB_ROLLBACK && e->precopied && !e->dirty && !e->hot &&
		    cap_precopy_current(c, e)) {
			e->dbcopied = e->copied = 1;
			continue;
		}
		rc = cap_db_copy(c, e);
		if (rc == -EAGAIN)
			goto out;
		if (rc) {
			log_err("cannot copy database %s: %s", cap_where(c, e), strerror(-rc));
			goto out;
		}
	}
	/* Our file lock does not stop a connection in WAL mode: one that opened on a database
	 * held by it may have committed before the cut, or checkpointed into the file we read. */
	rc = cap_drain(c);
	if (rc)
		goto out;
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		if (e->kind == K_DB && e->d->dbmode != DB_WAL &&
		    (c->overflow || cap_held_disturbed(e))) {
			rc = -EAGAIN;
			goto out;
		}
		if (e->kind == K_DB && e->d->dbmode != DB_WAL && cap_held_moved(e)) {
			/* written by something that ignores its lock while we copied it */
			e->dirty = 1;
			e->dirty_count++;
			c->broken_why = e->path;
			rc = -EAGAIN;
			goto out;
		}
	}
	/* A writer in a transaction now may be waiting for us, stopped wherever it was. */
	if (cap_writer_waiting(c))
		c->watch_after = 1;
	rc = 0;
out:
	if (c->lock_t0 > 0) {
		/* Writers waited as long in an attempt that had to be redone. */
		double held = ut_now() - c->lock_t0;
		if (held > c->st->lock_max_s) {
			c->st->lock_max_s = held;
			c->st->lock_cpu_s = c->lock_cpu_s;
			c->st->lock_faults = c->lock_faults;
		}
	}
	cap_db_release(c);
	cap_unboost(nice_was);
	if (zerofill && dd_zerofill_end()) {
		c->broken_why = "a database's -shm or file truncated while it was read";
		rc = -EAGAIN;
	}
	c->holding = 0;
	c->in_attempt = 0;
	/* What no event reports (AIO, a write through another name of a hard link, a file
	 * system mounted on a directory): a stat of every copied file and directory, after the
	 * cut. Not while the databases are held: on a large store, or one on a network file
	 * system, it takes long enough to keep their writers waiting past the hold budget, every
	 * attempt. A change it finds may have come after the release: the cut is redone anyway.
	 * Files written after the cut with an event are stat'ed too: they may also have been
	 * written before it without one. Stores made through a mapping of the mount before the
	 * cut are written back to the store first, so that the sweep sees them. */
	if (!rc)
		rc = cap_writeback(c);
	if (!rc && cap_sweep(c, 1)) {
		c->broken_why = c->sweep_first;
		rc = -EAGAIN;
	}
	return rc;
}

/* After the release, when a writer may have been waiting for us: 0 if the cut stands, -EAGAIN
 * if a plain file was written within the after window (a writer we held up went on with a
 * group of files it had begun before the cut, or one began right after it: either way the
 * cut is redone rather than trusted). */
int cap_after(struct cap *c)
{
	if (!c->watch_after)
		return 0;
	c->after_state = 1;
	c->after_written = 0;
	double window = c->o->quiet_ms / 1000.0;
	int rc = wt_marker(c->w, CAP_MARK_RELEASE);
	double until = ut_now() + (window > CAP_AFTER_MIN ? window : CAP_AFTER_MIN);
	while (!rc && !c->after_written) {
		rc = cap_drain(c);
		double left = until - ut_now();
		if (rc || c->after_written || left <= 0)
			break;
		struct pollfd p = { .fd = wt_fd(c->w), .events = POLLIN };
		poll(&p, 1, (int)(left * 1000) + 1);
	}
	c->after_state = 0;
	if (rc)
		return rc;
	if (c->after_written) {
		c->broken_why = "a group of files the cut may have split";
		c->last_change = ut_now();
		return -EAGAIN;
	}
	return 0;
}

/* The staged copy of every HNSW vector segment (ChromaDB's index files, rewritten in place
 * one after another) must be one persist: a writer that stalled inside a persist for longer
 * than the quiet window would otherwise leave a torn set. 0 if every one is whole, -EAGAIN
 * to wait and try again, -errno. A set found torn with nothing changed for CAP_TORN_PATIENCE
 * is torn in the live store itself (a writer that died mid-persist): kept, with a warning. */
int cap_check_segments(struct cap *c)
{
	for (size_t i = 0; i < c->n; i++) {
		struct ent *d = &c->e[i];
		size_t f[HV_NFILES];
		struct timespec mt[HV_NFILES] = { { 0, 0 } };
		uint32_t sig = 2166136261u;
		unsigned k;
		if (d->kind != K_DIR)
			continue;
		for (k = 0; k < HV_NFILES; k++) {
			if (!cap_lookup(c, i, hv_file_names[k], &f[k]) || c->e[f[k]].kind != K_FILE) {
				if (k != HV_PICKLE)
					break;
				continue; /* a fresh index has no pickle yet */
			}
			mt[k] = c->e[f[k]].st.st_mtim;
			int64_t v[2] = { cap_ns(c->e[f[k]].st.st_ctim), (int64_t)c->e[f[k]].st.st_ino };
			for (unsigned b = 0; b < sizeof v; b++)
				sig = (sig ^ ((const uint8_t *)v)[b]) * 16777619u;
		}
		if (k < HV_NFILES)
			continue;
		char why[256] = "";
		int fd = cap_openat2(c->stagefd, d->path, O_RDONLY | O_DIRECTORY);
		if (fd < 0)
			return fd;
		int torn = 0;
		if (!hv_is_segment(fd)) {
			torn = 0; /* files of these names in some other format */
		} else if (!hv_order_ok(mt)) {
			torn = 1;
			snprintf(why, sizeof why, "its files were written out of order");
		} else {
			torn = hv_check(fd, why, sizeof why);
		}
		close(fd);
		if (torn < 0 && torn != -ENOENT)
			return torn;
		if (torn <= 0)
			continue;
		unsigned t;
		for (t = 0; t < c->ntorn && c->torn[t].dir != i; t++)
			;
		if (t < c->ntorn && c->torn[t].sig == sig &&
		    ut_now() - c->torn[t].since >= CAP_TORN_PATIENCE) {
			log_warn("HNSW segment %s is torn in the store itself (%s); copied as it is",
				 cap_where(c, d), why);
			continue;
		}
		if (t == c->ntorn && t < sizeof c->torn / sizeof c->torn[0])
			c->ntorn++;
		if (t < c->ntorn && (c->torn[t].dir != i || c->torn[t].sig != sig))
			c->torn[t].since = ut_now();
		if (t < c->ntorn) {
			c->torn[t].dir = i;
			c->torn[t].sig = sig;
		}
		log_info("HNSW segment %s caught inside a persist (%s); retrying", d->path, why);
		c->broken_why = d->path;
		c->last_change = ut_now();
		d->dirty_count++;
		return -EAGAIN;
	}
	return 0;
}
