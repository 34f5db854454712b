/* The capture engine: a point-in-time cut of a live store.
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
 *    right after the last one splits the queue into "before the cut" and "after"; every copied
 *    file is stat'ed again at once.
 * 4. If a plain file changed before the marker, release everything at once and go back to 2:
 *    nothing is waited for under the locks, since a writer held up by them stalls wherever it
 *    is (at a commit between two files of a group) and would look quiet. Otherwise copy the
 *    databases that changed (within a hold budget) and release. A writer that was in a
 *    transaction at the release and writes a plain file within the quiet window after it may
 *    have been stopped inside a group: the cut is redone (cap_after). So is one that finds a
 *    ChromaDB HNSW segment torn (cap_check_segments).
 * 5. Make the database copies self-contained, digest, write the manifest, rename into place.
 * Every file in the snapshot then holds what its live file held at the instant of step 3. */
#include "capture.h"
#include "clone.h"
#include "copy.h"
#include "dbdelta.h"
#include "hnsw.h"
#include "manifest.h"
#include "sha256.h"
#include "sqlcap.h"
#include "util.h"
#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A recorded identity is only trusted as proof of "unchanged" when the file's ctime was older
 * than this when it was recorded: timestamps come from a coarse clock, so a write in the same
 * tick as our stat could otherwise leave every field of the identity the same. */
#define CAP_RACY_NS 2000000000LL
#define CAP_LOCK_WAIT 2.0          /* seconds to wait for the first database lock per attempt */
/* Writers of the databases wait for us from the first lock to the last release. Locks after
 * the first are waited for only within this budget, and no database copy starts past it: the
 * attempt is given up and redone instead. (One copy already started runs to its end: it
 * rewrites only the pages that changed since the copy made without the lock.) */
#define CAP_HOLD_BUDGET 0.2
#define CAP_PATH_MAX (PATH_MAX - 128) /* longest store path captured (see cap_scan_dir) */
#define CAP_CTIME_DOUBT_MS 2500 /* how far a file's ctime is not trusted to date its change */
/* A writer that waited for our locks resumes where it stopped when they are released. If it
 * stopped inside a group of files of its own accord (a stall longer than the quiet window), its
 * next plain-file write shows it: the cut is redone when one comes this soon after the release
 * (the quiet window, at least). SQLite's busy handler sleeps up to 100 ms between tries. */
#define CAP_AFTER_MIN 0.25
#define CAP_MARK_RELEASE 63 /* the marker put in the event queue at the release */
/* A segment of files found torn and unchanged for this long is torn in the store itself: no
 * writer stalls inside a persist that long (they are let stall for a second). */
#define CAP_TORN_PATIENCE 3.0

static volatile sig_atomic_t cap_stop;
void cap_interrupt(void) { cap_stop = 1; }

enum { K_NONE = 0, K_DIR = 'd', K_FILE = 'f', K_DB = 's', K_LINK = 'l', K_SKIP = 'x',
       K_COMPANION = 'c' };
/* DB_WAL_COLD: a -wal but no -shm in use, so no connection is open (every WAL connection
 * keeps a read lock on the -shm's DMS byte; a -shm nobody holds is a crashed writer's, stale):
 * it is held like a rollback database and recovered from a private copy, because even a
 * read-only SQLite connection would create or rebuild the -shm in the store. */
enum { DB_ROLLBACK, DB_WAL, DB_WAL_COLD };

/* What tells a file changed: the parts of a stat that matter, without the rest of its size
 * (an entry per file adds up on large stores). */
struct cap_sig {
	ino_t ino;
	off_t size;
	int64_t mtime_ns, ctime_ns;
};

/* The fields of a struct stat that a capture uses, under the same names: an entry per file
 * adds up on large stores, and a whole struct stat is 144 bytes. */
struct cap_stat {
	dev_t st_dev;
	ino_t st_ino;
	off_t st_size;
	nlink_t st_nlink;
	mode_t st_mode;
	uid_t st_uid;
	gid_t st_gid;
	struct timespec st_atim, st_mtim, st_ctim;
};

/* What only a database entry needs; allocated when an entry is found to be one (cap_as_db). */
struct ent_db {
	struct dd_blocks blk;    /* digests of the staged copy's 1 MiB blocks */
	double synced_at;        /* when the staged copy was last made equal */
	uint64_t synced_pages;   /* pages that pass rewrote */
	/* while a cut is attempted */
	int dirfd, dbfd;
	sqlite3 *db;
	int dbmode;
	int locked, pinned;
	int took_prev;           /* its copy was moved here from the previous snapshot */
	int wal_phase;           /* order of its WAL pin in this attempt, -1 if none */
	int raced;               /* written between its WAL pin and the final marker */
	int wal_seen;            /* not DB_WAL: its -wal changed since it was classified */
	int whdr_ok;             /* whdr holds its WAL-index header as pinned */
	uint8_t whdr[SQ_WAL_HDR];
	char *db_ident;          /* identity taken before the lock */
	int cut_clone;           /* a clone of the live file waits in the work dir */
	int cloned;              /* the staged copy is a clone of the live file */
	struct cap_sig cold_sig[2]; /* not DB_WAL: its -wal and -shm when classified */
};

struct ent {
	char *path;              /* relative to the store; "" is the root */
	const char *name;        /* last component, inside path */
	size_t parent;
	struct ent_db *d;        /* databases (and entries that were one); else NULL */
	struct cp_pending *pend; /* plain files: the last copy, its digest still being computed */
	char *ident;             /* identity to record, or NULL */
	uint64_t written;        /* bytes the last copy of it stored (holes are not) */
	uint64_t size;
	int64_t mtime_ns;        /* for reused entries: the previous snapshot's */
	double copied_at;        /* when the last copy of it began */
	struct cap_stat st;      /* source, as copied */
	uint8_t digest[32];
	unsigned dirty_count;
	uint32_t alias;          /* another name of entry `alias`'s file, linked to its copy */
	char kind;               /* K_*; K_NONE until classified, or once gone */
	unsigned dirty : 1, copied : 1, reused : 1, rescan : 1, hot : 1, dbcopied : 1;
	unsigned precopied : 1;  /* a database copied before the cut; valid while not dirty */
	unsigned staged : 1;     /* a database whose staged copy d->blk describes */
	unsigned has_digest : 1;
	unsigned cloned : 1;     /* a plain file whose copy shares the live file's extents */
};

struct cap {
	const struct cap_opts *o;
	struct cap_stats *st;
	int storefd, parentfd, stagefd, workfd, prevfd;
	char stage_name[NAME_MAX + 1], work_name[NAME_MAX + 1], dest_name[NAME_MAX + 1];
	struct wt *w;
	struct ent *e;
	size_t n, cap;
	struct ut_map index;
	struct ut_map inodes;    /* "dev:ino" of a file with several names -> the entry copied */
	char **ikeys;            /* the keys of inodes, freed at the end */
	size_t nikeys;
	struct mf prev;
	int have_prev;
	/* event bookkeeping for one cut attempt */
	int overflow;
	int in_attempt, phase, end_phase, broken;
	const char *broken_why;
	const char *stuck;       /* the database whose lock the last attempt could not get */
	double progress_at;
	uint64_t total_bytes, done_bytes;
	double lock_t0;
	int64_t cut_ns;
	double last_change;      /* when a plain file or the tree was last seen changing */
	double uploads_before;   /* realtime; see cap_opts */
	int64_t newest_ctime;    /* of anything the scans saw, for the quiet window at start */
	int holding;             /* rollback databases are locked: writers wait on us */
	int no_clone;            /* the snapshot's filesystem cannot clone the store's files */
	double sweep_s;          /* how long the last sweep of every file's stat took */
	/* After the release (cap_after): 1 armed, 2 the release marker passed; after_written:
	 * a plain file was written (or made) since. */
	int after_state, after_written, watch_after;
	/* HNSW segments found torn (cap_check_segments): the directory, its files' identity
	 * then, and since when they have been so. */
	struct { size_t dir; uint32_t sig; double since; } torn[16];
	unsigned ntorn;
	/* the snapshot given up to cap_opts.recycle: its databases' copies may be taken */
	int recyfd;
	int have_recy, recy_taken;
	int recy_is_prev;        /* the recycled snapshot is the previous one (stillctl --recycle) */
	struct mf recy;
};

static int cap_openat2(int dirfd, const char *path, int flags)
{
	/* Never let a symlink (or "..") inside the store lead a path walk anywhere else. */
	struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC),
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
	int fd = (int)syscall(SYS_openat2, dirfd, path[0] ? path : ".", &how, sizeof how);
	if (fd < 0 && errno == ENOSYS)
		return ut_open_beneath_walk(dirfd, path[0] ? path : ".", flags);
	return fd < 0 ? -errno : fd;
}

static int64_t cap_ns(struct timespec t) { return ut_ts_ns(t); }

static void cap_keep_stat(struct cap_stat *to, const struct stat *s)
{
	*to = (struct cap_stat){ .st_dev = s->st_dev, .st_ino = s->st_ino, .st_size = s->st_size,
				 .st_nlink = s->st_nlink, .st_mode = s->st_mode, .st_uid = s->st_uid, .st_gid = s->st_gid,
				 .st_atim = s->st_atim, .st_mtim = s->st_mtim,
				 .st_ctim = s->st_ctim };
}

/* fstat / fstatat (no symlink followed) into a cap_stat. 0 or -errno. */
static int cap_fstat(int fd, struct cap_stat *to)
{
	struct stat s;
	if (fstat(fd, &s) < 0)
		return -errno;
	cap_keep_stat(to, &s);
	return 0;
}

static int cap_lstatat(int dirfd, const char *name, struct cap_stat *to)
{
	struct stat s;
	if (fstatat(dirfd, name, &s, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	cap_keep_stat(to, &s);
	return 0;
}

static char *cap_ident(const struct cap_stat *s, int64_t at)
{
	char buf[160];
	if (cap_ns(s->st_ctim) + CAP_RACY_NS >= at)
		return NULL;
	snprintf(buf, sizeof buf, "%" PRIx64 ".%" PRIu64 ".%" PRId64 ".%" PRId64 ".%" PRId64,
		 (uint64_t)s->st_dev, (uint64_t)s->st_ino, (int64_t)s->st_size,
		 cap_ns(s->st_mtim), cap_ns(s->st_ctim));
	return strdup(buf);
}

static const char *cap_where(const struct cap *c, const struct ent *e)
{
	static __thread char buf[PATH_MAX + 64];
	snprintf(buf, sizeof buf, "%s/%s", c->o->store, e->path);
	return buf;
}

/* ---- entries ---------------------------------------------------------------------------- */

static int cap_add(struct cap *c, size_t parent, const char *name, char kind, size_t *out)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 1024;
		struct ent *ne = realloc(c->e, cap * sizeof *ne);
		if (!ne)
			return -ENOMEM;
		c->e = ne;
		c->cap = cap;
		/* The index borrows path strings, which did not move; nothing to redo. */
	}
	struct ent *e = &c->e[c->n];
	memset(e, 0, sizeof *e);
	const char *pp = c->n ? c->e[parent].path : "";
	size_t len = strlen(pp) + strlen(name) + 2;
	e->path = malloc(len);
	if (!e->path)
		return -ENOMEM;
	if (pp[0])
		snprintf(e->path, len, "%s/%s", pp, name);
	else
		snprintf(e->path, len, "%s", name);
	e->name = strrchr(e->path, '/') ? strrchr(e->path, '/') + 1 : e->path;
	e->parent = parent;
	e->kind = kind;
	if (ut_map_put(&c->index, e->path, c->n)) {
		free(e->path);
		return -ENOMEM;
	}
	*out = c->n++;
	return 0;
}

/* Make e a database entry: give it the state only databases carry. 0 or -ENOMEM. */
static int cap_as_db(struct ent *e)
{
	if (!e->d) {
		e->d = calloc(1, sizeof *e->d);
		if (!e->d)
			return -ENOMEM;
		e->d->dirfd = e->d->dbfd = -1;
		e->d->wal_phase = -1;
	}
	e->kind = K_DB;
	return 0;
}

static int cap_lookup(const struct cap *c, size_t dir, const char *name, size_t *idx)
{
	char buf[PATH_MAX * 2];
	const char *pp = c->e[dir].path;
	snprintf(buf, sizeof buf, pp[0] ? "%s/%s" : "%s%s", pp, name);
	return ut_map_get(&c->index, buf, idx);
}

static int cap_is_companion_name(const char *name, size_t *baselen)
{
	static const char *sfx[] = { "-wal", "-shm", "-journal" };
	size_t n = strlen(name);
	for (unsigned i = 0; i < 3; i++) {
		size_t s = strlen(sfx[i]);
		if (n > s && !strcmp(name + n - s, sfx[i])) {
			*baselen = n - s;
			return 1;
		}
	}
	return 0;
}

/* The database a -wal/-shm/-journal name belongs to, if that database is known. */
static int cap_companion_of(const struct cap *c, size_t dir, const char *name, size_t *db)
{
	size_t bl;
	char base[NAME_MAX + 1];
	if (!cap_is_companion_name(name, &bl) || bl > NAME_MAX)
		return 0;
	memcpy(base, name, bl);
	base[bl] = 0;
	return cap_lookup(c, dir, base, db) && c->e[*db].kind == K_DB;
}

static void cap_apply_owner(int fd, const struct cap_stat *s);

/* Record the digest of a copy of plain file e and what it stored. */
static void cap_copied(struct cap *c, struct ent *e, const struct cp_result *r)
{
	e->has_digest = 1;
	memcpy(e->digest, r->digest, 32);
	e->written = r->written;
	c->st->bytes_copied += r->written;
	if (e->cloned)
		c->st->bytes_cloned += e->size;
}

/* The copy of e whose digest was left pending: wait for the digest, record it (cap_copied).
 * Its owner and mode are set only now, once no more holes are punched into it: a punch clears
 * the set-user-ID bit of a file we do not own, and changes its mtime, so this must come
 * before e is copied again, unstaged or forgotten, and for all of them before the times are
 * set (cap_set_times) and the manifest written. 0 or -errno. */
static int cap_collect(struct cap *c, struct ent *e)
{
	struct cp_result r = { 0 };
	if (!e->pend)
		return 0;
	int rc = cp_pending_wait(e->pend, &r);
	e->pend = NULL;
	if (rc)
		return rc;
	cap_copied(c, e, &r);
	int fd = openat(c->stagefd, e->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	cap_apply_owner(fd, &e->st);
	close(fd);
	return 0;
}

static int cap_collect_all(struct cap *c)
{
	for (size_t i = 0; i < c->n; i++) {
		int rc = cap_collect(c, &c->e[i]);
		if (rc)
			return rc;
	}
	return 0;
}

/* Remove what the staging tree holds for entry i (and below, for a directory). */
static void cap_unstage(struct cap *c, size_t i)
{
	cap_collect(c, &c->e[i]); /* only to account for it: what it collects goes away */
	if (c->e[i].path[0])
		cp_rmtree(c->stagefd, c->e[i].path);
	c->e[i].copied = 0;
	c->e[i].reused = 0;
	c->e[i].staged = 0;
	c->e[i].precopied = 0;
	if (c->e[i].d)
		dd_free(&c->e[i].d->blk);
}

static void cap_forget(struct cap *c, size_t i)
{
	struct ent *e = &c->e[i];
	if (e->kind == K_DIR) {
		/* Children have higher indices; mark every entry below this path gone. */
		size_t len = strlen(e->path);
		for (size_t j = i + 1; j < c->n; j++)
			if (c->e[j].kind != K_NONE && !strncmp(c->e[j].path, e->path, len) &&
			    c->e[j].path[len] == '/') {
				cap_collect(c, &c->e[j]);
				c->e[j].kind = K_NONE;
				ut_map_del(&c->index, c->e[j].path);
			}
	}
	cap_unstage(c, i);
	e->kind = K_NONE;
	ut_map_del(&c->index, e->path);
}

/* Read one directory: add new entries, forget vanished ones, watch it. */
static int cap_scan_dir(struct cap *c, size_t di)
{
	int rc = 0;
	int fd = cap_openat2(c->storefd, c->e[di].path, O_RDONLY | O_DIRECTORY);
	if (fd < 0) {
		if (fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP) {
			if (di == 0) {
				log_err("%s: the store directory vanished", c->o->store);
				return -ENOENT;
			}
			c->e[c->e[di].parent].rescan = 1;
			return 0;
		}
		log_err("cannot read directory %s: %s", cap_where(c, &c->e[di]), strerror(-fd));
		return fd;
	}
	c->e[di].rescan = 0;
	/* Watch before listing, so that an entry created meanwhile is reported. */
	rc = wt_add(c->w, fd, (uint32_t)di);
	if (rc == -ENOSPC) {
		log_err("too many directories to watch (raise fs.inotify.max_user_watches)");
		goto out;
	}
	if (rc)
		goto out;
	rc = cap_fstat(fd, &c->e[di].st);
	if (rc)
		goto out;
	if (cap_ns(c->e[di].st.st_ctim) > c->newest_ctime)
		c->newest_ctime = cap_ns(c->e[di].st.st_ctim);
	if (di && mkdirat(c->stagefd, c->e[di].path, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		log_err("cannot create %s in the snapshot: %s", c->e[di].path, strerror(errno));
		goto out;
	}
	int dfd = dup(fd);
	DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
	if (!d) {
		rc = -errno;
		if (dfd >= 0)
			close(dfd);
		goto out;
	}
	/* Entries seen now; anything known but not seen is gone. */
	char *seen = calloc(c->n + 1, 1);
	size_t seen_n = c->n;
	if (!seen) {
		closedir(d);
		rc = -ENOMEM;
		goto out;
	}
	struct dirent *de;
	unsigned long_warned = 0;
	/* readdir reports errors only through errno, which the loop body also sets. */
	while ((errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		/* A store restored from a snapshot still has the old manifest: the name is ours. */
		if (di == 0 && !strcmp(de->d_name, CAP_MANIFEST_NAME))
			continue;
		struct stat st;
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* vanished: the delete event will follow */
		if (strlen(c->e[di].path) + strlen(de->d_name) + 2 > CAP_PATH_MAX) {
			/* Paths are walked from the store's root, and a copy names its companions and
			 * its stage place in a buffer of PATH_MAX: one path too deep must not stop the
			 * backup of everything else. */
			if (!long_warned++)
				log_warn("skipping what lies in %.80s... (%zu bytes deep): its paths are "
					 "longer than %d bytes", c->e[di].path, strlen(c->e[di].path),
					 CAP_PATH_MAX);
			continue;
		}
		/* A regular file may become K_DB or K_COMPANION once its content is seen. */
		char kind = S_ISDIR(st.st_mode) ? K_DIR : S_ISREG(st.st_mode) ? K_FILE :
			    S_ISLNK(st.st_mode) ? K_LINK : K_SKIP;
		size_t idx;
		if (cap_lookup(c, di, de->d_name, &idx)) {
			int was_dir = c->e[idx].kind == K_DIR;
			int same_type = was_dir == (kind == K_DIR) &&
					(c->e[idx].kind == K_LINK) == (kind == K_LINK) &&
					(c->e[idx].kind == K_SKIP) == (kind == K_SKIP);
			if (same_type && c->e[idx].st.st_ino == st.st_ino) {
				if (idx < seen_n)
					seen[idx] = 1;
				continue;
			}
			cap_forget(c, idx); /* replaced by something else: start over for it */
		}
		rc = cap_add(c, di, de->d_name, kind, &idx);
		if (rc)
			break;
		cap_keep_stat(&c->e[idx].st, &st);
		if (cap_ns(st.st_ctim) > c->newest_ctime)
			c->newest_ctime = cap_ns(st.st_ctim);
		c->e[idx].dirty = 1;
		if (kind == K_DIR)
			c->e[idx].rescan = 1;
		if (kind == K_SKIP)
			log_warn("skipping %s: not a regular file, directory or symlink",
				 cap_where(c, &c->e[idx]));
	}
	if (!rc && errno)
		rc = -errno;
	closedir(d);
	for (size_t j = di + 1; !rc && j < seen_n; j++)
		if (c->e[j].kind != K_NONE && c->e[j].parent == di && !seen[j])
			cap_forget(c, j);
	free(seen);
out:
	close(fd);
	return rc;
}

/* Rescan every directory that asked for it, until none does (new subdirectories ask). */
static int cap_rescan(struct cap *c)
{
	int again = 1;
	while (again) {
		again = 0;
		for (size_t i = 0; i < c->n; i++) {
			if (c->e[i].kind == K_DIR && c->e[i].rescan) {
				int rc = cap_scan_dir(c, i);
				if (rc)
					return rc;
				again = 1;
			}
		}
	}
	return 0;
}

/* ---- events ----------------------------------------------------------------------------- */

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

static int cap_drain(struct cap *c)
{
	int rc = wt_drain(c->w, cap_event, c);
	return rc < 0 ? rc : 0;
}

/* ---- copying files ---------------------------------------------------------------------- */

static void cap_progress(struct cap *c, int force)
{
	if (!c->o->progress)
		return;
	double now = ut_now();
	if (!force && now - c->progress_at < 1.0)
		return;
	c->progress_at = now;
	char a[32], b[32];
	ut_format_bytes(c->done_bytes, a, sizeof a);
	ut_format_bytes(c->total_bytes, b, sizeof b);
	fprintf(stderr, "stillctl: progress: %s of %s, %" PRIu64 " files, %u retries\n", a, b,
		c->st->files, c->st->retries);
}

static void cap_apply_owner(int fd, const struct cap_stat *s)
{
	/* Without privilege ownership cannot be kept; that is what cp -a does too. */
	if (fchown(fd, s->st_uid, s->st_gid) < 0 && errno != EPERM)
		log_warn("cannot set owner: %s", strerror(errno));
	fchmod(fd, s->st_mode & 07777);
}

/* 1 if a snapshot's file s is still what its manifest entry pe records: its content is then
 * what pe's digest (and block digests) describe. */
static int cap_as_recorded(const struct stat *s, const struct mf_entry *pe)
{
	return S_ISREG(s->st_mode) && (uint64_t)s->st_size == pe->size &&
	       cap_ns(s->st_mtim) == pe->mtime_ns;
}

#define CAP_LINK_TMP "link" /* in the work directory, beside the watch's markers */

/* Share the previous snapshot's copy of e when it is proven to hold the same bytes. If
 * `recorded`, *recorded tells whether the previous copy was found as its manifest says, even
 * when sharing it then failed. */
static int cap_link_prev(struct cap *c, struct ent *e, const struct mf_entry *pe, int *recorded)
{
	char proc[64];
	struct stat ps;
	if (recorded)
		*recorded = 0;
	int fd = cap_openat2(c->prevfd, e->path, O_PATH | O_NOFOLLOW);
	if (fd < 0)
		return fd;
	int rc = -ESTALE;
	/* The previous copy must still be what its manifest says it is. */
	if (fstat(fd, &ps) < 0 || !cap_as_recorded(&ps, pe))
		goto out;
	if (recorded)
		*recorded = 1;
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	/* Linked under a private name, then renamed over the staged copy: a link that fails
	 * (EMLINK on a copy shared by many generations, ENOSPC) leaves the staged copy as it was,
	 * and the callers go on with it. */
	int lr = linkat(AT_FDCWD, proc, c->workfd, CAP_LINK_TMP, AT_SYMLINK_FOLLOW);
	if (lr < 0 && errno == EEXIST && unlinkat(c->workfd, CAP_LINK_TMP, 0) == 0)
		lr = linkat(AT_FDCWD, proc, c->workfd, CAP_LINK_TMP, AT_SYMLINK_FOLLOW);
	/* (renamed onto a link to the same file, the name stays; the next link replaces it) */
	if (lr < 0 || renameat(c->workfd, CAP_LINK_TMP, c->stagefd, e->path) < 0) {
		rc = -errno;
		unlinkat(c->workfd, CAP_LINK_TMP, 0);
		goto out;
	}
	e->size = pe->size;
	e->has_digest = pe->has_digest != 0;
	memcpy(e->digest, pe->digest, 32);
	e->mtime_ns = pe->mtime_ns;
	e->reused = 1;
	e->copied = 1;
	e->staged = 0; /* the staged copy, if any, was replaced */
	e->precopied = 0;
	if (e->d)
		dd_free(&e->d->blk);
	c->st->bytes_linked += pe->size;
	rc = 0;
out:
	close(fd);
	return rc;
}

static const struct mf_entry *cap_prev_same(const struct cap *c, const struct ent *e,
					   const char *ident)
{
	if (!c->have_prev || !ident)
		return NULL;
	const struct mf_entry *pe = mf_find(&c->prev, e->path);
	if (!pe || pe->kind != e->kind || !pe->ident || strcmp(pe->ident, ident) ||
	    pe->mode != (e->st.st_mode & 07777) || pe->uid != e->st.st_uid ||
	    pe->gid != e->st.st_gid)
		return NULL;
	return pe;
}

static int cap_copy_link(struct cap *c, struct ent *e)
{
	char target[PATH_MAX + 1];
	int pfd = cap_openat2(c->storefd, c->e[e->parent].path, O_PATH | O_DIRECTORY);
	if (pfd < 0)
		return pfd == -ENOENT ? 0 : pfd;
	ssize_t n = readlinkat(pfd, e->name, target, PATH_MAX);
	int rc = n < 0 ? -errno : 0;
	if (!rc)
		rc = cap_lstatat(pfd, e->name, &e->st);
	close(pfd);
	if (rc == -ENOENT || rc == -EINVAL) {
		c->e[e->parent].rescan = 1;
		return 0;
	}
	if (rc)
		return rc;
	target[n] = 0;
	unlinkat(c->stagefd, e->path, 0);
	if (symlinkat(target, c->stagefd, e->path) < 0)
		return -errno;
	fchownat(c->stagefd, e->path, e->st.st_uid, e->st.st_gid, AT_SYMLINK_NOFOLLOW);
	e->size = (uint64_t)n;
	sha256(target, (size_t)n, e->digest);
	e->has_digest = 1;
	e->mtime_ns = cap_ns(e->st.st_mtim);
	e->copied = 1;
	return 0;
}

/* 1 if a and b are one file in one state: what a write, through any name or AIO, moves. */
static int cap_same_file_state(const struct cap_stat *a, const struct cap_stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       cap_ns(a->st_mtim) == cap_ns(b->st_mtim) && cap_ns(a->st_ctim) == cap_ns(b->st_ctim);
}

/* 1 if entry p holds a clean copy of its own (no alias) of the file whose stat is s. */
static int cap_is_copy_of(const struct cap *c, size_t p, const struct cap_stat *s)
{
	const struct ent *pe = &c->e[p];
	return pe->kind == K_FILE && pe->copied && !pe->dirty && !pe->alias &&
	       cap_same_file_state(&pe->st, s);
}

/* A file with several names in the store is copied once: e, just stat'ed, becomes another name
 * of a clean copy of the same file if there is one (linked to it in cap_link_aliases, once the
 * snapshot's times are set), else the copy the other names will share. 1 if e became such a
 * name, 0 if it is to be copied, -errno. */
static int cap_alias(struct cap *c, struct ent *e)
{
	char key[48];
	size_t p, me = (size_t)(e - c->e);
	snprintf(key, sizeof key, "%jx:%jx", (uintmax_t)e->st.st_dev, (uintmax_t)e->st.st_ino);
	e->alias = 0;
	if (ut_map_get(&c->inodes, key, &p) && p != me && cap_is_copy_of(c, p, &e->st)) {
		cap_unstage(c, me);
		e->alias = (uint32_t)p;
		e->copied = 1;
		return 1;
	}
	if (me > UINT32_MAX)
		return 0;
	char **keys = realloc(c->ikeys, (c->nikeys + 1) * sizeof *keys);
	if (!keys)
		return -ENOMEM;
	c->ikeys = keys;
	if (!(keys[c->nikeys] = strdup(key)))
		return -ENOMEM;
	if (ut_map_put(&c->inodes, keys[c->nikeys], me)) {
		free(keys[c->nikeys]);
		return -ENOMEM;
	}
	c->nikeys++;
	return 0;
}

/* Copy (or share) one regular file; classifies it as a database on the way. */
static int cap_copy_file(struct cap *c, struct ent *e)
{
	int rc, src, dst = -1;
	struct cp_result r;

	/* The previous copy's digest first: this copy (or what e turns out to be) replaces it. */
	rc = cap_collect(c, e);
	if (rc)
		return rc;
	src = cap_openat2(c->storefd, e->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (src < 0) {
		if (src == -ENOENT || src == -ELOOP || src == -ENXIO || src == -ENOTDIR) {
			c->e[e->parent].rescan = 1; /* gone or replaced: the rescan sorts it out */
			return 0;
		}
		log_err("cannot read %s: %s", cap_where(c, e), strerror(-src));
		return src;
	}
	int64_t at = cap_ns(ut_realtime());
	e->copied_at = ut_now();
	rc = cap_fstat(src, &e->st);
	if (rc)
		goto out;
	if (!S_ISREG(e->st.st_mode)) {
		c->e[e->parent].rescan = 1;
		rc = 0;
		goto out;
	}
	uint8_t head[16] = { 0 };
	if (e->st.st_size >= 512 && pread(src, head, sizeof head, 0) == (ssize_t)sizeof head &&
	    sq_is_header(head)) {
		/* copied early by cap_precopy_db, judged under its lock */
		rc = cap_as_db(e);
		e->dirty = 1;
		goto out;
	}
	if (e->st.st_nlink > 1 && (rc = cap_alias(c, e)) != 0) {
		if (rc > 0)
			rc = 0;
		goto out;
	}
	free(e->ident);
	e->ident = cap_ident(&e->st, at);
	const struct mf_entry *pe = cap_prev_same(c, e, e->ident);
	if (pe && cap_link_prev(c, e, pe, NULL) == 0) {
		c->done_bytes += e->size;
		rc = 0;
		goto out;
	}
	unlinkat(c->stagefd, e->path, 0);
	/* Read-write: the copy keeps a duplicate to hash and punch it after we close ours. */
	dst = openat(c->stagefd, e->path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (dst < 0) {
		rc = -errno;
		log_err("cannot create %s in the snapshot: %s", e->path, strerror(-rc));
		goto out;
	}
	/* The digest is usually left to the hashing threads, so that the next files are copied
	 * meanwhile; cap_collect picks it up. */
	rc = cp_file_deferred(src, dst, &r, &e->pend);
	if (rc) {
		log_err("cannot copy %s: %s", cap_where(c, e), strerror(-rc));
		goto out;
	}
	e->size = r.size;
	e->cloned = r.cloned != 0;
	e->has_digest = 0;
	e->copied = 1;
	e->reused = 0;
	if (!e->pend) {
		cap_apply_owner(dst, &e->st);
		cap_copied(c, e, &r);
	}
	c->done_bytes += r.size;
out:
	if (dst >= 0)
		close(dst);
	close(src);
	return rc;
}

static int cap_wal_present(int dirfd, const char *name);
static char *cap_db_ident(struct ent *e, int dirfd);
static int cap_copy_fd_to_stage(struct cap *c, int src, const char *rel, int digest,
				struct cp_result *r);

#define CAP_DB_THREADS ut_cpu_count() /* compare and hash databases on every CPU we have */
#define CAP_RESYNC_PAGES 2048  /* pages a pass may leave to the locked pass (8 MiB) */

/* An earlier snapshot's copy of e (in dirfd, described by manifest m) with the digests of
 * its blocks, to start e's copy from. The copy must still be what the manifest says it is
 * (as for sharing it, cap_link_prev). An fd opened with flags, or -errno. */
static int cap_earlier_copy(int dirfd, const struct mf *m, const struct ent *e, int flags,
			    struct dd_blocks *b, struct stat *ps)
{
	const struct mf_entry *pe = mf_find(m, e->path);
	if (!pe || pe->kind != K_DB || mf_blocks_of(m, e->path, b))
		return -ENOENT;
	int fd = cap_openat2(dirfd, e->path, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd >= 0 && (fstat(fd, ps) < 0 || !cap_as_recorded(ps, pe))) {
		close(fd);
		fd = -ESTALE;
	}
	if (fd < 0)
		dd_free(b);
	return fd;
}

static int cap_prev_base(struct cap *c, const struct ent *e, struct dd_blocks *b)
{
	struct stat ps;
	if (!c->have_prev)
		return -ENOENT;
	return cap_earlier_copy(c->prevfd, &c->prev, e, O_RDONLY, b, &ps);
}

/* Take the recycled snapshot's copy of e: move it to e's place in the staging tree, where
 * it is brought up to date in place, so that only the pages that changed are written. Only
 * a copy no other snapshot shares (one link) is taken, and only one we can write to. The
 * first one taken removes that snapshot's manifest: it no longer is a whole snapshot.
 * 0 when e's staged copy is that copy, e->d->blk describing it; else -errno, e->d->blk empty,
 * and e's copy is to be made another way. */
static int cap_recycle(struct cap *c, struct ent *e)
{
	struct stat ps, ns;
	dd_free(&e->d->blk);
	if (!c->have_recy)
		return -ENOENT;
	int fd = cap_earlier_copy(c->recyfd, &c->recy, e, O_RDWR, &e->d->blk, &ps);
	if (fd < 0)
		return fd;
	int rc = -EMLINK, from = -1, to = -1;
	if (ps.st_nlink != 1)
		goto out;
	from = cap_openat2(c->recyfd, c->e[e->parent].path, O_PATH | O_DIRECTORY);
	to = cap_openat2(c->stagefd, c->e[e->parent].path, O_PATH | O_DIRECTORY);
	if (from < 0 || to < 0) {
		rc = from < 0 ? from : to;
		goto out;
	}
	if (renameat(from, e->name, to, e->name) < 0) {
		rc = -errno;
		goto out;
	}
	if (!c->recy_taken && unlinkat(c->recyfd, CAP_MANIFEST_NAME, 0) < 0 && errno != ENOENT)
		log_warn("%s: cannot remove its manifest (%s), but it is no longer a whole snapshot",
			 c->o->recycle, strerror(errno));
	c->recy_taken = 1;
	/* Nothing else renames in these trees; still, it must be the file we checked. */
	if (fstatat(to, e->name, &ns, AT_SYMLINK_NOFOLLOW) < 0 || !ut_same_file(&ns, &ps)) {
		rc = -ESTALE;
		goto out;
	}
	rc = 0;
out:
	if (from >= 0)
		close(from);
	if (to >= 0)
		close(to);
	close(fd);
	if (rc) {
		dd_free(&e->d->blk);
		return rc;
	}
	e->staged = 1;
	e->d->took_prev = c->recy_is_prev;
	c->st->recycled++;
	return 0;
}

/* The work-dir name of database e's clone made under the lock. */
static void cap_clone_name(const struct cap *c, const struct ent *e, char *buf, size_t len)
{
	snprintf(buf, len, "clone.%zu", (size_t)(e - c->e));
}

static void cap_drop_clone(struct cap *c, struct ent *e)
{
	char name[64];
	if (!e->d || !e->d->cut_clone)
		return;
	cap_clone_name(c, e, name, sizeof name);
	unlinkat(c->workfd, name, 0);
	e->d->cut_clone = 0;
}

/* Where the snapshot can share extents with the store, a clone of the whole database is the
 * copy, made in milliseconds whatever its size; under the lock, finding which blocks changed
 * and hashing them wait for the release (cap_adopt_clone). -EOPNOTSUPP where it cannot clone. */
static int cap_clone_db(struct cap *c, struct ent *e, int src)
{
	char name[64];
	if (c->no_clone)
		return -EOPNOTSUPP;
	cap_drop_clone(c, e);
	cap_clone_name(c, e, name, sizeof name);
	unlinkat(c->workfd, name, 0);
	int fd = cl_clone_new(src, c->workfd, name);
	if (fd < 0) {
		if (cl_unsupported(fd))
			c->no_clone = 1;
		return fd;
	}
	close(fd);
	e->d->cut_clone = 1;
	e->d->synced_pages = 0;
	return 0;
}

/* The clone becomes the staged copy. Blocks it shares with the copy staged before (else the
 * recycled snapshot's, else the previous snapshot's) keep their digests; the others are left
 * to cap_db_finish's rehash. Reads extent maps only, no data. */
static int cap_adopt_clone(struct cap *c, struct ent *e)
{
	char name[64];
	cap_clone_name(c, e, name, sizeof name);
	int fd = openat(c->workfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (!e->staged)
		cap_recycle(c, e);
	int ref = e->staged ? openat(c->stagefd, e->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
	if (ref < 0) {
		dd_free(&e->d->blk);
		ref = cap_prev_base(c, e, &e->d->blk);
	}
	int rc = ref >= 0 ? cl_adopt(fd, ref, &e->d->blk) : -ENOENT;
	struct stat st;
	if (rc && fstat(fd, &st) == 0)
		rc = dd_reset(&e->d->blk, (uint64_t)st.st_size); /* nothing known: hash it all */
	if (ref >= 0)
		close(ref);
	close(fd);
	if (!rc && renameat(c->workfd, name, c->stagefd, e->path) < 0)
		rc = -errno;
	if (!rc) {
		e->d->cut_clone = 0;
		e->d->cloned = 1;
		e->staged = 1;
	}
	return rc;
}

/* Make the staged copy of database e equal to the live file src: compare it page by page
 * with what is staged already, or else with the recycled snapshot's copy (taken over), or else
 * with the previous snapshot's copy; copy it whole only when none exists. Digests of the blocks that changed are left to cap_db_finish (hashed
 * after the locks are gone), except on a whole copy made without any lock held. */
static int cap_db_sync(struct cap *c, struct ent *e, int src, uint64_t *written)
{
	struct dd_result r = { 0 };
	int rc, dst, base = -1;
	*written = 0;
	rc = cap_clone_db(c, e, src);
	if (!rc && !c->holding)
		rc = cap_adopt_clone(c, e);
	if (!cl_unsupported(rc))
		return rc;
	e->d->cloned = 0;
	if (!e->staged)
		cap_recycle(c, e);
	if (e->staged) {
		dst = openat(c->stagefd, e->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		if (dst < 0)
			return -errno;
		rc = dd_sync(src, dst, -1, CAP_DB_THREADS, &e->d->blk, &r);
	} else {
		dd_free(&e->d->blk);
		base = cap_prev_base(c, e, &e->d->blk);
		unlinkat(c->stagefd, e->path, 0);
		dst = openat(c->stagefd, e->path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			     0600);
		if (dst < 0) {
			rc = -errno;
			if (base >= 0)
				close(base);
			dd_free(&e->d->blk);
			return rc;
		}
		e->staged = 1;
		if (base >= 0)
			rc = dd_sync(src, dst, base, CAP_DB_THREADS, &e->d->blk, &r);
		else
			rc = dd_copy(src, dst, !c->holding, CAP_DB_THREADS, &e->d->blk, &r);
		if (rc && rc != -EAGAIN && base >= 0) {
			/* The base may not have been copied whole: claim nothing about the copy. */
			struct stat st;
			if (fstat(dst, &st) == 0)
				dd_reset(&e->d->blk, (uint64_t)st.st_size);
			else
				e->staged = 0;
		}
		if (base >= 0)
			close(base);
	}
	close(dst);
	*written = r.written;
	e->d->cloned = r.cloned && base < 0;
	e->d->synced_pages = r.pages;
	return rc;
}

/* A rollback-mode database is copied early, without any lock, like a plain file. Every write
 * to it queues an event before its writer can release the lock we take at the cut, so if none
 * came since this copy began, the copy is what the cut would have copied, and the lock is
 * held only for the databases that did change; for those, only the pages that differ from
 * this copy are rewritten under the lock. */
static int cap_precopy_db(struct cap *c, struct ent *e)
{
	/* A busy database is compared again under the lock anyway, where only the pages that
	 * changed since are rewritten; another pass without the lock only saves the lock those
	 * writes when many pages keep changing. */
	if (!c->holding && e->precopied && e->staged && e->d->synced_pages < CAP_RESYNC_PAGES)
		return 0;
	e->dirty = 0;
	e->precopied = 0;
	int pfd = cap_openat2(c->storefd, c->e[e->parent].path, O_PATH | O_DIRECTORY);
	if (pfd < 0) {
		c->e[e->parent].rescan = 1;
		return pfd == -ENOENT ? 0 : pfd;
	}
	int src = -1, rc = 0;
	struct stat st;
	/* A WAL database (one with a -wal, or a connection of ours) is copied only through
	 * SQLite, at the cut; and a descriptor of ours on a file our connection has open would,
	 * closed, drop the POSIX locks SQLite holds on it for that connection. */
	if (e->d->db || cap_wal_present(pfd, e->name))
		goto out;
	src = openat(pfd, e->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (src < 0 || fstat(src, &st) < 0) {
		c->e[e->parent].rescan = 1;
		goto out;
	}
	char *ident = cap_db_ident(e, pfd);
	const struct mf_entry *pe = cap_prev_same(c, e, ident);
	free(ident);
	if (pe)
		goto out; /* unchanged since the previous snapshot: shared at the cut */
	e->copied_at = e->d->synced_at = ut_now();
	uint64_t w = 0;
	rc = cap_db_sync(c, e, src, &w);
	c->st->bytes_copied += w;
	if (rc == -EAGAIN) {
		e->dirty = 1; /* it shrank while read: its event comes, the next pass redoes it */
		rc = 0;
		goto out;
	}
	if (rc) {
		log_err("cannot copy database %s: %s", cap_where(c, e), strerror(-rc));
		goto out;
	}
	e->precopied = 1;
	e->size = e->d->blk.size;
	c->done_bytes += (uint64_t)st.st_size;
out:
	if (src >= 0)
		close(src);
	close(pfd);
	return rc;
}

/* Copy every dirty non-database entry. Each is made clean just before it is read. */
static int cap_copy_dirty(struct cap *c, int *copied)
{
	*copied = 0;
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		if (cap_stop)
			return -EINTR;
		if (e->dirty && e->kind == K_DB) {
			int rc = cap_drain(c);
			if (!rc && e->dirty)
				rc = cap_precopy_db(c, e);
			if (rc)
				return rc;
			continue;
		}
		if (!e->dirty || (e->kind != K_FILE && e->kind != K_LINK)) {
			if (e->kind == K_DIR || e->kind == K_COMPANION)
				e->dirty = 0;
			continue;
		}
		size_t db;
		/* A symlink in a companion's place is no companion (SQLite never follows one), but
		 * staged beside the copy it would stop the copy from being recovered or opened. */
		if ((e->kind == K_FILE || e->kind == K_LINK) &&
		    cap_companion_of(c, e->parent, e->name, &db)) {
			e->kind = K_COMPANION;
			e->dirty = 0;
			cap_unstage(c, i);
			continue;
		}
		int rc = cap_drain(c);
		if (rc)
			return rc;
		if (!e->dirty)
			continue; /* only possible if the drain forgot it */
		e->dirty = 0;
		rc = e->kind == K_LINK ? cap_copy_link(c, e) : cap_copy_file(c, e);
		if (rc)
			return rc;
		(*copied)++;
		cap_progress(c, 0);
	}
	return 0;
}

/* Every file is classified by the copy that reads it; but where a -wal/-shm/-journal sits
 * beside a file, that file is classified first, so its companions are never copied. */
static int cap_classify_dbs(struct cap *c)
{
	for (size_t k = 0; k < c->n; k++) {
		size_t bl, i;
		char base[NAME_MAX + 1];
		if (c->e[k].kind != K_FILE || !c->e[k].dirty ||
		    !cap_is_companion_name(c->e[k].name, &bl) || bl > NAME_MAX)
			continue;
		memcpy(base, c->e[k].name, bl);
		base[bl] = 0;
		if (!cap_lookup(c, c->e[k].parent, base, &i))
			continue;
		struct ent *e = &c->e[i];
		if (e->kind != K_FILE || e->st.st_size < 512)
			continue;
		int fd = cap_openat2(c->storefd, e->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
		if (fd < 0)
			continue; /* the copy reports it */
		uint8_t head[16];
		int rc = 0;
		if (pread(fd, head, sizeof head, 0) == (ssize_t)sizeof head && sq_is_header(head)) {
			rc = cap_collect(c, e); /* a copy of it as a plain file is being hashed */
			if (!rc)
				rc = cap_as_db(e);
			e->dirty = 0;
		}
		close(fd);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- databases -------------------------------------------------------------------------- */

static void cap_db_release(struct cap *c)
{
	for (size_t i = 0; i < c->n; i++) {
		struct ent_db *d = c->e[i].d;
		if (!d)
			continue;
		if (d->db) {
			sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
			sqlite3_close(d->db);
			d->db = NULL;
		}
		if (d->dbfd >= 0) {
			sq_unlock(d->dbfd);
			close(d->dbfd);
			d->dbfd = -1;
		}
		if (d->dirfd >= 0) {
			close(d->dirfd);
			d->dirfd = -1;
		}
		d->locked = d->pinned = 0;
		d->wal_phase = -1;
	}
}

static char *cap_db_ident(struct ent *e, int dirfd)
{
	struct cap_stat s = { 0 }, w = { 0 }; /* set when found; zeroed for the compiler */
	char name[NAME_MAX + 16];
	int64_t at = cap_ns(ut_realtime());
	if (cap_lstatat(dirfd, e->name, &s) < 0)
		return NULL;
	char *a = cap_ident(&s, at), *b = NULL, *out = NULL;
	snprintf(name, sizeof name, "%s-wal", e->name);
	int has_wal = cap_lstatat(dirfd, name, &w) == 0;
	if (has_wal)
		b = cap_ident(&w, at);
	if (a && (!has_wal || b) && asprintf(&out, "%s/%s", a, has_wal ? b : "-") < 0)
		out = NULL;
	free(a);
	free(b);
	return out;
}

/* SQLite's unixLockSharedMemory: every connection holds a read lock on this byte of the -shm
 * for as long as it has the -shm open. Only called while no connection of ours is open on the
 * database: closing our descriptor would drop our own POSIX locks on the -shm. */
#define CAP_SHM_DMS 128
static int cap_shm_in_use(int dirfd, const char *name)
{
	char shm[NAME_MAX + 16];
	struct stat st;
	snprintf(shm, sizeof shm, "%s-shm", name);
	if (fstatat(dirfd, shm, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno != ENOENT;
	if (!S_ISREG(st.st_mode))
		return 0; /* SQLite opens it O_NOFOLLOW and maps it: no link or fifo serves anyone */
	int fd = openat(dirfd, shm, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno != ENOENT;
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = CAP_SHM_DMS,
			    .l_len = 1 };
	int used = fcntl(fd, F_OFD_GETLK, &fl) < 0 || fl.l_type != F_UNLCK;
	close(fd);
	return used;
}

static void cap_cold_sig(struct ent *e, struct cap_sig sig[2])
{
	static const char *sfx[] = { "-wal", "-shm" };
	char name[NAME_MAX + 16];
	for (unsigned k = 0; k < 2; k++) {
		struct stat st;
		snprintf(name, sizeof name, "%s%s", e->name, sfx[k]);
		memset(&sig[k], 0, sizeof sig[k]);
		if (fstatat(e->d->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			sig[k] = (struct cap_sig){ st.st_ino, st.st_size, cap_ns(st.st_mtim),
						   cap_ns(st.st_ctim) };
	}
}

/* A database held by its file lock (not DB_WAL), which a connection in WAL mode does not wait
 * for: 1 if such a connection came (and maybe went) since it was classified. Its -wal's events
 * and its -wal and -shm as found are both asked: either alone can miss it, as a file deleted
 * and made again may come back with the same inode, size and times. */
static int cap_held_disturbed(struct ent *e)
{
	struct cap_sig now[2];
	if (e->d->wal_seen || cap_shm_in_use(e->d->dirfd, e->name))
		return 1;
	cap_cold_sig(e, now);
	return memcmp(now, e->d->cold_sig, sizeof now) != 0;
}

static int cap_wal_present(int dirfd, const char *name)
{
	char wal[NAME_MAX + 16];
	struct stat st;
	snprintf(wal, sizeof wal, "%s-wal", name);
	return fstatat(dirfd, wal, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_size > 0;
}

static int cap_db_unreadable(struct cap *c, struct ent *e)
{
	log_err("cannot read database %s: %s", cap_where(c, e), sqlite3_errmsg(e->d->db));
	return -EIO;
}

/* Open what each database needs, before any lock is taken, to keep lock holds short. */
static int cap_db_prepare(struct cap *c)
{
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		if (e->kind != K_DB)
			continue;
		e->d->dirfd = cap_openat2(c->storefd, c->e[e->parent].path, O_PATH | O_DIRECTORY);
		if (e->d->dirfd < 0) {
			int rc = e->d->dirfd;
			e->d->dirfd = -1;
			c->e[e->parent].rescan = 1;
			return rc == -ENOENT ? -EAGAIN : rc;
		}
		/* SQLite keeps a database's journal and WAL beside the name it was opened by: one
		 * opened by another name, maybe outside the store, commits where we cannot look. */
		struct stat dst;
		if (fstatat(e->d->dirfd, e->name, &dst, AT_SYMLINK_NOFOLLOW) == 0 && dst.st_nlink > 1) {
			log_err("database %s has %ju names: its journal or WAL may be beside another "
				"one, where no capture can see it; give it one name",
				cap_where(c, e), (uintmax_t)dst.st_nlink);
			return -EMLINK;
		}
		free(e->d->db_ident);
		e->d->db_ident = cap_db_ident(e, e->d->dirfd);
		/* A connection in WAL mode makes it a live WAL database even while its -wal is
		 * empty (just opened, or checkpointed with TRUNCATE): it commits without waiting
		 * for the file lock the other kinds are held with. */
		e->d->dbmode = cap_shm_in_use(e->d->dirfd, e->name) ? DB_WAL :
			    cap_wal_present(e->d->dirfd, e->name) ? DB_WAL_COLD : DB_ROLLBACK;
		if (e->d->dbmode != DB_WAL)
			cap_cold_sig(e, e->d->cold_sig);
		e->d->wal_seen = 0;
		if (e->d->dbmode == DB_WAL) {
			/* No descriptor of ours on this file from here on: closing one would drop the
			 * POSIX locks SQLite takes for the connection. */
			int rc = sq_open_ro(e->d->dirfd, e->name, &e->d->db);
			if (rc) {
				log_err("cannot open database %s: %s", cap_where(c, e),
					e->d->db ? sqlite3_errmsg(e->d->db) : strerror(-rc));
				return rc;
			}
			/* One read now, so that the connection holds the WAL open from here on (its
			 * index header can then be read around the pin, and the last other connection
			 * to close cannot delete -wal and -shm under it), and is known to read in WAL
			 * mode: one switched back to rollback mode meanwhile is classified again. */
			rc = sq_begin_read(e->d->db, CAP_LOCK_WAIT);
			if (rc == -EIO)
				return cap_db_unreadable(c, e);
			if (rc == 0)
				rc = sq_reads_wal(e->d->db) == 1 ? 0 : -EAGAIN;
			sqlite3_exec(e->d->db, "ROLLBACK", NULL, NULL, NULL);
			if (rc)
				return -EAGAIN;
		} else {
			e->d->dbfd = openat(e->d->dirfd, e->name,
					    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			if (e->d->dbfd < 0) {
				int rc = -errno;
				if (rc == -ENOENT) {
					c->e[e->parent].rescan = 1;
					return -EAGAIN;
				}
				log_err("cannot read database %s: %s", cap_where(c, e), strerror(-rc));
				return rc;
			}
		}
	}
	return 0;
}

static int cap_db_stage_path(struct cap *c, const struct ent *e, const char *suffix, char *buf,
			     size_t len)
{
	int n = snprintf(buf, len, "/proc/self/fd/%d/%s%s", c->stagefd, e->path, suffix);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int cap_copy_fd_to_stage(struct cap *c, int src, const char *rel, int digest,
				struct cp_result *r)
{
	unlinkat(c->stagefd, rel, 0);
	int dst = openat(c->stagefd, rel, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (dst < 0)
		return -errno;
	int rc = cp_file(src, dst, digest, r);
	close(dst);
	return rc;
}

/* Copy the database's NAME<suffix> companion beside its private copy. */
static int cap_copy_companion(struct cap *c, struct ent *e, const char *suffix)
{
	char name[NAME_MAX + 16], rel[PATH_MAX + 16];
	struct cp_result r;
	snprintf(name, sizeof name, "%s%s", e->name, suffix);
	snprintf(rel, sizeof rel, "%s%s", e->path, suffix);
	int fd = openat(e->d->dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	int rc = fd < 0 ? -errno : cap_copy_fd_to_stage(c, fd, rel, 0, &r);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* pread from the staged copy of rel: the bytes read, or -1. */
static ssize_t cap_pread_stage(struct cap *c, const char *rel, void *buf, size_t n, off_t off)
{
	int fd = openat(c->stagefd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t got = pread(fd, buf, n, off);
	close(fd);
	return got;
}

/* Under the cut: copy one database that changed since the previous snapshot. */
static int cap_db_copy(struct cap *c, struct ent *e)
{
	char path[PATH_MAX + 64];
	uint64_t w = 0;
	struct cp_result r;
	int rc;
	e->precopied = 0;
	e->d->cloned = 0;
	if (e->d->dbmode == DB_WAL_COLD || e->hot) {
		/* Made whole below and recovered by SQLite later: nothing is known of its blocks. */
		e->staged = 0;
		dd_free(&e->d->blk);
	}
	if (e->d->dbmode == DB_WAL) {
		rc = cap_db_stage_path(c, e, "", path, sizeof path);
		if (!rc && !e->staged)
			cap_recycle(c, e);
		/* SQLite opens a copy in WAL format (one made raw, in an attempt that found no
		 * connection in WAL mode) as a WAL database, which the backup cannot write into. */
		uint8_t fmt[2] = { 0 };
		if (!rc && e->staged &&
		    (cap_pread_stage(c, e->path, fmt, 2, 18) != 2 || fmt[0] != 1 || fmt[1] != 1)) {
			e->staged = 0;
			dd_free(&e->d->blk);
		}
		if (!rc && e->staged) {
			/* Into the copy at hand, writing only the pages that differ. */
			rc = sq_backup_into(e->d->db, path, &e->d->blk, &w);
			if (rc) {
				e->staged = 0;
				dd_free(&e->d->blk);
			}
		} else if (!rc) {
			unlinkat(c->stagefd, e->path, 0);
			rc = sq_backup_to(e->d->db, path);
			struct stat st;
			if (!rc && fstatat(c->stagefd, e->path, &st, 0) == 0)
				w = (uint64_t)st.st_size;
		}
	} else if (e->d->dbmode == DB_ROLLBACK && !e->hot) {
		/* The early copy went stale: under the lock, only what differs is rewritten. */
		e->d->synced_at = ut_now();
		rc = cap_db_sync(c, e, e->d->dbfd, &w);
		c->st->bytes_copied += w;
		w = 0;
		if (rc == -EAGAIN) {
			e->dirty = 1;
			return -EAGAIN;
		}
	} else {
		rc = cap_copy_fd_to_stage(c, e->d->dbfd, e->path, 0, &r);
		w = r.written;
		/* A crashed writer's journal, or a WAL nobody has open, goes beside the private
		 * copy, which SQLite then recovers; the live store is never touched. */
		if (!rc && e->hot)
			rc = cap_copy_companion(c, e, "-journal");
		/* (A connection that opened meanwhile is looked for once all are copied.) */
		if (!rc && e->d->dbmode == DB_WAL_COLD)
			rc = cap_copy_companion(c, e, "-wal");
	}
	if (rc)
		return rc;
	e->dbcopied = 1;
	e->copied = 1;
	e->reused = 0;
	c->st->bytes_copied += w;
	return 0;
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

/* 1 if the live file of copied plain file e is no longer what was copied. inotify does not
 * report every write: not Linux native AIO (io_submit), not a write through another name of a
 * hard link outside the watched directory, not one whose event is still being queued. All of
 * them move ctime, which a stat sees. */
static int cap_stale(const struct cap *c, const struct ent *e)
{
	struct stat st;
	struct cap_stat now;
	/* Another name of a file copied once is as good as that copy for as long as it names the
	 * same file, unchanged since the copy: its own stat is no matter. */
	const struct cap_stat *was = e->alias ? &c->e[e->alias].st : &e->st;
	if (e->alias && !cap_is_copy_of(c, e->alias, was))
		return 1;
	if (fstatat(c->storefd, e->path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 1;
	cap_keep_stat(&now, &st);
	return !cap_same_file_state(&now, was);
}

/* One share of a sweep: entries [from, to) are stat'ed, those that changed marked dirty. */
struct cap_sweep_part {
	struct cap *c;
	size_t from, to, changed, first;
};

static void *cap_sweep_part(void *arg)
{
	struct cap_sweep_part *p = arg;
	for (size_t i = p->from; i < p->to; i++) {
		struct ent *e = &p->c->e[i];
		if (e->kind != K_FILE || !e->copied || e->dirty || !cap_stale(p->c, e))
			continue;
		e->dirty = 1;
		e->dirty_count++;
		if (!p->changed++)
			p->first = i;
	}
	return NULL;
}

/* Stat every copied plain file against its copy; each that changed is marked dirty and, in an
 * attempt before its end, breaks it. Returns how many changed. A large store is swept on two
 * threads: the sweep at the cut is part of how long writers wait. */
#define CAP_SWEEP_SPLIT 4096
static size_t cap_sweep(struct cap *c)
{
	double t0 = ut_now();
	struct cap_sweep_part a = { c, 0, c->n, 0, 0 }, b = a;
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
	if (a.changed || b.changed) {
		c->last_change = ut_now();
		cap_break(c, c->e[a.changed ? a.first : b.first].path);
	}
	c->sweep_s = ut_now() - t0;
	return a.changed + b.changed;
}

/* Catch up and wait until no plain file has changed for the quiet window, as both the events
 * and a sweep of every file's stat tell. No lock is held here: a writer that we held up would
 * stall wherever it is, maybe halfway through a group of files, and look quiet.
 * 0 when quiet, -EAGAIN if that did not happen before `until`. */
static int cap_quiet(struct cap *c, double until)
{
	double window = c->o->quiet_ms / 1000.0;
	for (;;) {
		int rc = cap_catch_up(c, until);
		if (rc)
			return rc;
		double now = ut_now(), idle = now - c->last_change;
		if (idle >= window && !cap_sweep(c))
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
	/* Right after the cut, before the writers move on: what no event reports. */
	cap_sweep(c);
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

/* One attempt at a cut, the files quiet. 0 when the snapshot's databases are staged, -EAGAIN
 * to retry. Nothing here waits for files while databases are held: a writer held up by our
 * lock stalls wherever it is, maybe halfway through a group of files, and would look quiet.
 * If anything moved before the cut, the locks are given back at once. Where there is nothing
 * to lock (WAL databases only, or none), it waits for quiet itself: nobody waits on us. */
static int cap_attempt(struct cap *c, double deadline)
{
	/* The plain files copied so far are hashed before any writer is made to wait on us, not
	 * while the databases are held. */
	int rc = cap_collect_all(c);
	if (!rc)
		rc = cap_db_prepare(c);
	if (rc)
		goto out;
	c->lock_t0 = 0;
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
		if (c->lock_t0 <= 0)
			c->lock_t0 = ut_now(); /* writers wait from here, not while we waited */
		e->d->locked = 1;
		c->holding = 1;
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
		}
		char *now = cap_db_ident(e, e->d->dirfd);
		const struct mf_entry *pe = e->hot ? NULL : cap_prev_same(c, e, now);
		free(now);
		e->dbcopied = 0;
		cap_drop_clone(c, e);
		if (pe && cap_link_prev(c, e, pe, NULL) == 0)
			continue;
		if (e->d->dbmode == DB_ROLLBACK && e->precopied && !e->dirty && !e->hot) {
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
	}
	/* A writer in a transaction now may be waiting for us, stopped wherever it was. */
	if (cap_writer_waiting(c))
		c->watch_after = 1;
	rc = 0;
out:
	if (c->lock_t0 > 0) {
		/* Writers waited as long in an attempt that had to be redone. */
		double held = ut_now() - c->lock_t0;
		if (held > c->st->lock_max_s)
			c->st->lock_max_s = held;
	}
	cap_db_release(c);
	c->holding = 0;
	c->in_attempt = 0;
	return rc;
}

/* After the locks are gone: make each database copy self-contained and digest it. */
static int cap_db_finish(struct cap *c)
{
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		if (e->kind != K_DB || !e->dbcopied)
			continue;
		char path[PATH_MAX + 64], err[256];
		int rc = e->d->cut_clone ? cap_adopt_clone(c, e) : 0;
		if (rc)
			return rc;
		int fd = openat(c->stagefd, e->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		uint8_t hdr[20] = { 0 };
		ssize_t hn = pread(fd, hdr, sizeof hdr, 0);
		rc = hn < 0 ? -errno : 0;
		int recover = e->hot || e->d->dbmode == DB_WAL_COLD;
		/* Emptied or overwritten in place since it was recognised: no database any more,
		 * so its bytes are kept as they are. */
		if (!recover && (hn < (ssize_t)sizeof hdr || !sq_is_header(hdr)))
			e->kind = K_FILE;
		if (!rc && e->kind == K_DB && !recover && (hdr[18] != 1 || hdr[19] != 1)) {
			dd_invalidate(&e->d->blk, 18, 2);
			/* The copy holds every committed page and no WAL content is pending, so turning
			 * it into a rollback-journal database only means rewriting the two format-version
			 * bytes, as journal_mode=DELETE would (without bumping the change counter). */
			static const uint8_t legacy[2] = { 1, 1 };
			rc = pwrite(fd, legacy, 2, 18) == 2 ? 0 : -EIO;
		}
		close(fd);
		if (!rc && recover) {
			e->staged = 0; /* SQLite rewrites it */
			rc = cap_db_stage_path(c, e, "", path, sizeof path);
			if (!rc && (rc = sq_finish_copy(path, err, sizeof err)))
				log_err("cannot make the copy of %s self-contained: %s", cap_where(c, e), err);
		}
		if (rc)
			return rc;
		static const char *sfx[] = { "-journal", "-wal", "-shm" };
		for (unsigned k = 0; k < 3; k++) {
			snprintf(path, sizeof path, "%s%s", e->path, sfx[k]);
			unlinkat(c->stagefd, path, 0);
		}
		fd = openat(c->stagefd, e->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		/* Only the blocks that changed are hashed; the others keep their digests. */
		struct stat st;
		rc = fstat(fd, &st) < 0 ? -errno : 0;
		if (!rc && (!e->staged || e->d->blk.size != (uint64_t)st.st_size ||
			    !e->d->blk.valid))
			rc = dd_reset(&e->d->blk, (uint64_t)st.st_size);
		if (!rc)
			rc = dd_rehash(fd, CAP_DB_THREADS, &e->d->blk);
		if (!rc)
			cap_apply_owner(fd, &e->st);
		close(fd);
		if (rc)
			return rc;
		e->staged = 1;
		e->size = e->d->blk.size;
		if (e->d->cloned)
			c->st->bytes_cloned += e->size;
		dd_digest(&e->d->blk, e->digest);
		e->has_digest = 1;
		free(e->ident);
		e->ident = e->hot ? NULL : e->d->db_ident;
		if (e->hot)
			free(e->d->db_ident);
		e->d->db_ident = NULL;
		c->done_bytes += e->size;
	}
	return 0;
}

/* ---- finishing -------------------------------------------------------------------------- */

/* A copied file whose bytes equal the previous snapshot's keeps the previous file, or at least
 * its mtime, so uploaders skip it. Everything else new gets the cut time as mtime: later than
 * any upload of an earlier snapshot, so neither rsync nor aws s3 sync skips it. */
static int cap_set_times(struct cap *c)
{
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		if ((e->kind != K_FILE && e->kind != K_DB) || !e->copied || e->reused || e->alias)
			continue;
		const struct mf_entry *pe = c->have_prev ? mf_find(&c->prev, e->path) : NULL;
		int keep = 0;
		if (pe && pe->kind == e->kind && pe->has_digest && e->has_digest &&
		    pe->size == e->size && !memcmp(pe->digest, e->digest, 32) &&
		    pe->mode == (e->st.st_mode & 07777) && pe->uid == e->st.st_uid &&
		    pe->gid == e->st.st_gid) {
			uint64_t was = e->written;
			char *ident = e->ident;
			e->ident = NULL;
			int recorded;
			int lr = cap_link_prev(c, e, pe, &recorded);
			if (lr == 0) {
				/* it was copied, then found equal and shared instead */
				c->st->bytes_copied -= was < c->st->bytes_copied ? was : c->st->bytes_copied;
				free(e->ident);
				e->ident = ident;
				continue;
			}
			e->ident = ident;
			/* These are the bytes uploaded before, so the same mtime, when the previous
			 * file is as its manifest says but could not be shared (EMLINK: at its file
			 * system's link limit), or when it is this one's old copy, moved here after it
			 * was checked to be as its manifest says (cap_earlier_copy). */
			keep = recorded || (lr == -ENOENT && e->d && e->d->took_prev);
		}
		int64_t ns;
		if (keep) {
			ns = pe->mtime_ns;
		} else {
			/* The whole second of the cut. S3 keeps LastModified in whole seconds,
			 * truncated: an upload of this snapshot comes after the cut, so its
			 * LastModified is at least this second and the next sync does not send the
			 * file again; an upload of an earlier snapshot came before uploads_before,
			 * which the cut's second is after (cap_settle waits for that), so this mtime
			 * is newer and the file is sent. rsync compares whole seconds too: a new
			 * second also tells it the file changed. */
			int64_t sec = c->cut_ns / 1000000000LL;
			int64_t after = (int64_t)floor(c->uploads_before) + 1;
			if (sec < after)
				sec = after; /* the clock was stepped back (cap_settle) */
			if (pe && pe->mtime_ns / 1000000000LL >= sec)
				sec = pe->mtime_ns / 1000000000LL + 1; /* only after a clock step back */
			if (sec >= INT64_MAX / 1000000000LL) /* a previous mtime past 2262 */
				sec = INT64_MAX / 1000000000LL - 1;
			ns = sec * 1000000000LL;
		}
		e->mtime_ns = ns;
		struct timespec t = ut_ns_ts(ns), ts[2] = { t, t };
		if (utimensat(c->stagefd, e->path, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	return 0;
}

/* Every other name of a file copied once becomes a hard link to that copy, as in the store.
 * Where a link cannot be made (the link limit of the file system), it gets a copy of the copy. */
static int cap_link_aliases(struct cap *c)
{
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		if (e->kind != K_FILE || !e->alias)
			continue;
		const struct ent *p = &c->e[e->alias];
		unlinkat(c->stagefd, e->path, 0);
		if (linkat(c->stagefd, p->path, c->stagefd, e->path, 0) < 0) {
			struct cp_result r;
			int src = openat(c->stagefd, p->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			int rc = src < 0 ? -errno : cap_copy_fd_to_stage(c, src, e->path, 0, &r);
			if (src >= 0)
				close(src);
			struct timespec t = ut_ns_ts(p->mtime_ns), ts[2] = { t, t };
			int fd = rc ? -1 : openat(c->stagefd, e->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0) {
				cap_apply_owner(fd, &e->st);
				if (futimens(fd, ts) < 0)
					rc = -errno;
				close(fd);
			}
			if (rc)
				return rc;
		}
		e->size = p->size;
		e->has_digest = p->has_digest;
		memcpy(e->digest, p->digest, 32);
		e->mtime_ns = p->mtime_ns;
		free(e->ident);
		e->ident = p->ident ? strdup(p->ident) : NULL;
	}
	return 0;
}

static int cap_finish_dirs(struct cap *c)
{
	/* Deepest first, so that read-only modes do not get in the way of their children; the
	 * root last of all, after the manifest is written (cap_finish_root). */
	for (size_t k = c->n; k-- > 1;) {
		struct ent *e = &c->e[k];
		if (e->kind == K_LINK) {
			struct timespec ts[2] = { e->st.st_atim, e->st.st_mtim };
			utimensat(c->stagefd, e->path, ts, AT_SYMLINK_NOFOLLOW);
			continue;
		}
		if (e->kind != K_DIR)
			continue;
		int fd = openat(c->stagefd, e->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		cap_apply_owner(fd, &e->st);
		struct timespec ts[2] = { e->st.st_atim, e->st.st_mtim };
		futimens(fd, ts);
		e->mtime_ns = cap_ns(e->st.st_mtim);
		close(fd);
	}
	return 0;
}

static void cap_finish_root(struct cap *c)
{
	struct ent *e = &c->e[0];
	struct timespec ts[2] = { e->st.st_atim, e->st.st_mtim };
	cap_apply_owner(c->stagefd, &e->st);
	futimens(c->stagefd, ts);
}

/* The manifest lists every entry kept, with the block digests of the database copies that
 * have them: the next --previous or --recycle capture starts from those copies. */
static int cap_write_manifest(struct cap *c)
{
	struct mf out = { .stats = *c->st };
	int rc = 0;
	for (size_t i = 1; !rc && i < c->n; i++) {
		struct ent *e = &c->e[i];
		if (e->kind != K_DIR && e->kind != K_FILE && e->kind != K_DB && e->kind != K_LINK)
			continue;
		struct mf_entry me = {
			.kind = e->kind, .mode = e->st.st_mode & 07777, .uid = e->st.st_uid,
			.gid = e->st.st_gid, .size = e->kind == K_DIR ? 0 : e->size,
			.mtime_ns = e->mtime_ns, .has_digest = e->has_digest, .ident = e->ident,
			.path = e->path,
		};
		memcpy(me.digest, e->digest, 32);
		const struct mf_entry *pe;
		if (e->kind == K_DB && e->staged && e->d->blk.size == e->size &&
		    dd_all_valid(&e->d->blk))
			me.blocks = e->d->blk.d;
		else if (e->kind == K_DB && e->reused && c->have_prev &&
			 (pe = mf_find(&c->prev, e->path)))
			me.blocks = pe->blocks;
		rc = mf_add(&out, &me);
	}
	int fd = rc ? -1 : openat(c->stagefd, CAP_MANIFEST_NAME,
				  O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
	if (!f) {
		rc = rc ? rc : fd < 0 ? -errno : -ENOMEM;
		if (fd >= 0)
			close(fd);
		mf_free(&out);
		return rc;
	}
	rc = mf_write(f, &out);
	mf_free(&out);
	if (fflush(f) == EOF && !rc)
		rc = -errno;
	/* It changes with every snapshot: the cut's second, like every other changed file. */
	struct timespec ts[2] = { { c->st->cut.tv_sec, 0 }, { c->st->cut.tv_sec, 0 } };
	if (!rc && futimens(fileno(f), ts) < 0)
		rc = -errno;
	if (fclose(f) == EOF && !rc)
		rc = -errno;
	return rc;
}

static void cap_make_id(struct cap_stats *st)
{
	struct tm tm;
	char when[32];
	unsigned char rnd[4] = { 0 };
	gmtime_r(&st->cut.tv_sec, &tm);
	strftime(when, sizeof when, "%Y%m%dT%H%M%S", &tm);
	if (getentropy(rnd, sizeof rnd) < 0)
		memcpy(rnd, &st->cut.tv_nsec, sizeof rnd);
	snprintf(st->id, sizeof st->id, "%s.%03ldZ-%02x%02x%02x%02x", when,
		 st->cut.tv_nsec / 1000000, rnd[0], rnd[1], rnd[2], rnd[3]);
}

/* ---- the whole capture ------------------------------------------------------------------ */

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

/* After the release, when a writer may have been waiting for us: 0 if the cut stands, -EAGAIN
 * if a plain file was written within the after window (a writer we held up went on with a
 * group of files it had begun before the cut, or one began right after it: either way the
 * cut is redone rather than trusted). */
static int cap_after(struct cap *c)
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
static int cap_check_segments(struct cap *c)
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

static int cap_settle(struct cap *c)
{
	/* The first pass copies the whole store; the settle timeout starts after it. */
	int first = cap_catch_up(c, 0);
	if (first && first != -EAGAIN)
		return first;
	/* The cut should fall in a later whole second than any upload of an earlier snapshot
	 * (see cap_set_times); keep up with the store while that second comes. It is at most a
	 * second away unless the clock was stepped back: then it is not waited for, and
	 * cap_set_times dates the changed files past uploads_before instead. */
	double barrier = floor(c->uploads_before) + 1, stop = ut_now() + 1.0;
	for (;;) {
		struct timespec now = ut_realtime();
		double left = barrier - ((double)now.tv_sec + now.tv_nsec / 1e9);
		if (stop - ut_now() < left)
			left = stop - ut_now();
		if (left <= 0)
			break;
		int rc = cap_quiet(c, ut_now() + left);
		if (rc && rc != -EAGAIN)
			return rc;
		if (rc == 0) {
			/* quiet early: wait out the rest, still reading events */
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
		if (ut_now() > deadline)
			goto unsettled;
	}
unsettled:
	log_err("no consistent cut within %.0f s (databases held %.0f ms at most); %s",
		c->o->settle_timeout, c->st->lock_max_s * 1000, cap_worst(c));
	return -EAGAIN;
}

/* 1 if the directory dirfd is the store or lies below it. */
static int cap_inside_store(const struct cap *c, int dirfd)
{
	struct stat sst, pst;
	int inside = 0;
	if (fstat(c->storefd, &sst) < 0)
		return 0;
	int fd = dup(dirfd);
	while (fd >= 0 && fstat(fd, &pst) == 0) {
		if (ut_same_file(&pst, &sst)) {
			inside = 1;
			break;
		}
		int up = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct stat ust;
		if (up < 0 || (fstat(up, &ust) == 0 && ut_same_file(&ust, &pst))) {
			if (up >= 0)
				close(up);
			break;
		}
		close(fd);
		fd = up;
	}
	if (fd >= 0)
		close(fd);
	return inside;
}

/* Remove what captures of the same DEST that were killed (SIGKILL: no cleanup ran) left beside
 * it: ".BASE.stillfs-tmp.PID" and ".BASE.stillfs-work.PID" of a process that is gone. */
static void cap_remove_leftovers(int parentfd, const char *base)
{
	char pfx[2][NAME_MAX + 1];
	snprintf(pfx[0], sizeof pfx[0], ".%.200s.stillfs-tmp.", base);
	snprintf(pfx[1], sizeof pfx[1], ".%.200s.stillfs-work.", base);
	int fd = dup(parentfd);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		for (unsigned k = 0; k < 2; k++) {
			size_t n = strlen(pfx[k]);
			char *end;
			if (strncmp(de->d_name, pfx[k], n) || !de->d_name[n])
				continue;
			long pid = strtol(de->d_name + n, &end, 10);
			if (*end || pid <= 0 || pid == getpid() ||
			    kill((pid_t)pid, 0) == 0 || errno != ESRCH)
				continue;
			log_info("removing %s, left by a capture that was killed", de->d_name);
			cp_rmtree(parentfd, de->d_name);
		}
	}
	closedir(d);
}

static int cap_prepare_dest(struct cap *c)
{
	char *dup1 = strdup(c->o->dest), *dup2 = strdup(c->o->dest);
	int rc = 0;
	if (!dup1 || !dup2) {
		rc = -ENOMEM;
		goto out;
	}
	/* The snapshot is built beside DEST and renamed onto it, so it appears whole or not. */
	char *base = basename(dup1), *dir = dirname(dup2);
	if (!base[0] || !strcmp(base, "/") || !strcmp(base, ".") || !strcmp(base, "..")) {
		log_err("%s: not a usable snapshot name", c->o->dest);
		rc = -EINVAL;
		goto out;
	}
	c->parentfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->parentfd < 0) {
		rc = -errno;
		log_err("%s: %s", dir, strerror(errno));
		goto out;
	}
	struct stat st;
	if (fstatat(c->parentfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		log_err("%s already exists", c->o->dest);
		rc = -EEXIST;
		goto out;
	}
	/* Refuse a destination inside the store: the snapshot would contain itself. */
	if (cap_inside_store(c, c->parentfd)) {
		log_err("%s is inside the store %s", c->o->dest, c->o->store);
		rc = -EINVAL;
		goto out;
	}
	if (strlen(base) > NAME_MAX) {
		log_err("%s: name too long", c->o->dest);
		rc = -ENAMETOOLONG;
		goto out;
	}
	snprintf(c->dest_name, sizeof c->dest_name, "%s", base);
	snprintf(c->stage_name, sizeof c->stage_name, ".%.200s.stillfs-tmp.%d", base, (int)getpid());
	snprintf(c->work_name, sizeof c->work_name, ".%.200s.stillfs-work.%d", base, (int)getpid());
	cp_rmtree(c->parentfd, c->stage_name);
	cp_rmtree(c->parentfd, c->work_name);
	cap_remove_leftovers(c->parentfd, base);
	if (mkdirat(c->parentfd, c->stage_name, 0700) < 0 ||
	    mkdirat(c->parentfd, c->work_name, 0700) < 0) {
		rc = -errno;
		log_err("cannot create the snapshot beside %s: %s", c->o->dest, strerror(errno));
		goto out;
	}
	c->stagefd = openat(c->parentfd, c->stage_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	c->workfd = openat(c->parentfd, c->work_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->stagefd < 0 || c->workfd < 0)
		rc = -errno;
out:
	free(dup1);
	free(dup2);
	return rc;
}

static void cap_summary(const struct cap *c)
{
	char a[32], b[32];
	ut_format_bytes(c->st->bytes_copied, a, sizeof a);
	ut_format_bytes(c->st->bytes_linked, b, sizeof b);
	char d[32];
	ut_format_bytes(c->st->bytes_cloned, d, sizeof d);
	log_info("snapshot %s: %" PRIu64 " files, %s copied, %s shared, %s cloned, %.2f s, "
		 "%u retries, longest lock %.1f ms%s", c->o->dest, c->st->files, a, b, d,
		 c->st->duration_s,
		 c->st->retries, c->st->lock_max_s * 1000,
		 c->st->recycled ? ", database copies recycled" : "");
}

/* The manifest of an earlier snapshot named in the options, opened as fd (-1: errno says
 * why not). 1 if m holds it; else 0, and a warning saying why and what follows. */
static int cap_load_earlier(const char *dir, int fd, struct mf *m, const char *otherwise)
{
	int rc = fd < 0 ? -errno : mf_load(fd, CAP_MANIFEST_NAME, m);
	if (rc && fd < 0)
		log_warn("%s: %s; %s", dir, strerror(-rc), otherwise);
	else if (rc)
		log_warn("%s: not a readable snapshot (%s: %s); %s", dir, CAP_MANIFEST_NAME, m->why,
			 otherwise);
	return !rc;
}

void cap_opts_init(struct cap_opts *o)
{
	memset(o, 0, sizeof *o);
	o->settle_timeout = 30;
	o->quiet_ms = 400;
}

int cap_snapshot(const struct cap_opts *o, struct cap_stats *st)
{
	struct cap c = { .o = o, .st = st, .storefd = -1, .parentfd = -1, .stagefd = -1,
			 .workfd = -1, .prevfd = -1, .recyfd = -1 };
	int rc;
	size_t root;
	double t0 = ut_now();

	unsigned errors_before = log_error_count();
	struct timespec start = ut_realtime();
	c.uploads_before = o->uploads_before > 0 ? o->uploads_before
						 : (double)start.tv_sec + start.tv_nsec / 1e9;
	/* An upload lists the snapshot it sends. If nobody listed the earlier snapshot since it
	 * was published, no upload read it: uploads came before that (ctime), and when that was
	 * in an earlier second the cut need not wait for the next one. */
	double published;
	const char *earlier = o->recycle ? o->recycle : o->previous;
	if (o->uploads_before <= 0 && earlier && ut_dir_unlisted(earlier, &published) &&
	    published < c.uploads_before)
		c.uploads_before = published;
	memset(st, 0, sizeof *st);
	cap_stop = 0;
	c.storefd = open(o->store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c.storefd < 0) {
		rc = -errno;
		log_err("%s: %s", o->store, errno == ENOTDIR ? "not a directory" : strerror(errno));
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
		/* Files are moved out of it: never out of the live store. */
		c.recyfd = open(o->recycle, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (c.recyfd >= 0 && cap_inside_store(&c, c.recyfd)) {
			log_err("%s is inside the store %s", o->recycle, o->store);
			rc = -EINVAL;
			goto out;
		}
		c.have_recy = cap_load_earlier(o->recycle, c.recyfd, &c.recy, "nothing recycled");
		struct stat a, b;
		c.recy_is_prev = c.have_prev && c.have_recy && fstat(c.prevfd, &a) == 0 &&
				 fstat(c.recyfd, &b) == 0 && ut_same_file(&a, &b);
	}
	rc = wt_open(&c.w, c.workfd);
	if (rc) {
		log_err("cannot watch the store: %s", strerror(-rc));
		goto out;
	}
	rc = cap_add(&c, 0, "", K_DIR, &root);
	if (rc)
		goto out;
	c.e[root].rescan = 1;
	rc = cap_rescan(&c);
	if (rc)
		goto out;
	/* Writes made before the watches began were not seen as events, but they left their
	 * ctime. Only an old one is trusted to say the store has been still: timestamps may be
	 * whole seconds (small ext4 inodes, some network file systems) and a file server's clock
	 * may lag ours, either of which makes a write a moment ago look older than it is. Else
	 * the quiet window starts now. */
	int64_t since = cap_ns(ut_realtime()) - c.newest_ctime;
	c.last_change = ut_now();
	if (since > (int64_t)(o->quiet_ms + CAP_CTIME_DOUBT_MS) * 1000000)
		c.last_change -= (double)since / 1e9;
	for (size_t i = 0; i < c.n; i++)
		if (c.e[i].kind == K_FILE)
			c.total_bytes += (uint64_t)c.e[i].st.st_size;
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
	st->cut.tv_sec = c.cut_ns / 1000000000LL;
	st->cut.tv_nsec = c.cut_ns % 1000000000LL;
	cap_make_id(st);
	rc = cap_collect_all(&c); /* copies made during the last attempt */
	if (!rc)
		rc = cap_db_finish(&c);
	if (!rc)
		rc = cap_set_times(&c);
	if (!rc)
		rc = cap_link_aliases(&c);
	if (!rc)
		rc = cap_finish_dirs(&c);
	if (rc) {
		log_err("cannot finish the snapshot: %s", strerror(-rc));
		goto out;
	}
	for (size_t i = 0; i < c.n; i++)
		if (c.e[i].kind == K_FILE || c.e[i].kind == K_DB)
			st->files++;
	st->duration_s = ut_now() - t0;
	rc = cap_write_manifest(&c);
	if (!rc)
		cap_finish_root(&c);
	if (!rc && o->sync && syncfs(c.stagefd) < 0)
		rc = -errno;
	if (rc) {
		log_err("cannot write the manifest: %s", strerror(-rc));
		goto out;
	}
	if (renameat2(c.parentfd, c.stage_name, c.parentfd, c.dest_name, RENAME_NOREPLACE) < 0) {
		rc = -errno;
		log_err("cannot publish %s: %s", o->dest, strerror(errno));
		goto out;
	}
	c.stage_name[0] = 0;
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
	if (c.parentfd >= 0) {
		if (c.stage_name[0])
			cp_rmtree(c.parentfd, c.stage_name);
		if (c.work_name[0])
			cp_rmtree(c.parentfd, c.work_name);
	}
	wt_close(c.w);
	for (size_t i = 0; i < c.n; i++) {
		free(c.e[i].path);
		free(c.e[i].ident);
		if (c.e[i].d) {
			free(c.e[i].d->db_ident);
			dd_free(&c.e[i].d->blk);
			free(c.e[i].d);
		}
	}
	free(c.e);
	ut_map_free(&c.index);
	ut_map_free(&c.inodes);
	for (size_t i = 0; i < c.nikeys; i++)
		free(c.ikeys[i]);
	free(c.ikeys);
	if (c.have_prev)
		mf_free(&c.prev);
	if (c.have_recy)
		mf_free(&c.recy);
	int fds[] = { c.storefd, c.parentfd, c.stagefd, c.workfd, c.prevfd, c.recyfd };
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
