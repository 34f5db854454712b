/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Capture, the entries: every directory, file and symlink of the store as one array (struct ent),
 * walked from the root (cap_scan_dir, cap_rescan) and found again by path (cap_lookup), and the
 * inode map that makes a file with several names one copy (cap_alias). Paths are opened beneath
 * the store only (cap_openat2). Used by every other step (capture.c gives the overview). */
#include "cap_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

/* A recorded identity is only trusted as proof of "unchanged" when the file's ctime was older
 * than this when it was recorded: timestamps come from a coarse clock, so a write in the same
 * tick as our stat could otherwise leave every field of the identity the same. */
#define CAP_RACY_NS 2000000000LL
#define CAP_PATH_MAX (PATH_MAX - 128) /* longest store path captured (see cap_scan_dir) */

int cap_openat2(int dirfd, const char *path, int flags)
{
	/* Never let a symlink (or "..") inside the store lead a path walk anywhere else. */
	struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC),
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
	int fd = (int)syscall(SYS_openat2, dirfd, path[0] ? path : ".", &how, sizeof how);
	if (fd < 0 && errno == ENOSYS)
		return ut_open_beneath_walk(dirfd, path[0] ? path : ".", flags);
	return fd < 0 ? -errno : fd;
}

void cap_keep_stat(struct cap_stat *to, const struct stat *s)
{
	*to = (struct cap_stat){ .st_dev = s->st_dev, .st_ino = s->st_ino, .st_size = s->st_size,
				 .st_nlink = s->st_nlink > UINT32_MAX ? UINT32_MAX : (uint32_t)s->st_nlink,
				 .st_mode = s->st_mode, .st_uid = s->st_uid, .st_gid = s->st_gid,
				 .st_atim = s->st_atim, .st_mtim = s->st_mtim,
				 .st_ctim = s->st_ctim };
}

/* POSIX ACL entry tags and the xattr's layout (linux/posix_acl_xattr.h). */
enum { CAP_ACL_USER = 0x02, CAP_ACL_GROUP_OBJ = 0x04, CAP_ACL_GROUP = 0x08,
       CAP_ACL_MASK = 0x10, CAP_ACL_OTHER = 0x20 };
#define CAP_ACL_VERSION 2

/* A snapshot keeps owner, group and mode but no ACL, and the mount checks modes only: a
 * source file whose access ACL denies some user or group what its mode bits grant (user:evil:---
 * on a 0644 file) must not become readable to them in the snapshot. So the group bits become
 * no more than what the owning group and every named user get, and the other bits no more
 * than what every named user and group and the others get (each entry limited by the mask).
 * Nobody gains a right; a user or group the ACL grants more than the mode loses it in the
 * snapshot. fd is open on the source itself (O_PATH will do). */
void cap_acl_narrow(int fd, struct cap_stat *st)
{
	/* Set-ID bits grant nothing on a nosuid mount, and a user's own FUSE mount (always
	 * nosuid) reports whatever owner and mode its daemon likes: a copy of its file, set-ID
	 * and root's, would grant them wherever the snapshot lies. */
	struct statvfs vs;
	if (S_ISREG(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID)) &&
	    (fstatvfs(fd, &vs) < 0 || (vs.f_flag & ST_NOSUID)))
		st->st_mode &= ~(mode_t)(S_ISUID | S_ISGID);
	struct {
		uint16_t tag, perm;
		uint32_t id;
	} ent[64];
	uint32_t hdr;
	char buf[4 + sizeof ent];
	ssize_t len = fgetxattr(fd, "system.posix_acl_access", buf, sizeof buf);
	if (len < 0 && errno == EBADF) {
		/* An O_PATH descriptor: its inode through /proc, never a name of the store. */
		char proc[64];
		snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
		len = getxattr(proc, "system.posix_acl_access", buf, sizeof buf);
	}

	if (len < 0 && errno == ERANGE) {
		/* More entries than we read: nobody but the owner keeps a right. */
		st->st_mode &= ~(mode_t)077;
		return;
	}
	if (len < (ssize_t)sizeof hdr)
		return; /* no ACL (ENODATA, EOPNOTSUPP): the mode is the whole story */
	memcpy(&hdr, buf, sizeof hdr);
	size_t n = ((size_t)len - sizeof hdr) / sizeof ent[0];
	if (hdr != CAP_ACL_VERSION || ((size_t)len - sizeof hdr) % sizeof ent[0]) {
		st->st_mode &= ~(mode_t)077;
		return;
	}
	memcpy(ent, buf + sizeof hdr, n * sizeof ent[0]);
	unsigned mask = 7, grp = 7, oth = 7, named_users = 7, named = 7;
	for (size_t i = 0; i < n; i++)
		if (ent[i].tag == CAP_ACL_MASK)
			mask = ent[i].perm & 7;
	for (size_t i = 0; i < n; i++) {
		unsigned p = ent[i].perm & 7;
		switch (ent[i].tag) {
		case CAP_ACL_USER:
			named_users &= p & mask;
			named &= p & mask;
			break;
		case CAP_ACL_GROUP:
			named &= p & mask;
			break;
		case CAP_ACL_GROUP_OBJ:
			grp &= p & mask;
			break;
		case CAP_ACL_OTHER:
			oth &= p;
			break;
		}
	}
	unsigned g = ((st->st_mode >> 3) & 7) & grp & named_users;
	unsigned o = (st->st_mode & 7) & oth & named;
	st->st_mode = (st->st_mode & ~(mode_t)077) | (mode_t)(g << 3) | (mode_t)o;
}

mode_t cap_acl_mode(int fd, mode_t mode)
{
	struct cap_stat st = { .st_mode = mode };
	cap_acl_narrow(fd, &st);
	return st.st_mode;
}

/* A stat of dirfd/name, or of dirfd itself when name is "", no symlink followed, that no
 * cache answers: through FUSE (the capture helper reads the store through the mount while an
 * SQLite -shm is open there) and network file systems, attributes are cached and invalidated
 * only some time after the store changed, so a change just made would look like none. Local
 * file systems ignore AT_STATX_FORCE_SYNC. 0 or -errno. */
int cap_stat_fresh(int dirfd, const char *name, struct stat *st)
{
	struct statx x;
	int at = AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH);
	if (statx(dirfd, name, at | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &x) < 0) {
		if (errno != ENOSYS)
			return -errno;
		return fstatat(dirfd, name, st, at) < 0 ? -errno : 0;
	}
	memset(st, 0, sizeof *st);
	st->st_dev = makedev(x.stx_dev_major, x.stx_dev_minor);
	st->st_rdev = makedev(x.stx_rdev_major, x.stx_rdev_minor);
	st->st_ino = x.stx_ino;
	st->st_mode = x.stx_mode;
	st->st_nlink = x.stx_nlink;
	st->st_uid = x.stx_uid;
	st->st_gid = x.stx_gid;
	st->st_size = (off_t)x.stx_size;
	st->st_blksize = x.stx_blksize;
	st->st_blocks = (blkcnt_t)x.stx_blocks;
	st->st_atim = (struct timespec){ x.stx_atime.tv_sec, x.stx_atime.tv_nsec };
	st->st_mtim = (struct timespec){ x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec };
	st->st_ctim = (struct timespec){ x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec };
	return 0;
}

/* fstat into a cap_stat, fresh (cap_stat_fresh), the mode narrowed by the file's ACL
 * (cap_acl_narrow). 0 or -errno. */
int cap_fstat(int fd, struct cap_stat *to)
{
	int rc = cap_lstatat(fd, "", to);
	if (!rc)
		cap_acl_narrow(fd, to);
	return rc;
}

int cap_lstatat(int dirfd, const char *name, struct cap_stat *to)
{
	struct stat s;
	int rc = cap_stat_fresh(dirfd, name, &s);
	if (!rc)
		cap_keep_stat(to, &s);
	return rc;
}

/* 1 if inotify on a directory of fd's file system reports every change made in it: local
 * disk and memory file systems. Not FUSE (a change made in the store below the daemon, not
 * through the mount, raises no event on the mount's directories), not network file systems
 * (changes made by the server or other clients), not overlayfs (changes made in its layers). */
static int cap_fs_notifies(int fd)
{
	static const unsigned long local[] = { EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC,
		BTRFS_SUPER_MAGIC, TMPFS_MAGIC, RAMFS_MAGIC, F2FS_SUPER_MAGIC,
		0x2fc12fc1 /* zfs */, 0xca451a4e /* bcachefs */ };
	struct statfs sf;
	if (fstatfs(fd, &sf) < 0)
		return 0;
	for (unsigned i = 0; i < sizeof local / sizeof local[0]; i++)
		if ((unsigned long)sf.f_type == local[i])
			return 1;
	return 0;
}

/* The newest ctime the scans saw, for the quiet window at start. */
static void cap_saw_ctime(struct cap *c, struct timespec ctim)
{
	if (cap_ns(ctim) > c->newest_ctime)
		c->newest_ctime = cap_ns(ctim);
}

/* 1 and *id if s can be trusted as proof of "unchanged" at `at`, else 0. */
static int cap_id_of(const struct cap_stat *s, int64_t at, struct cap_id *id)
{
	if (cap_ns(s->st_ctim) + CAP_RACY_NS >= at)
		return 0;
	*id = (struct cap_id){ .dev = (uint64_t)s->st_dev, .ino = (uint64_t)s->st_ino,
			       .size = (int64_t)s->st_size, .mtime_ns = cap_ns(s->st_mtim),
			       .ctime_ns = cap_ns(s->st_ctim) };
	return 1;
}

static const char *cap_id_format(const struct cap_id *id, char *buf)
{
	int n = snprintf(buf, CAP_ID_MAX, "%" PRIx64 ".%" PRIu64 ".%" PRId64 ".%" PRId64 ".%" PRId64,
			 id->dev, id->ino, id->size, id->mtime_ns, id->ctime_ns);
	if (id->emap && n > 0 && n < CAP_ID_MAX)
		snprintf(buf + n, CAP_ID_MAX - (size_t)n, ".m%016" PRIx64, id->emap);
	return buf;
}

char *cap_ident(const struct cap_stat *s, int64_t at)
{
	char buf[CAP_ID_MAX];
	struct cap_id id;
	return cap_id_of(s, at, &id) ? strdup(cap_id_format(&id, buf)) : NULL;
}

void cap_clear_ident(struct ent *e)
{
	e->has_id = 0;
	if (e->d) {
		free(e->d->ident);
		e->d->ident = NULL;
	}
}

void cap_set_ident(struct ent *e, const struct cap_stat *s, int64_t at)
{
	cap_clear_ident(e);
	e->has_id = cap_id_of(s, at, &e->id) != 0;
}

const char *cap_ident_of(const struct ent *e, char *buf)
{
	if (e->d && e->d->ident)
		return e->d->ident;
	return e->has_id ? cap_id_format(&e->id, buf) : NULL;
}

const char *cap_where(const struct cap *c, const struct ent *e)
{
	static __thread char buf[PATH_MAX + 64];
	snprintf(buf, sizeof buf, "%s/%s", c->o->store, e->path);
	return buf;
}


#define CAP_SLOT_FREE UINT32_MAX
#define CAP_SLOT_GONE (UINT32_MAX - 1) /* a tombstone keeps later probes of the chain reachable */

/* The slot of c's index that holds path, or SIZE_MAX. */
static size_t cap_index_slot(const struct cap *c, const char *path)
{
	size_t mask = c->index.cap - 1;
	if (!c->index.cap)
		return SIZE_MAX;
	for (size_t i = ut_hash(path) & mask; c->index.slot[i] != CAP_SLOT_FREE; i = (i + 1) & mask)
		if (c->index.slot[i] != CAP_SLOT_GONE && !strcmp(c->e[c->index.slot[i]].path, path))
			return i;
	return SIZE_MAX;
}

int cap_index_get(const struct cap *c, const char *path, size_t *idx)
{
	size_t i = cap_index_slot(c, path);
	if (i == SIZE_MAX)
		return 0;
	*idx = c->index.slot[i];
	return 1;
}

static void cap_index_del(struct cap *c, const char *path)
{
	size_t i = cap_index_slot(c, path);
	if (i != SIZE_MAX)
		c->index.slot[i] = CAP_SLOT_GONE;
}

/* Index entry idx under its path (in place of an entry of the same path). 0 or -ENOMEM. */
static int cap_index_put(struct cap *c, uint32_t idx)
{
	if ((c->index.used + 1) * 2 > c->index.cap) {
		/* At most half full, tombstones counted: grow (or just rebuild without them). */
		size_t cap = c->index.cap ? c->index.cap * 2 : 1024;
		uint32_t *slot = malloc(cap * sizeof *slot), *old = c->index.slot;
		if (!slot)
			return -ENOMEM;
		memset(slot, 0xff, cap * sizeof *slot); /* CAP_SLOT_FREE */
		size_t oldcap = c->index.cap;
		c->index.slot = slot;
		c->index.cap = cap;
		c->index.used = 0;
		for (size_t k = 0; k < oldcap; k++)
			if (old[k] != CAP_SLOT_FREE && old[k] != CAP_SLOT_GONE)
				cap_index_put(c, old[k]); /* (room enough: no growth) */
		free(old);
	}
	const char *path = c->e[idx].path;
	size_t mask = c->index.cap - 1, i = ut_hash(path) & mask, gone = SIZE_MAX;
	for (; c->index.slot[i] != CAP_SLOT_FREE; i = (i + 1) & mask) {
		if (c->index.slot[i] == CAP_SLOT_GONE) {
			if (gone == SIZE_MAX)
				gone = i;
		} else if (!strcmp(c->e[c->index.slot[i]].path, path)) {
			c->index.slot[i] = idx;
			return 0;
		}
	}
	if (gone != SIZE_MAX)
		i = gone;
	else
		c->index.used++;
	c->index.slot[i] = idx;
	return 0;
}

int cap_add(struct cap *c, size_t parent, const char *name, char kind, size_t *out)
{
	if (c->n >= CAP_SLOT_GONE)
		return -ENOMEM; /* entry numbers are 32 bits */
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 1024;
		struct ent *ne = realloc(c->e, cap * sizeof *ne);
		if (!ne)
			return -ENOMEM;
		c->e = ne;
		c->cap = cap;
		/* The index refers to entries by number and paths do not move: nothing to redo. */
	}
	struct ent *e = &c->e[c->n];
	memset(e, 0, sizeof *e);
	const char *pp = c->n ? c->e[parent].path : "";
	char buf[PATH_MAX * 2];
	if (pp[0])
		snprintf(buf, sizeof buf, "%s/%s", pp, name);
	else
		snprintf(buf, sizeof buf, "%s", name);
	e->path = ut_arena_strdup(&c->paths, buf);
	if (!e->path)
		return -ENOMEM;
	e->name = strrchr(e->path, '/') ? strrchr(e->path, '/') + 1 : e->path;
	e->parent = (uint32_t)parent;
	e->kind = kind;
	if (cap_index_put(c, (uint32_t)c->n))
		return -ENOMEM; /* (its path stays in the arena until the end) */
	*out = c->n++;
	return 0;
}

/* Make e a database entry: give it the state only databases carry. 0 or -ENOMEM. */
int cap_as_db(struct ent *e)
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

int cap_lookup(const struct cap *c, size_t dir, const char *name, size_t *idx)
{
	char buf[PATH_MAX * 2];
	const char *pp = c->e[dir].path;
	snprintf(buf, sizeof buf, pp[0] ? "%s/%s" : "%s%s", pp, name);
	return cap_index_get(c, buf, idx);
}

int cap_is_companion_name(const char *name, size_t *baselen)
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
int cap_companion_of(const struct cap *c, size_t dir, const char *name, size_t *db)
{
	size_t bl;
	char base[NAME_MAX + 1];
	if (!cap_is_companion_name(name, &bl) || bl > NAME_MAX)
		return 0;
	memcpy(base, name, bl);
	base[bl] = 0;
	return cap_lookup(c, dir, base, db) && c->e[*db].kind == K_DB;
}

/* Remove what the staging tree holds for entry i (and below, for a directory). */
void cap_unstage(struct cap *c, size_t i)
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
				cap_index_del(c, c->e[j].path);
			}
	}
	cap_unstage(c, i);
	e->kind = K_NONE;
	cap_index_del(c, e->path);
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
	uint32_t was;
	rc = wt_add_was(c->w, fd, (uint32_t)di, &was);
	if (rc == -ENOSPC) {
		log_err("too many directories to watch (raise fs.inotify.max_user_watches)");
		goto out;
	}
	if (rc)
		goto out;
	rc = cap_fstat(fd, &c->e[di].st);
	if (rc)
		goto out;
	c->e[di].unwatched = !cap_fs_notifies(fd);
	if (was != WT_OVERFLOW && was != di && was < c->n && c->e[was].kind == K_DIR &&
	    c->e[was].st.st_ino == c->e[di].st.st_ino && c->e[was].st.st_dev == c->e[di].st.st_dev) {
		/* One directory under two names (a bind mount inside the store): its one watch
		 * now reports as di alone, so both are swept like a directory no event covers. */
		c->e[di].unwatched = c->e[was].unwatched = 1;
	}
	cap_saw_ctime(c, c->e[di].st.st_ctim);
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
		if (cap_stat_fresh(fd, de->d_name, &st) < 0)
			continue; /* vanished: the delete event (or sweep) will follow */
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
		cap_saw_ctime(c, st.st_ctim);
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

/* Directory di, where inotify may not report every change (cap_fs_notifies): 1 if its
 * entries are no longer those known (a name made, removed or replaced, other than a
 * database's companion, which come and go with its transactions), to be sorted out by a
 * rescan; 0 if they still are, its stat then taken as the new normal. Only listed when its
 * stat moved. */
int cap_dir_moved(struct cap *c, size_t di)
{
	struct cap_stat now;
	struct ent *d = &c->e[di];
	if (cap_lstatat(c->storefd, d->path[0] ? d->path : ".", &now) < 0)
		return 1;
	if (now.st_ino == d->st.st_ino && cap_ns(now.st_mtim) == cap_ns(d->st.st_mtim) &&
	    cap_ns(now.st_ctim) == cap_ns(d->st.st_ctim))
		return 0;
	int fd = cap_openat2(c->storefd, d->path, O_RDONLY | O_DIRECTORY);
	DIR *dir = fd < 0 ? NULL : fdopendir(fd);
	char *seen = dir ? calloc(c->n + 1, 1) : NULL;
	if (!seen) {
		if (dir)
			closedir(dir);
		else if (fd >= 0)
			close(fd);
		return 1;
	}
	int moved = 0;
	struct dirent *de;
	while (!moved && (errno = 0, de = readdir(dir))) {
		size_t i;
		struct cap_stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (di == 0 && !strcmp(de->d_name, CAP_MANIFEST_NAME)) ||
		    cap_companion_of(c, di, de->d_name, &i) ||
		    strlen(d->path) + strlen(de->d_name) + 2 > CAP_PATH_MAX)
			continue; /* what cap_scan_dir leaves out too */
		if (!cap_lookup(c, di, de->d_name, &i) || c->e[i].kind == K_NONE) {
			moved = 1;
			break;
		}
		/* The listing's inode number and type spare a stat (a round trip through FUSE)
		 * where they agree with what is known; some file systems report others there. */
		int dir_now = de->d_type == DT_DIR, link_now = de->d_type == DT_LNK;
		if (de->d_type == DT_UNKNOWN || de->d_ino != c->e[i].st.st_ino) {
			if (cap_lstatat(dirfd(dir), de->d_name, &st) < 0) {
				moved = 1;
				break;
			}
			dir_now = S_ISDIR(st.st_mode);
			link_now = S_ISLNK(st.st_mode);
			moved = st.st_ino != c->e[i].st.st_ino;
		}
		moved = moved || dir_now != (c->e[i].kind == K_DIR) ||
			link_now != (c->e[i].kind == K_LINK);
		seen[i] = 1;
	}
	if (!moved && errno)
		moved = 1;
	for (size_t j = di + 1; !moved && j < c->n; j++)
		moved = c->e[j].parent == di && !seen[j] && c->e[j].kind != K_NONE &&
			c->e[j].kind != K_COMPANION;
	if (!moved) {
		/* The new normal: the stat taken before the listing (a change after it moves it
		 * again), its mode narrowed by the directory's ACL like cap_scan_dir's, since the
		 * snapshot's directory takes this mode. */
		cap_acl_narrow(dirfd(dir), &now);
		d->st = now;
	}
	closedir(dir);
	free(seen);
	return moved;
}

/* Rescan every directory that asked for it, until none does (new subdirectories ask). */
int cap_rescan(struct cap *c)
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


/* 1 if a and b are one file in one state: what a write, through any name or AIO, moves. */
int cap_same_file_state(const struct cap_stat *a, const struct cap_stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       cap_ns(a->st_mtim) == cap_ns(b->st_mtim) && cap_ns(a->st_ctim) == cap_ns(b->st_ctim);
}

/* 1 if entry p holds a clean copy of its own (no alias) of the file whose stat is s. */
int cap_is_copy_of(const struct cap *c, size_t p, const struct cap_stat *s)
{
	const struct ent *pe = &c->e[p];
	return pe->kind == K_FILE && pe->copied && !pe->dirty && !pe->alias &&
	       cap_same_file_state(&pe->st, s);
}

/* A file with several names in the store is copied once: e, just stat'ed, becomes another name
 * of a clean copy of the same file if there is one (linked to it in cap_link_aliases, once the
 * snapshot's times are set), else the copy the other names will share. 1 if e became such a
 * name, 0 if it is to be copied, -errno. */
int cap_alias(struct cap *c, struct ent *e)
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
