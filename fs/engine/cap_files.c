/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Capture, steps 1-2 for plain files: copy each dirty file (cap_copy_dirty, cap_copy_file), or
 * share the previous snapshot's copy when it is proven the same (cap_link_prev), and collect the
 * digests the hashing threads compute meanwhile (cap_collect). A file found to be a database is
 * handed to cap_db.c. */
#include "cap_int.h"
#include "clone.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

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
int cap_collect(struct cap *c, struct ent *e)
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

int cap_collect_all(struct cap *c)
{
	for (size_t i = 0; i < c->n; i++) {
		int rc = cap_collect(c, &c->e[i]);
		if (rc)
			return rc;
	}
	return 0;
}

void cap_apply_owner(int fd, const struct cap_stat *s)
{
	/* Without privilege ownership cannot be kept; that is what cp -a does too. */
	if (fchown(fd, s->st_uid, s->st_gid) < 0 && errno != EPERM)
		log_warn("cannot set owner: %s", strerror(errno));
	fchmod(fd, s->st_mode & 07777);
}

/* 1 if a snapshot's file s is still what its manifest entry pe records: its content is then
 * what pe's digest (and block digests) describe. */
int cap_as_recorded(const struct stat *s, const struct mf_entry *pe)
{
	return S_ISREG(s->st_mode) && (uint64_t)s->st_size == pe->size &&
	       cap_ns(s->st_mtim) == pe->mtime_ns;
}

#define CAP_LINK_TMP "link" /* in the work directory, beside the watch's markers */

/* Share the previous snapshot's copy of e when it is proven to hold the same bytes. If
 * `recorded`, *recorded tells whether the previous copy was found as its manifest says, even
 * when sharing it then failed. */
int cap_redate(const struct cap *c, const struct mf_entry *pe)
{
	int64_t m = pe->mtime_ns / 1000000000LL;
	return c->o->redate_until > c->o->redate_after && m > c->o->redate_after &&
	       m <= c->o->redate_until;
}

int cap_link_prev(struct cap *c, struct ent *e, const struct mf_entry *pe, int *recorded)
{
	char proc[64];
	struct stat ps;
	if (recorded)
		*recorded = 0;
	/* Its mtime may not be newer than an upload of other bytes: this copy gets a new one. */
	if (cap_redate(c, pe))
		return -ESTALE;
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

const struct mf_entry *cap_prev_same(const struct cap *c, const struct ent *e,
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
	/* As cap_apply_owner: without privilege ownership cannot be kept. */
	if (fchownat(c->stagefd, e->path, e->st.st_uid, e->st.st_gid, AT_SYMLINK_NOFOLLOW) < 0 &&
	    errno != EPERM)
		log_warn("cannot set owner: %s", strerror(errno));
	e->size = (uint64_t)n;
	sha256(target, (size_t)n, e->digest);
	e->has_digest = 1;
	e->mtime_ns = cap_ns(e->st.st_mtim);
	e->copied = 1;
	return 0;
}

/* A store through a shared mapping raises no event, and moves the file's times only when it
 * makes a clean page dirty: to a page already dirty, nothing tells it. Writing the file's dirty
 * pages back makes every page clean (and write-protected) again, so that the next store through
 * any mapping moves ctime, which cap_sweep sees. e->st, just taken, is taken again after the
 * write-back: if it moved, a store came in between (its page may be left writable), and the
 * file is marked dirty to be copied again. 0, or -errno. */
static int cap_unmap_writes(struct cap *c, struct ent *e, int src)
{
	struct cap_stat was = e->st;
	/* Starting the write-back is enough: a page is write-protected when its write-back
	 * starts, not when it ends, and one already under way is waited for first (it may have
	 * been dirtied again since). Where it fails, as on a file system without write-back
	 * (tmpfs), nothing is lost but this. The pages of an overlayfs file, or of a FUSE file
	 * with passthrough, are those of the file below it, which sync_file_range does not reach
	 * (it writes back the mapping of the file it is given): there, fdatasync, which overlayfs
	 * passes down, and a FUSE daemon does on its file. */
	struct statfs sf;
	if (fstatfs(src, &sf) == 0 && ((unsigned long)sf.f_type == OVERLAYFS_SUPER_MAGIC ||
					(unsigned long)sf.f_type == FUSE_SUPER_MAGIC))
		(void)fdatasync(src);
	else
		(void)sync_file_range(src, 0, 0,
				      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE);
	int rc = cap_fstat(src, &e->st);
	if (rc)
		return rc;
	if (!cap_same_file_state(&was, &e->st)) {
		e->dirty = 1;
		e->dirty_count++;
		c->last_change = ut_now();
	}
	return 0;
}

/* The descriptor whose extent map stands for e's live file: src itself (when it is not -1),
 * or one opened anew below the store by e's path (where cap_opts.extents is given, below it),
 * if it is still the file e was copied from. -1 if none; *own: the caller closes it. */
static int cap_map_fd(const struct cap *c, const struct ent *e, int src, int *own)
{
	struct stat st;
	*own = 0;
	if (src >= 0 && c->extfd < 0)
		return src;
	int fd = cap_openat2(c->extfd >= 0 ? c->extfd : c->storefd, e->path,
			     O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_ino != e->st.st_ino) {
		close(fd);
		return -1;
	}
	*own = 1;
	return fd;
}

/* A file's bytes can be replaced without a write: XFS_IOC_SWAPEXT on XFS and
 * EXT4_IOC_MOVE_EXT on ext4 (the defragmenters' calls, which any user who may write two files
 * may make) give one file the other's extents, and move neither file's mtime nor ctime, nor
 * raise an event. So e->emap keeps the fingerprint of the live file's extent map (cl_map_sig)
 * as it was before the copy, its write-back (begun by cap_unmap_writes) waited for: until that
 * ends, the extents it allocates are unwritten. A change of it is a change of the file: in
 * the sweep after the cut (cap_stale: the cut is redone) and in the identity that lets a
 * later snapshot share this copy (cap_prev_same). Where the file system has no extent map
 * (tmpfs, network file systems, FUSE), e->emap is 0. Not on btrfs, which has no such call,
 * and whose FIEMAP walks every extent's back-references. What this misses: cl_map_sig. */
static void cap_map_note(const struct cap *c, struct ent *e, int src)
{
	struct statfs sf;
	int own, fd = cap_map_fd(c, e, src, &own);
	e->emap = 0;
	if (fd >= 0 && fstatfs(fd, &sf) == 0 && (unsigned long)sf.f_type != BTRFS_SUPER_MAGIC)
		(void)cl_map_sig(fd, (uint64_t)e->st.st_size, 1, &e->emap);
	if (own)
		close(fd);
}

int cap_map_moved(const struct cap *c, const struct ent *e)
{
	uint64_t now;
	int own, fd;
	if (!e->emap)
		return 0;
	fd = cap_map_fd(c, e, -1, &own);
	int moved = fd < 0 || cl_map_sig(fd, (uint64_t)e->st.st_size, 0, &now) < 0 ||
		    now != e->emap;
	if (own)
		close(fd);
	return moved;
}

/* A change that raised no event (AIO, a write through a name outside the store, a store through
 * a shared mapping) may come after the capture last looked at a file and before it copies it:
 * the copy takes it in, and nothing else tells that the file changed just then. The quiet window
 * counts from that change, which the file's ctime dates (a ctime ahead of our clock counts as
 * now). */
static void cap_changed_at(struct cap *c, const struct cap_stat *st)
{
	int64_t age = cap_ns(ut_realtime()) - cap_ns(st->st_ctim);
	double at = ut_now() - (age > 0 ? (double)age / 1e9 : 0);
	if (at > c->last_change)
		c->last_change = at;
}

/* A copy is clean for as long as the file's stat stays as it was, which a write moves only
 * if it falls in a later tick of the clock that stamps the file's ctime. Where that tick is
 * a whole second (ext4 with 128-byte inodes, some network file systems: no ctime has
 * nanoseconds), a write with no event (AIO, a name outside the store) in the second the copy
 * began in, after an earlier write in that second, would go unseen: such a copy is taken
 * again once the second is over (the quiet window starts again). So a file written every
 * second there keeps the capture from its cut. Elsewhere the tick is a nanosecond (since
 * Linux 6.13, a change after a stat gets a ctime of its own) or a scheduler tick (before:
 * README, "Not covered"). 1 if the copy that began at `at` is racy so. */
#define CAP_TICK_COARSE_NS 2000000000LL /* whole seconds; FAT-like ones keep two */
static int cap_racily_clean(const struct cap_stat *st, int64_t at)
{
	int64_t d = at - cap_ns(st->st_ctim);
	return st->st_ctim.tv_nsec == 0 && d < CAP_TICK_COARSE_NS && d > -CAP_TICK_COARSE_NS;
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
	rc = cap_unmap_writes(c, e, src);
	if (rc)
		goto out;
	cap_changed_at(c, &e->st);
	if (e->st.st_nlink > 1 && (rc = cap_alias(c, e)) != 0) {
		if (rc > 0)
			rc = 0;
		goto out;
	}
	cap_map_note(c, e, src); /* another name of a file copied once uses that copy's */
	char id[CAP_ID_MAX];
	cap_set_ident(e, &e->st, at);
	e->id.emap = e->emap;
	const struct mf_entry *pe = cap_prev_same(c, e, cap_ident_of(e, id));
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
	if (cap_racily_clean(&e->st, at)) {
		e->dirty = 1; /* a change in this second would go unseen: copy it again after */
		e->dirty_count++;
		c->last_change = ut_now();
	}
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

/* Copy every dirty non-database entry. Each is made clean just before it is read. */
int cap_copy_dirty(struct cap *c, int *copied)
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
int cap_classify_dbs(struct cap *c)
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


int cap_copy_fd_to_stage(struct cap *c, int src, const char *rel, int digest,
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
