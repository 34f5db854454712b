/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Capture, the databases: copied early without a lock (cap_precopy_db), from an earlier
 * snapshot's copy where one can be taken over or compared with (cap_recycle, cap_db_sync); opened
 * and classified before the cut (cap_db_prepare); copied under the cut where they changed
 * (cap_db_copy); made self-contained and digested after the release (cap_db_finish). The cut
 * itself, which locks and pins them, is in cap_cut.c. */
#include "cap_int.h"
#include "clone.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define CAP_DB_THREADS ut_cpu_count() /* compare and hash databases on every CPU we have */
#define CAP_RESYNC_PAGES 2048  /* pages a pass may leave to the locked pass (8 MiB) */
#define CAP_PREMAP_QUIET 1.0   /* s: a database unchanged this long is likely not compared */

static int cap_wal_present(int dirfd, const char *name)
{
	char wal[NAME_MAX + 16];
	struct stat st;
	snprintf(wal, sizeof wal, "%s-wal", name);
	return fstatat(dirfd, wal, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_size > 0;
}

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
	int fd = cap_earlier_copy(c->recyfd, c->recy_is_prev ? &c->prev : &c->recy, e, O_RDWR,
				  &e->d->blk, &ps);
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
	/* Whoever could open the copy where it was (its owner, anyone its mode let in) may
	 * hold it open still, and would read what is written into it now, another file's
	 * bytes perhaps (the name may have passed to another owner). Made ours alone first, so
	 * that nobody else can open it again, it is taken only if nobody has it open (a write
	 * lease is granted only then, mappings included) and it has no other name. */
	if (fchown(fd, geteuid(), getegid()) < 0 || fchmod(fd, 0600) < 0 ||
	    fcntl(fd, F_SETLEASE, F_WRLCK) < 0 || fstat(fd, &ns) < 0 || ns.st_nlink != 1) {
		rc = -EBUSY;
		unlinkat(to, e->name, 0);
		goto out;
	}
	(void)fcntl(fd, F_SETLEASE, F_UNLCK);
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

/* The work-dir name of database e's clone. */
static void cap_clone_name(const struct cap *c, const struct ent *e, char *buf, size_t len)
{
	snprintf(buf, len, "clone.%zu", (size_t)(e - c->e));
}

void cap_drop_clone(struct cap *c, struct ent *e)
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
		rc = c->holding ? dd_sync_premapped(src, dst, CAP_DB_THREADS, &e->d->blk,
						    &e->d->premap, &r)
				: dd_sync(src, dst, -1, CAP_DB_THREADS, &e->d->blk, &r);
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
	if (c->holding) {
		c->lock_cpu_s += r.cpu_s;
		c->lock_faults += r.faults;
	}
	*written = r.written;
	e->d->cloned = r.cloned && base < 0;
	e->d->synced_pages = r.pages;
	return rc;
}

static void cap_sig_of(const struct stat *st, struct cap_sig *s)
{
	*s = (struct cap_sig){ st->st_ino, st->st_size, cap_ns(st->st_mtim), cap_ns(st->st_ctim) };
}

/* SQLite's file change counter (header bytes 24-27), which every commit in rollback mode
 * increments, of the live file fd and of e's staged copy: 1 if they are the same. */
static int cap_same_counter(struct cap *c, const struct ent *e, int fd)
{
	uint8_t live[4], staged[4];
	int sfd = openat(c->stagefd, e->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd < 0)
		return 0;
	int same = pread(sfd, staged, 4, 24) == 4 && pread(fd, live, 4, 24) == 4 &&
		   !memcmp(live, staged, 4);
	close(sfd);
	return same;
}

/* Under the lock, before database e's early copy stands for the cut: 1 if the live file is
 * still what that copy read. No event since the copy is not proof enough: a write through a
 * name outside the store (a second link, since removed), through a file handle the kernel
 * found no path for (a root daemon's reopen, an NFS server) or through AIO raises none in
 * the store. Any of them moves the file's ctime after the stat taken before the copy read;
 * a commit, on a file system whose clock is too coarse to tell, also bumps the change counter
 * the copy read. */
int cap_precopy_current(struct cap *c, struct ent *e)
{
	struct stat st;
	struct cap_sig now;
	if (cap_stat_fresh(e->d->dbfd, "", &st) < 0)
		return 0;
	cap_sig_of(&st, &now);
	return !memcmp(&now, &e->d->pre_sig, sizeof now) && cap_same_counter(c, e, e->d->dbfd);
}

/* A database held by our SHARED lock is written by no SQLite connection in rollback mode
 * (one in WAL mode is cap_held_disturbed's), so a copy made under it is the file as of the
 * cut. A writer that ignores the lock (a program rewriting the file in place, SQLite's
 * nolock) may still write it while we copy: cap_held_mark notes the file as the lock was
 * taken, cap_held_moved tells, once every copy is made, whether it moved since. */
void cap_held_mark(struct ent *e)
{
	struct stat st;
	if (cap_stat_fresh(e->d->dbfd, "", &st) == 0)
		cap_sig_of(&st, &e->d->held_sig);
	else
		memset(&e->d->held_sig, 0, sizeof e->d->held_sig);
}

int cap_held_moved(struct ent *e)
{
	struct stat st;
	struct cap_sig now;
	if (cap_stat_fresh(e->d->dbfd, "", &st) < 0)
		return 1;
	cap_sig_of(&st, &now);
	return memcmp(&now, &e->d->held_sig, sizeof now) != 0;
}

/* A rollback-mode database is copied early, without any lock, like a plain file. Every write
 * to it queues an event before its writer can release the lock we take at the cut, so if none
 * came since this copy began, the copy is what the cut would have copied, and the lock is
 * held only for the databases that did change; for those, only the pages that differ from
 * this copy are rewritten under the lock. */
int cap_precopy_db(struct cap *c, struct ent *e)
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
	if (src < 0 || cap_stat_fresh(src, "", &st) < 0) {
		c->e[e->parent].rescan = 1;
		goto out;
	}
	char *ident = cap_db_ident(e, pfd);
	const struct mf_entry *pe = cap_prev_same(c, e, ident);
	free(ident);
	if (pe)
		goto out; /* unchanged since the previous snapshot: shared at the cut */
	cap_sig_of(&st, &e->d->pre_sig); /* before the copy reads: see cap_precopy_current */
	e->d->synced_at = ut_now();
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

void cap_db_release(struct cap *c)
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
	/* Writers go on now: unmapping takes about as long as mapping in did. */
	for (size_t i = 0; i < c->n; i++)
		if (c->e[i].d)
			dd_premap_drop(&c->e[i].d->premap);
}

char *cap_db_ident(struct ent *e, int dirfd)
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
		if (cap_stat_fresh(e->d->dirfd, name, &st) == 0)
			sig[k] = (struct cap_sig){ st.st_ino, st.st_size, cap_ns(st.st_mtim),
						   cap_ns(st.st_ctim) };
	}
}

/* A database held by its file lock (not DB_WAL), which a connection in WAL mode does not wait
 * for: 1 if such a connection came (and maybe went) since it was classified. Its -wal's events
 * and its -wal and -shm as found are both asked: either alone can miss it, as a file deleted
 * and made again may come back with the same inode, size and times. */
int cap_held_disturbed(struct ent *e)
{
	struct cap_sig now[2];
	if (e->d->wal_seen || cap_shm_in_use(e->d->dirfd, e->name))
		return 1;
	cap_cold_sig(e, now);
	return memcmp(now, e->d->cold_sig, sizeof now) != 0;
}

int cap_db_unreadable(struct cap *c, struct ent *e)
{
	if (dd_zerofill_hit())
		return -EAGAIN; /* its -shm or file was truncated under us: cap_attempt retries */
	log_err("cannot read database %s: %s", cap_where(c, e), sqlite3_errmsg(e->d->db));
	return -EIO;
}

/* Open what each database needs, before any lock is taken, to keep lock holds short. */
int cap_db_prepare(struct cap *c)
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

/* Before the locks: map in the live file and the copy it is to be compared with (the staged
 * one, else the recycled snapshot's) of each rollback-mode database to be compared under its
 * lock (cap_db_copy), so that the compare takes no page fault while writers wait. Not one
 * whose early copy is still current: that one is compared only if written in the moment
 * between here and the lock. Nor one that has been quiet for a while and whose previous
 * snapshot's copy is still current (one written just now is compared, its writer will not
 * stop at once). Where the clone is the copy, nothing is
 * read under the lock (probed here: no copy may have tried a clone yet in this capture). Only
 * an optimisation: the compare maps what was not mapped here. */
/* 1 if database fd's copy may be a clone (cap_clone_db); 0 if it cannot, found out once on a
 * file nobody sees (c->no_clone is set then). */
static int cap_may_clone(struct cap *c, int fd)
{
	if (c->no_clone || c->clone_ok)
		return !c->no_clone;
	int t = openat(c->workfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (t < 0)
		return 1; /* not known */
	int rc = ioctl(t, FICLONE, fd) == 0 ? 0 : -errno;
	close(t);
	if (cl_unsupported(rc))
		c->no_clone = 1;
	else if (rc == 0)
		c->clone_ok = 1;
	return !c->no_clone;
}

void cap_db_premap(struct cap *c)
{
	int64_t now = cap_ns(ut_realtime());
	/* What is mapped in cannot be reclaimed without unmapping it: a quarter of the memory
	 * at most, both files of each database. */
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t left = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize / 4 : 0;
	for (size_t i = 0; i < c->n; i++) {
		struct ent *e = &c->e[i];
		struct stat st;
		if (e->kind != K_DB || e->d->dbmode != DB_ROLLBACK || e->d->dbfd < 0 ||
		    fstat(e->d->dbfd, &st) < 0 || 2 * (uint64_t)st.st_size > left)
			continue;
		if (e->precopied && !e->dirty && cap_precopy_current(c, e))
			continue;
		if (now - cap_ns(st.st_ctim) > (int64_t)(CAP_PREMAP_QUIET * 1e9)) {
			char *ident = cap_db_ident(e, e->d->dirfd);
			const struct mf_entry *pe = cap_prev_same(c, e, ident);
			free(ident);
			if (pe)
				continue;
		}
		if (cap_may_clone(c, e->d->dbfd))
			continue;
		/* Not staged: the recycled snapshot's copy, which cap_recycle would move into
		 * the staging tree (the same file). */
		int dst = -1;
		if (e->staged) {
			dst = openat(c->stagefd, e->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		} else if (c->have_recy) {
			struct dd_blocks b;
			struct stat ps;
			dd_init(&b);
			dst = cap_earlier_copy(c->recyfd, &c->recy, e, O_RDONLY, &b, &ps);
			dd_free(&b);
		}
		if (dst < 0)
			continue;
		if (dd_premap(e->d->dbfd, dst, &e->d->premap) == 0)
			left -= 2 * (uint64_t)st.st_size;
		close(dst);
	}
}

static int cap_db_stage_path(struct cap *c, const struct ent *e, const char *suffix, char *buf,
			     size_t len)
{
	int n = snprintf(buf, len, "/proc/self/fd/%d/%s%s", c->stagefd, e->path, suffix);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Copy the database's NAME<suffix> companion beside its private copy. */
static int cap_copy_companion(struct cap *c, struct ent *e, const char *suffix)
{
	char name[NAME_MAX + 16], rel[PATH_MAX + 16];
	struct cp_result r;
	snprintf(name, sizeof name, "%s%s", e->name, suffix);
	snprintf(rel, sizeof rel, "%s%s", e->path, suffix);
	int fd = openat(e->d->dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	int rc = fd < 0 ? -errno : 0;
	struct stat dst, cst;
	if (!rc && (fstat(e->d->dbfd, &dst) < 0 || fstat(fd, &cst) < 0))
		rc = -errno;
	if (!rc)
		cst.st_mode = cap_acl_mode(fd, cst.st_mode); /* an ACL's denials count */
	if (!rc && !sq_companion_ok(&dst, &cst)) {
		log_err("%s: its %s is not readable by everyone who may read the database: not "
			"copied", cap_where(c, e), suffix);
		rc = -EACCES;
	}
	if (!rc)
		rc = cap_copy_fd_to_stage(c, fd, rel, 0, &r);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* 1 if e's owner may search directory fd (its mode narrowed by its ACL; the owner's
 * supplementary groups are not known here, only the database's group). */
static int cap_owner_may_search(const struct ent *e, int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode))
		return 0;
	if (e->st.st_uid == 0)
		return 1;
	mode_t m = cap_acl_mode(fd, st.st_mode);
	if (st.st_uid == e->st.st_uid)
		return (m & S_IXUSR) != 0;
	if (st.st_gid == e->st.st_gid)
		return (m & S_IXGRP) != 0;
	return (m & S_IXOTH) != 0;
}

/* 1 if the super-journal `name` (its path as the writer saw it) exists, 0 if it does not, -1
 * if that cannot be told from here (its directory is nowhere we can see). SQLite makes it
 * beside the transaction's main database, which the writer may have named by another path
 * (through the mount, in another mount namespace): it is looked for beside e first. */
static int cap_super_exists(const struct ent *e, const char *name)
{
	struct stat st;
	char dir[PATH_MAX + 1];
	const char *slash = strrchr(name, '/');
	if (fstatat(e->d->dirfd, slash ? slash + 1 : name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	if (name[0] != '/' || strlen(name) >= sizeof dir)
		return -1;
	/* The name is the journal's content, which the database's owner writes: looked up as
	 * that owner could, or the answer (seen in the copy) would tell them whether a path
	 * exists below directories they may not search. */
	strcpy(dir, name);
	int rc = -1, dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	char *save = NULL, *comp = strtok_r(dir, "/", &save);
	while (dfd >= 0 && comp && cap_owner_may_search(e, dfd)) {
		char *next = strtok_r(NULL, "/", &save);
		if (!next) {
			rc = fstatat(dfd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 ? 1 :
			     errno == ENOENT ? 0 : -1;
			break;
		}
		int sub = openat(dfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(dfd);
		dfd = sub;
		comp = next;
	}
	if (dfd >= 0)
		close(dfd);
	return rc;
}

/* Under the cut, database e's hot journal just staged beside its copy. A transaction over
 * several databases names its super-journal at the journal's end, and the deletion of that
 * file is the transaction's commit point: SQLite rolls such a journal back only while the
 * super-journal exists. The copy is recovered after the release, when an application may
 * have recovered the store and deleted it (and SQLite, recovering, may delete one itself): so
 * it is settled here, as of the cut. Not committed: the name is taken off our copy of the
 * journal (its magic zeroed), which SQLite then rolls back alone. Committed: our copy of the
 * journal goes, it is a leftover. 0 or -errno. */
static int cap_settle_super(struct cap *c, struct ent *e)
{
	static const uint8_t magic[8] = { 0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7 };
	char rel[PATH_MAX + 16], name[PATH_MAX + 1];
	uint8_t tail[16];
	struct stat st;
	snprintf(rel, sizeof rel, "%s-journal", e->path);
	int fd = openat(c->stagefd, rel, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = 0;
	/* SQLite's readSuperJournal: NAME, its length and checksum (32-bit big-endian), magic. */
	if (fstat(fd, &st) < 0 || st.st_size < 16 || pread(fd, tail, 16, st.st_size - 16) != 16 ||
	    memcmp(tail + 8, magic, 8))
		goto out;
	uint32_t len = (uint32_t)tail[0] << 24 | (uint32_t)tail[1] << 16 | tail[2] << 8 | tail[3];
	uint32_t sum = (uint32_t)tail[4] << 24 | (uint32_t)tail[5] << 16 | tail[6] << 8 | tail[7];
	if (len == 0 || len > PATH_MAX || (off_t)len > st.st_size - 16 ||
	    pread(fd, name, len, st.st_size - 16 - (off_t)len) != (ssize_t)len)
		goto out;
	for (uint32_t u = 0; u < len; u++)
		sum -= (uint32_t)(int)(char)name[u]; /* as SQLite sums them: plain char */
	name[len] = 0;
	if (sum || !name[0])
		goto out;
	int exists = cap_super_exists(e, name);
	if (exists > 0) {
		static const uint8_t none[8];
		rc = pwrite(fd, none, sizeof none, st.st_size - 8) == (ssize_t)sizeof none ? 0 : -EIO;
	} else if (exists == 0) {
		rc = unlinkat(c->stagefd, rel, 0) < 0 ? -errno : 0;
	} else {
		/* Taken as gone (committed), as SQLite does with one it cannot see: SQLite's own
		 * look, as root, would answer what the owner may not ask. */
		log_warn("%s: its hot journal belongs to a transaction over several databases, whose "
			 "super-journal %s cannot be looked for here: taken as committed",
			 cap_where(c, e), name);
		rc = unlinkat(c->stagefd, rel, 0) < 0 ? -errno : 0;
	}
out:
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
int cap_db_copy(struct cap *c, struct ent *e)
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
		if (rc == -EAGAIN) {
			e->dirty = 1; /* it shrank while read (sq_backup): copied again at the next try */
			return -EAGAIN;
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
		if (!rc && e->hot)
			rc = cap_settle_super(c, e);
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

/* After the locks are gone: make each database copy self-contained and digest it. */
int cap_db_finish(struct cap *c)
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
		/* A clone shares the store's blocks but not its page cache: what hashing it read in
		 * would double the store's cached database in memory, and its eviction, when the
		 * next capture recycles this copy, would hold that capture up (about 0.1 s per
		 * 600 MiB). The next capture reads extent maps, not these pages. */
		if (!rc && e->d->cloned)
			(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
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
		cap_clear_ident(e);
		e->d->ident = e->hot ? NULL : e->d->db_ident;
		if (e->hot)
			free(e->d->db_ident);
		e->d->db_ident = NULL;
		c->done_bytes += e->size;
	}
	return 0;
}
