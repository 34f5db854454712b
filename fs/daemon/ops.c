/* Entries and attributes: lookup, forget, getattr/setattr, names (mknod, mkdir, symlink,
 * link, unlink, rmdir, rename), statfs, xattrs. Live nodes pass through to the store;
 * anything that would change a snapshot node fails with EROFS. */
#include "stillfs.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

/* Names at the root that belong to stillfs, not to the store (which they shadow). */
static int op_reserved(const struct node *parent, const char *name)
{
	return parent == &sf.root && (!strcmp(name, SF_SNAPDIR) || !strcmp(name, SF_STATUS));
}

/* -EROFS / -ENOTDIR if entries may not be made or removed in parent. */
static int op_writable_dir(const struct node *parent)
{
	if (parent->kind == ND_SNAP || parent->kind == ND_SNAPDIR)
		return -EROFS;
	if (parent->kind == ND_STATUS || !S_ISDIR(parent->type))
		return -ENOTDIR;
	return 0;
}

/* The daemon creates files as itself; give a new one to the caller the way the kernel
 * would have (the group of a set-group-ID directory is inherited). fd >= 0: the new file
 * is open; otherwise it is parent/name. parent is pinned (nd_pin). */
int op_give(fuse_req_t req, const struct node *parent, int fd, const char *name, mode_t mode)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat pst;

	if (sf.uid != 0 || (ctx->uid == 0 && ctx->gid == 0))
		return 0;
	if (fstatat(parent->fd, "", &pst, AT_EMPTY_PATH) < 0)
		return -errno;
	gid_t gid = (pst.st_mode & S_ISGID) ? (gid_t)-1 : ctx->gid;
	int rc = fd >= 0 ? fchown(fd, ctx->uid, gid)
			 : fchownat(parent->fd, name, ctx->uid, gid, AT_SYMLINK_NOFOLLOW);
	if (rc < 0)
		return -errno;
	/* chown clears set-ID bits; put back what the caller asked for. */
	if ((mode & (S_ISUID | S_ISGID)) && !S_ISLNK(mode))
		rc = fd >= 0 ? fchmod(fd, mode & 07777) : fchmodat(parent->fd, name, mode & 07777, 0);
	return rc < 0 ? -errno : 0;
}

/* A name directly below `.snapshot`: this is where a generation is chosen (and captured if
 * need be). The kernel holds only `.snapshot`'s own lock meanwhile, never one the live view
 * needs, so a long capture stalls no application. */
static int op_lookup_snapdir(fuse_req_t req, const char *name, struct fuse_entry_param *e)
{
	struct gen *g = dr_snapdir_gen(fuse_req_ctx(req)->pid);
	int rc = g ? 0 : gen_acquire(sf.gm, &g);
	if (rc)
		return rc;
	rc = nd_lookup_gen(g, name, e);
	if (rc == -ENOENT) {
		/* Misses are not remembered: the next generation may have the name. */
		memset(e, 0, sizeof *e);
		rc = 0;
	}
	gen_unref(sf.gm, g);
	return rc;
}

/* A static node (the root's children of stillfs's own): one more kernel reference. */
static int op_lookup_static(struct node *n, struct fuse_entry_param *e)
{
	pthread_mutex_lock(&sf.mu);
	n->nlookup++;
	pthread_mutex_unlock(&sf.mu);
	memset(e, 0, sizeof *e);
	e->ino = nd_id(n);
	nd_fill_timeouts(n, e);
	int rc = nd_stat(n, &e->attr);
	if (rc)
		nd_forget(n, 1);
	return rc;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *p = nd_of(parent);
	struct fuse_entry_param e;
	int rc;

	if (p == &sf.root && !strcmp(name, SF_SNAPDIR)) {
		rc = hp_is_helper(fuse_req_ctx(req)->pid) ? -ENOENT : op_lookup_static(&sf.snapdir, &e);
	} else if (p == &sf.root && !strcmp(name, SF_STATUS)) {
		rc = op_lookup_static(&sf.status, &e);
	} else if (p == &sf.snapdir) {
		rc = op_lookup_snapdir(req, name, &e);
	} else {
		rc = nd_lookup(p, name, &e);
		if (rc == -ENOENT && (p->kind == ND_SNAP || (p->wd > 0 && iv_cached(p)))) {
			/* A snapshot directory never changes, and a watched live one tells us when
			 * the name appears: the kernel may remember the miss. */
			memset(&e, 0, sizeof e);
			e.entry_timeout = nd_attr_timeout(p);
			rc = 0;
		}
	}
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	nd_forget(nd_of(ino), nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		nd_forget(nd_of(forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = nd_of(ino);
	struct stat st;
	int rc = nd_stat(n, &st);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, nd_attr_timeout(n));
}

static int op_utimens(const struct node *n, int fd, const struct stat *attr, int valid)
{
	struct timespec tv[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };
	char p[32];

	if (valid & FUSE_SET_ATTR_ATIME_NOW)
		tv[0].tv_nsec = UTIME_NOW;
	else if (valid & FUSE_SET_ATTR_ATIME)
		tv[0] = attr->st_atim;
	if (valid & FUSE_SET_ATTR_MTIME_NOW)
		tv[1].tv_nsec = UTIME_NOW;
	else if (valid & FUSE_SET_ATTR_MTIME)
		tv[1] = attr->st_mtim;
	if (fd >= 0)
		return futimens(fd, tv) < 0 ? -errno : 0;
	if (S_ISLNK(n->type))
		return utimensat(n->fd, "", tv, AT_EMPTY_PATH) < 0 ? -errno : 0;
	nd_procpath(n, p, sizeof p);
	return utimensat(sf.procfd, p, tv, 0) < 0 ? -errno : 0;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		       struct fuse_file_info *fi)
{
	struct node *n = nd_of(ino);
	int fd = fi ? ((struct fh *)(uintptr_t)fi->fh)->fd : -1;
	char p[32];
	int rc = nd_check(n), pinned = 0;

	if (rc)
		goto out;
	if (n->kind != ND_LIVE) {
		rc = -EROFS;
		goto out;
	}
	if ((rc = nd_pin(n)))
		goto out;
	pinned = 1;
	if (valid & FUSE_SET_ATTR_MODE) {
		if (S_ISLNK(n->type)) {
			rc = -EOPNOTSUPP;
			goto out;
		}
		nd_procpath(n, p, sizeof p);
		if ((fd >= 0 ? fchmod(fd, attr->st_mode) : fchmodat(sf.procfd, p, attr->st_mode, 0)) < 0) {
			rc = -errno;
			goto out;
		}
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;
		if (fchownat(n->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
			rc = -errno;
			goto out;
		}
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		int tfd = fd >= 0 ? fd : nd_reopen(n, O_WRONLY);
		if (tfd < 0) {
			rc = tfd;
			goto out;
		}
		if (ftruncate(tfd, attr->st_size) < 0)
			rc = -errno;
		if (tfd != fd)
			close(tfd);
		if (rc)
			goto out;
	}
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		rc = op_utimens(n, fd, attr, valid);
		if (rc)
			goto out;
	}
	struct stat st;
	rc = nd_stat(n, &st);
	if (!rc) {
		nd_unpin(n);
		fuse_reply_attr(req, &st, nd_attr_timeout(n));
		return;
	}
out:
	if (pinned)
		nd_unpin(n);
	fuse_reply_err(req, -rc);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct node *n = nd_of(ino);
	char buf[PATH_MAX + 1];
	int rc = nd_check(n);
	if (!rc)
		rc = nd_pin(n);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	ssize_t len = readlinkat(n->fd, "", buf, sizeof buf);
	rc = errno;
	nd_unpin(n);
	if (len < 0)
		fuse_reply_err(req, rc);
	else if ((size_t)len == sizeof buf)
		fuse_reply_err(req, ENAMETOOLONG);
	else {
		buf[len] = 0;
		fuse_reply_readlink(req, buf);
	}
}

/* mknod, mkdir and symlink: make parent/name, give it to the caller, look it up. */
static void op_make(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		    dev_t rdev, const char *link)
{
	struct node *p = nd_of(parent);
	struct fuse_entry_param e;
	int rc = op_writable_dir(p);

	if (!rc && op_reserved(p, name))
		rc = -EEXIST;
	if (!rc)
		rc = nd_pin(p);
	if (rc)
		goto out;
	if (link)
		rc = symlinkat(link, p->fd, name);
	else if (S_ISDIR(mode))
		rc = mkdirat(p->fd, name, mode & 07777);
	else
		rc = mknodat(p->fd, name, mode, rdev);
	rc = rc < 0 ? -errno : op_give(req, p, -1, name, link ? S_IFLNK : mode);
	if (!rc)
		rc = nd_lookup(p, name, &e);
	nd_unpin(p);
	if (!rc) {
		fuse_reply_entry(req, &e);
		return;
	}
out:
	fuse_reply_err(req, -rc);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev)
{
	op_make(req, parent, name, mode, rdev, NULL);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	op_make(req, parent, name, S_IFDIR | mode, 0, NULL);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	op_make(req, parent, name, S_IFLNK | 0777, 0, link);
}

static void op_remove(fuse_req_t req, fuse_ino_t parent, const char *name, int flags)
{
	struct node *p = nd_of(parent);
	int rc = op_writable_dir(p);
	if (!rc && op_reserved(p, name))
		rc = -EROFS;
	if (!rc && !(rc = nd_pin(p))) {
		if (unlinkat(p->fd, name, flags) < 0)
			rc = -errno;
		nd_unpin(p);
	}
	fuse_reply_err(req, -rc);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	op_remove(req, parent, name, 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	op_remove(req, parent, name, AT_REMOVEDIR);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct node *p = nd_of(parent), *np = nd_of(newparent);
	int rc = op_writable_dir(p);

	if (!rc)
		rc = op_writable_dir(np);
	if (!rc && (op_reserved(p, name) || op_reserved(np, newname)))
		rc = -EROFS;
	if (!rc && (flags & ~(unsigned)(RENAME_EXCHANGE | RENAME_NOREPLACE)))
		rc = -EINVAL;
	if (!rc && !(rc = nd_pin(p))) {
		if (!(rc = nd_pin(np))) {
			if (renameat2(p->fd, name, np->fd, newname, flags) < 0)
				rc = -errno;
			nd_unpin(np);
		}
		nd_unpin(p);
	}
	fuse_reply_err(req, -rc);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct node *n = nd_of(ino), *np = nd_of(newparent);
	struct fuse_entry_param e;
	char p[32];
	int rc = op_writable_dir(np);

	/* A snapshot file linked into the store would be changed by the next write to it. */
	if (!rc && n->kind != ND_LIVE)
		rc = -EXDEV;
	if (!rc && op_reserved(np, newname))
		rc = -EEXIST;
	if (rc || (rc = nd_pin(n)))
		goto out;
	if (!(rc = nd_pin(np))) {
		nd_procpath(n, p, sizeof p);
		if (linkat(sf.procfd, p, np->fd, newname, AT_SYMLINK_FOLLOW) < 0)
			rc = -errno;
		nd_unpin(np);
	}
	nd_unpin(n);
	if (!rc)
		rc = nd_lookup(np, newname, &e);
	if (!rc) {
		fuse_reply_entry(req, &e);
		return;
	}
out:
	fuse_reply_err(req, -rc);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct node *n = nd_of(ino);
	struct statvfs sv;
	int rc = nd_pin(n);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	int fd = n->kind == ND_STATUS ? sf.root.fd : n->kind == ND_SNAPDIR ? sf.cachefd : n->fd;
	rc = fstatvfs(fd, &sv) < 0 ? errno : 0;
	nd_unpin(n);
	if (rc)
		fuse_reply_err(req, rc);
	else
		fuse_reply_statfs(req, &sv);
}

/* xattr calls have no *at() form for O_PATH descriptors here, so they go through
 * /proc/self/fd/N, which reaches the backing inode itself. Symlinks have no user xattrs.
 * On success n is pinned: the caller unpins it after using the path. */
static int op_xattr_path(struct node *n, char *buf, size_t len)
{
	int rc = nd_check(n);
	if (rc)
		return rc;
	if (n->kind == ND_STATUS || n->kind == ND_SNAPDIR || S_ISLNK(n->type))
		return -ENOTSUP;
	if ((rc = nd_pin(n)))
		return rc;
	snprintf(buf, len, "/proc/self/fd/%d", n->fd);
	return 0;
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	struct node *n = nd_of(ino);
	char path[64];
	int rc;

	/* On the status file (stillctl refresh): while the request runs the kernel holds the
	 * target's inode lock, and on the root that would stall every lookup and create in the
	 * root for the whole capture, and deadlock a capture that reads the store through the
	 * mount (a WAL index open there). The root is still accepted, for older callers. */
	if ((n == &sf.root || n == &sf.status) && !strcmp(name, SF_XATTR_REFRESH)) {
		rc = gen_refresh(sf.gm);
		/* The caller sees why in the status file and the log; keep errno plain. */
		if (rc && rc != -EAGAIN && rc != -ENOSPC)
			rc = -EIO;
		/* The VFS turns EAGAIN from setxattr into EOPNOTSUPP: "did not settle" is sent
		 * as ETIMEDOUT. */
		if (rc == -EAGAIN)
			rc = -ETIMEDOUT;
		goto out;
	}
	if (n->kind == ND_SNAP || n->kind == ND_SNAPDIR) {
		rc = -EROFS;
		goto out;
	}
	rc = op_xattr_path(n, path, sizeof path);
	if (!rc) {
		if (setxattr(path, name, value, size, flags) < 0)
			rc = -errno;
		nd_unpin(n);
	}
out:
	fuse_reply_err(req, -rc);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct node *n = nd_of(ino);
	char path[64];
	int rc = n->kind == ND_SNAP || n->kind == ND_SNAPDIR ? -EROFS
							     : op_xattr_path(n, path, sizeof path);
	if (!rc) {
		if (removexattr(path, name) < 0)
			rc = -errno;
		nd_unpin(n);
	}
	fuse_reply_err(req, -rc);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct node *n = nd_of(ino);
	char path[64], *buf = NULL;
	ssize_t len;
	int rc = op_xattr_path(n, path, sizeof path);

	if (rc == -ENOTSUP && (n->kind == ND_STATUS || n->kind == ND_SNAPDIR))
		rc = -ENODATA;
	if (rc)
		goto out;
	if (size && !(buf = malloc(size))) {
		len = -1;
		errno = ENOMEM;
	} else {
		len = getxattr(path, name, buf, size);
	}
	if (len < 0)
		rc = -errno;
	nd_unpin(n);
	if (rc)
		goto out;
	if (size)
		fuse_reply_buf(req, buf, (size_t)len);
	else
		fuse_reply_xattr(req, (size_t)len);
out:
	if (rc)
		fuse_reply_err(req, -rc);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct node *n = nd_of(ino);
	char path[64], *buf = NULL;
	ssize_t len;
	int rc = op_xattr_path(n, path, sizeof path);

	if (rc == -ENOTSUP) {       /* nothing to list, which is not an error */
		if (size)
			fuse_reply_buf(req, NULL, 0);
		else
			fuse_reply_xattr(req, 0);
		return;
	}
	if (rc)
		goto out;
	if (size && !(buf = malloc(size))) {
		len = -1;
		errno = ENOMEM;
	} else {
		len = listxattr(path, buf, size);
	}
	if (len < 0)
		rc = -errno;
	nd_unpin(n);
	if (rc)
		goto out;
	if (size)
		fuse_reply_buf(req, buf, (size_t)len);
	else
		fuse_reply_xattr(req, (size_t)len);
out:
	if (rc)
		fuse_reply_err(req, -rc);
	free(buf);
}

void op_register(struct fuse_lowlevel_ops *ops)
{
	ops->lookup = op_lookup;
	ops->forget = op_forget;
	ops->forget_multi = op_forget_multi;
	ops->getattr = op_getattr;
	ops->setattr = op_setattr;
	ops->readlink = op_readlink;
	ops->mknod = op_mknod;
	ops->mkdir = op_mkdir;
	ops->symlink = op_symlink;
	ops->unlink = op_unlink;
	ops->rmdir = op_rmdir;
	ops->rename = op_rename;
	ops->link = op_link;
	ops->statfs = op_statfs;
	ops->setxattr = op_setxattr;
	ops->getxattr = op_getxattr;
	ops->listxattr = op_listxattr;
	ops->removexattr = op_removexattr;
}
