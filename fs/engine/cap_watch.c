/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Capture, what tells a file changed: the inotify events of the store (cap_event, read by
 * cap_drain), split by markers into the phases of a cut attempt, and the stat sweep of every
 * copied file (cap_sweep) for the writes no event reports. Both mark entries dirty and break the
 * attempt under way (cap_break). Steps 1-4 of capture.c rely on them. */
#include "cap_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

static void cap_break(struct cap *c, const char *why)
{
	if (c->in_attempt && c->phase < c->end_phase && !c->broken) {
		c->broken = 1;
		c->broken_why = why;
	}
}

/* A write to a pinned WAL database before the final marker may have committed after its pin
 * and before a later database's pin: the pins would then not be one instant. A flag, not the
 * last phase seen: a later write, after the cut, must not hide it. */
static void cap_db_written(struct cap *c, struct ent_db *d)
{
	if (d->wal_phase >= 0 && c->phase >= d->wal_phase && c->phase < c->end_phase)
		d->raced = 1;
}

/* After the release: a plain file written (or made) by anyone. */
static void cap_after_event(struct cap *c, uint32_t dir, const char *name)
{
	size_t i;
	if (cap_companion_of(c, dir, name, &i))
		return;
	if (!cap_lookup(c, dir, name, &i) ||
	    (c->e[i].kind != K_DB && c->e[i].kind != K_SKIP && c->e[i].kind != K_COMPANION))
		c->after_written = 1;
}

static void cap_event(void *ctx, uint32_t dir, const char *name, uint32_t mask)
{
	struct cap *c = ctx;
	if (dir == WT_OVERFLOW) {
		c->overflow = 1;
		cap_break(c, "event queue overflow");
		return;
	}
	if (dir == WT_MARKER) {
		if (atoi(name) == CAP_MARK_RELEASE) {
			if (c->after_state == 1)
				c->after_state = 2;
		} else {
			c->phase++;
		}
		return;
	}
	if (dir >= c->n || c->e[dir].kind != K_DIR)
		return;
	if (c->after_state == 2 && !c->after_written)
		cap_after_event(c, dir, name);
	if (!name[0]) {
		if (mask & (IN_DELETE_SELF | IN_MOVE_SELF))
			c->e[c->e[dir].parent].rescan = 1;
		if (mask & IN_ATTRIB)
			c->e[dir].rescan = 1; /* re-stat it */
		return;
	}
	size_t i;
	if (cap_companion_of(c, dir, name, &i)) {
		/* A writer's journal comes and goes with every transaction: not a tree change. The
		 * -shm is written by readers too (ourselves included), so it says nothing. A -wal
		 * beside a database held by its file lock means a connection in WAL mode, which
		 * commits without that lock. */
		struct ent_db *d = c->e[i].d;
		size_t nl = strlen(name);
		if (!strcmp(name + nl - 4, "-wal") && d->dbmode != DB_WAL) {
			d->wal_seen = 1;
			cap_break(c, c->e[i].path);
		}
		if (strcmp(name + nl - 4, "-shm"))
			cap_db_written(c, d);
		return;
	}
	int structural = mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO);
	if (!cap_lookup(c, dir, name, &i)) {
		if (structural) {
			c->last_change = ut_now();
			c->e[dir].rescan = 1;
			cap_break(c, c->e[dir].path[0] ? c->e[dir].path : ".");
		}
		return;
	}
	struct ent *e = &c->e[i];
	if (e->alias)
		c->e[e->alias].dirty = 1; /* written through this name: the shared copy is stale */
	if (e->kind == K_DB && !structural) {
		/* Only the validity of our early copy depends on it, not the cut. */
		cap_db_written(c, e->d);
		e->dirty = 1;
		return;
	}
	e->dirty = 1;
	e->dirty_count++;
	if (e->kind != K_SKIP)
		c->last_change = ut_now();
	if (structural || e->kind == K_DIR)
		c->e[dir].rescan = 1;
	if (e->kind != K_SKIP)
		cap_break(c, e->path);
}

int cap_drain(struct cap *c)
{
	int rc = wt_drain(c->w, cap_event, c);
	return rc < 0 ? rc : 0;
}


/* 1 if the live file of copied plain file e is no longer what was copied. inotify does not
 * report every write: not Linux native AIO (io_submit), not a write through another name of a
 * hard link outside the watched directory, not one whose event is still being queued. All of
 * them move ctime, which a stat sees. */
static int cap_stale(const struct cap *c, const struct ent *e)
{
	struct cap_stat now;
	/* Another name of a file copied once is as good as that copy for as long as it names the
	 * same file, unchanged since the copy: its own stat is no matter. */
	const struct cap_stat *was = e->alias ? &c->e[e->alias].st : &e->st;
	if (e->alias && !cap_is_copy_of(c, e->alias, was))
		return 1;
	if (cap_lstatat(c->storefd, e->path, &now) < 0)
		return 1;
	if (!cap_same_file_state(&now, was))
		return 1;
	/* Its extents swapped for another file's (see cap_map_note). */
	return cap_map_moved(c, e->alias ? &c->e[e->alias] : e);
}

/* One share of a sweep: entries [from, to) are stat'ed, those that changed marked dirty. */
struct cap_sweep_part {
	struct cap *c;
	size_t from, to, changed, first;
	int all;
};

static void *cap_sweep_part(void *arg)
{
	struct cap_sweep_part *p = arg;
	for (size_t i = p->from; i < p->to; i++) {
		struct ent *e = &p->c->e[i];
		if (e->kind != K_FILE || !e->copied || (e->dirty && !p->all) ||
		    !cap_stale(p->c, e))
			continue;
		e->dirty = 1;
		e->dirty_count++;
		if (!p->changed++)
			p->first = i;
	}
	return NULL;
}

static int cap_cmp_ino(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Write back what waits in the page cache of the mount cap_opts.writeback: stores through a
 * shared mapping made through it reach the store, and move its file's ctime, only then. Each
 * file that may hold some (cap_opts.writeback_inodes) is fdatasync'ed through the mount, which
 * returns once the daemon has written them into the store (syncfs, on the whole mount, may
 * return before). 0, or -errno. */
int cap_writeback(struct cap *c)
{
	uint64_t *ino = NULL;
	if (c->wbfd < 0)
		return 0;
	ssize_t n = c->o->writeback_inodes(c->o->writeback_arg, &ino);
	if (n < 0) {
		log_err("cannot tell which files of %s to write back: %s", c->o->writeback,
			strerror((int)-n));
		return (int)n;
	}
	if (n > 1)
		qsort(ino, (size_t)n, sizeof *ino, cap_cmp_ino);
	for (size_t i = 0; n && i < c->n; i++) {
		struct ent *e = &c->e[i];
		uint64_t key = (uint64_t)e->st.st_ino;
		if ((e->kind != K_FILE && e->kind != K_DB) ||
		    !bsearch(&key, ino, (size_t)n, sizeof *ino, cap_cmp_ino))
			continue;
		struct stat st;
		int fd = cap_openat2(c->wbfd, e->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
		if (fd < 0)
			continue; /* gone or replaced: the rescan sorts it out */
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_ino == key &&
		    fdatasync(fd) < 0)
			log_warn("writing back %s: %s", cap_where(c, e), strerror(errno));
		close(fd);
	}
	free(ino);
	return 0;
}

/* Stat every copied plain file against its copy; each that changed is marked dirty and, in an
 * attempt before its end, breaks it. Returns how many changed. A large store is swept on two
 * threads: the sweep at the cut is part of how long writers wait. A file or directory already
 * marked by an event is left to the copy that event calls for, unless after_cut: then the
 * event came after the cut (one before it broke the attempt), and says nothing of a change
 * before the cut that raised none, which only this stat can see. */
#define CAP_SWEEP_SPLIT 4096
size_t cap_sweep(struct cap *c, int after_cut)
{
	double t0 = ut_now();
	struct cap_sweep_part a = { c, 0, c->n, 0, 0, after_cut }, b = a;
	pthread_t th;
	int two = c->n >= CAP_SWEEP_SPLIT;
	if (two) {
		a.to = b.from = c->n / 2;
		two = pthread_create(&th, NULL, cap_sweep_part, &b) == 0;
		if (!two)
			a.to = c->n;
	}
	cap_sweep_part(&a);
	if (two)
		pthread_join(th, NULL);
	/* Where inotify may miss changes, a name made, removed or replaced is found by a stat of
	 * its directory (and a listing, when that moved). Anywhere, a directory whose name now
	 * leads to another one (a file system mounted on it, or unmounted from it) raised no
	 * event: its parent is read again, which replaces it. */
	size_t dirs = 0, dfirst = 0;
	for (size_t i = 1; i < c->n; i++) {
		struct ent *d = &c->e[i];
		struct cap_stat now;
		if (d->kind != K_DIR || (!after_cut && (d->rescan || c->e[d->parent].rescan)))
			continue;
		if (cap_lstatat(c->storefd, d->path, &now) < 0 || now.st_ino != d->st.st_ino ||
		    now.st_dev != d->st.st_dev)
			c->e[d->parent].rescan = 1;
		else if (!d->unwatched || !cap_dir_moved(c, i))
			continue;
		else
			d->rescan = 1;
		if (!dirs++)
			dfirst = i;
	}
	if (c->e[0].kind == K_DIR && c->e[0].unwatched && (after_cut || !c->e[0].rescan) &&
	    cap_dir_moved(c, 0)) {
		c->e[0].rescan = 1;
		if (!dirs++)
			dfirst = 0;
	}
	if (a.changed || b.changed || dirs) {
		c->last_change = ut_now();
		size_t first = a.changed ? a.first : b.changed ? b.first : dfirst;
		c->sweep_first = c->e[first].path[0] ? c->e[first].path : ".";
		cap_break(c, c->sweep_first);
	}
	c->sweep_s = ut_now() - t0;
	return a.changed + b.changed + dirs;
}
