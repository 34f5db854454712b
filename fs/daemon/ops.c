/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Entries and attributes: lookup, forget, getattr/setattr, names (mknod, mkdir, symlink,
 * link, unlink, rmdir, rename), statfs, xattrs. Live nodes pass through to the store;
 * anything that would change a snapshot node fails with EROFS. */
#include "stillfs.h"
#include "fusecompat.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

static int op_reserved(const struct node *parent, const char *name)
{
	return parent == &sf.root && sf_reserved(name);
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

/* A root daemon acts on the live store with the credentials of the process that asked:
 * file-system uid and gid and supplementary groups, set for the calling thread only (the raw
 * system calls: glibc's setgroups() changes every thread). The kernel then checks the
 * caller's rights on the store's own files, drops root's file capabilities for the call, and
 * makes new files the caller's (group of a set-group-ID directory, set-ID bits) by its own
 * rules; nothing is given away afterwards by name. */
static gid_t *op_root_groups;
static int op_root_ngroups;
static _Thread_local int op_as_caller;     /* OP_CRED_* changed in this thread */
enum { OP_CRED_UID = 1, OP_CRED_GID = 2, OP_CRED_GROUPS = 4 };

static void op_cred_init(void)
{
	int n = getgroups(0, NULL);
	if (n > 0 && (op_root_groups = calloc((size_t)n, sizeof *op_root_groups)))
		op_root_ngroups = getgroups(n, op_root_groups);
	if (op_root_ngroups < 0)
		op_root_ngroups = 0;
}

static int op_setfs(long uid_call, unsigned id)
{
	syscall(uid_call, id);
	/* Both calls return the previous id, never an error: ask again to see it took. */
	return (unsigned)syscall(uid_call, -1) == id ? 0 : -EPERM;
}

/* The caller's supplementary groups for this thread. */
static int op_set_groups(fuse_req_t req)
{
	gid_t small[64], *groups = small;
	int n = fuse_req_getgroups(req, 64, small), rc = 0;

	if (n > 64 && (groups = calloc((size_t)n, sizeof *groups)))
		n = fuse_req_getgroups(req, n, groups);
	/* Unknown (process gone, another pid namespace): its primary group only, which grants
	 * less, never more. */
	if (!groups || n < 0)
		n = 0;
	op_as_caller |= OP_CRED_GROUPS;
	if (syscall(SYS_setgroups, (size_t)n, groups ? groups : small) < 0)
		rc = -errno;
	if (groups != small)
		free(groups);
	return rc;
}

/* After rc, the step before (0 if none): the caller's file-system gid and uid, where they
 * differ from the daemon's (a thread serving no caller holds the daemon's ids: op_cred_drop
 * makes sure of it). On failure, everything taken is given back. */
static int op_take_fs_ids(const struct fuse_ctx *ctx, int rc)
{
	if (!rc && ctx->gid != sf.gid) {
		op_as_caller |= OP_CRED_GID;
		rc = op_setfs(SYS_setfsgid, ctx->gid);
	}
	if (!rc && ctx->uid != sf.uid) {
		op_as_caller |= OP_CRED_UID;
		rc = op_setfs(SYS_setfsuid, ctx->uid);
	}
	if (rc) {
		log_err("cannot take the credentials of uid %u: %s", (unsigned)ctx->uid, strerror(-rc));
		op_cred_drop();
	}
	return rc;
}

int op_cred_take(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	int rc = 0;

	if (sf.uid != 0)
		return 0;          /* not root: everything already runs as the daemon's user */
	/* A root caller keeps root's capabilities, to which supplementary groups add nothing:
	 * only its group, which new files get, is the caller's own. */
	if (ctx->uid != 0)
		rc = op_set_groups(req);
	return op_take_fs_ids(ctx, rc);
}

int op_cred_take_ids(fuse_req_t req)
{
	return sf.uid != 0 ? 0 : op_take_fs_ids(fuse_req_ctx(req), 0);
}

int op_cred_take_ids_of(uid_t uid, gid_t gid)
{
	struct fuse_ctx ctx = { .uid = uid, .gid = gid };
	return sf.uid != 0 ? 0 : op_take_fs_ids(&ctx, 0);
}

void op_cred_drop(void)
{
	/* A thread that kept a caller's identity would serve the next request with it. */
	if (((op_as_caller & OP_CRED_UID) && op_setfs(SYS_setfsuid, sf.uid)) ||
	    ((op_as_caller & OP_CRED_GID) && op_setfs(SYS_setfsgid, sf.gid)) ||
	    ((op_as_caller & OP_CRED_GROUPS) &&
	     syscall(SYS_setgroups, (size_t)op_root_ngroups, op_root_groups) < 0)) {
		log_err("cannot restore the daemon's credentials: %s", strerror(errno));
		abort();
	}
	op_as_caller = 0;
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
	} else if (p == &sf.root && !strcmp(name, SF_STATUS_JSON)) {
		rc = op_lookup_static(&sf.status_json, &e);
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

/* chmod n on its own descriptor (or the open handle's fd), never on a name:
 * /proc/self/fd/N reaches the very inode our O_PATH descriptor holds. */
static int op_chmod(const struct node *n, int fd, mode_t mode)
{
	char p[32];

	if (S_ISLNK(n->type))
		return -EOPNOTSUPP;
	nd_procpath(n, p, sizeof p);
	return (fd >= 0 ? fchmod(fd, mode) : fchmodat(sf.procfd, p, mode, 0)) < 0 ? -errno : 0;
}

/* 1 if mode is n's mode less some of its set-ID bits. The kernel asks for that itself (without
 * FUSE_HANDLE_KILLPRIV_V2), in the name of whoever writes or truncates a file they do not own,
 * as a local file system would clear them: done as root, for a caller who could take them
 * away in the store (op_may_kill). */
static int op_clears_setid(const struct node *n, mode_t mode)
{
	const mode_t setid = S_ISUID | S_ISGID;
	struct stat st;

	if (fstatat(n->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 || S_ISLNK(st.st_mode))
		return 0;
	mode &= 07777;
	return (st.st_mode & setid & ~mode) && (mode & ~setid) == (st.st_mode & 07777 & ~setid) &&
	       !(mode & ~st.st_mode & setid);
}

/* 1 if req's caller, not root, is not in group gid. */
static int op_outside_group(fuse_req_t req, gid_t gid)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t small[64], *groups = small;
	int n, i, in = 0;

	if (ctx->uid == 0 || ctx->gid == gid)
		return 0;
	n = fuse_req_getgroups(req, 64, small);
	if (n > 64 && (groups = calloc((size_t)n, sizeof *groups)))
		n = fuse_req_getgroups(req, n, groups);
	for (i = 0; groups && i < n; i++)
		in |= groups[i] == gid;
	if (groups != small)
		free(groups);
	return !in;
}

/* Clear n's set-user-ID bit, and its set-group-ID bit if its group may execute it (or, given
 * req, if its caller is outside the file's group), with the daemon's own credentials (fd: n's
 * open handle's descriptor, or -1 with n pinned). */
static void op_kill_setid(const struct node *n, int fd, fuse_req_t req)
{
	struct stat st;

	if (fstat(fd >= 0 ? fd : n->fd, &st) < 0 || !S_ISREG(st.st_mode))
		return;
	mode_t mode = st.st_mode & 07777 & ~S_ISUID;
	if ((mode & S_ISGID) && ((mode & S_IXGRP) || (req && op_outside_group(req, st.st_gid))))
		mode &= ~S_ISGID;
	if (mode != (st.st_mode & 07777) && op_chmod(n, fd, mode))
		log_warn("cannot clear the set-ID bits of a file written through the mount");
}

/* 1 if req's caller could take n's set-ID bits away in the store: root, n's owner (a change
 * of mode), or a caller who may write n (a write would). The kernel passes a chown(-1, -1)
 * on as a setattr that changes nothing without checking the caller's right to the change of
 * mode it drops from it: a user who may only read root's set-user-ID program would clear its
 * bits, which fails with EPERM in the store. Checked with the caller's credentials. */
static int op_may_kill(fuse_req_t req, const struct node *n)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat st;
	char p[32];
	int ok;

	if (ctx->uid == 0)
		return 1;
	if (fstatat(n->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	if (st.st_uid == ctx->uid)
		return 1;
	if (op_cred_take(req))
		return 0;
	nd_procpath(n, p, sizeof p);
	ok = syscall(SYS_faccessat2, sf.procfd, p, W_OK, AT_EACCESS) == 0;
	op_cred_drop();
	return ok;
}

/* With FUSE_HANDLE_KILLPRIV_V2 the kernel leaves to us what a local file system does when
 * a caller without CAP_FSETID writes or truncates a file: set-user-ID goes, and set-group-ID
 * where the group may execute. Most of it happens by itself, since the daemon writes and
 * truncates with the caller's file-system ids, which have no CAP_FSETID unless they are root's
 * (the file system then also drops security.capability, whoever writes): what is left is a
 * caller of root's uid without CAP_FSETID, whose request the daemon serves with all of root's
 * capabilities. Passthrough writes never come here: set-ID files get no backing file
 * (pt_attach), and the others' backing files write with the overflow ids, which have no
 * CAP_FSETID either (pt_backing_open). */
void op_kill_suidgid(const struct node *n, int fd)
{
	if (fc_kill_suidgid())
		op_kill_setid(n, fd, NULL);
}

/* The changes setattr asks for, on n's own descriptor (pinned) or the open handle's fd. */
static int op_setattr_live(struct node *n, int fd, const struct stat *attr, int valid)
{
	int rc = 0;

	if ((valid & FUSE_SET_ATTR_MODE) && (rc = op_chmod(n, fd, attr->st_mode)))
		return rc;
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;
		if (fchownat(n->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		if (!S_ISREG(n->type))
			return S_ISDIR(n->type) ? -EISDIR : -EINVAL;
		int tfd = fd >= 0 ? fd : nd_reopen(n, O_WRONLY | O_NONBLOCK);
		if (tfd < 0)
			return tfd;
		if (ftruncate(tfd, attr->st_size) < 0)
			rc = -errno;
		if (tfd != fd)
			close(tfd);
		if (rc)
			return rc;
	}
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))
		rc = op_utimens(n, fd, attr, valid);
	return rc;
}

#define OP_SET_ATTR_ANY (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | \
			 FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | \
			 FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME)

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		       struct fuse_file_info *fi)
{
	struct node *n = nd_of(ino);
	int fd = fi ? ((struct fh *)(uintptr_t)fi->fh)->fd : -1;
	struct stat st;
	int rc = nd_check(n);

	if (!rc && n->kind != ND_LIVE)
		rc = -EROFS;
	if (!rc && !(rc = nd_pin(n))) {
		if ((valid & FUSE_SET_ATTR_MODE) && op_clears_setid(n, attr->st_mode) &&
		    op_may_kill(req, n)) {
			rc = op_chmod(n, fd, attr->st_mode);
			valid &= ~FUSE_SET_ATTR_MODE;
		}
		if (!rc && !(rc = op_cred_take(req))) {
			rc = op_setattr_live(n, fd, attr, valid);
			op_cred_drop();
		}
		if (!rc && (valid & FUSE_SET_ATTR_SIZE))
			op_kill_suidgid(n, fd);
		/* A setattr that changes nothing is how the kernel, with FUSE_HANDLE_KILLPRIV_V2,
		 * passes on its own decision (file_remove_privs, with the caller's credentials)
		 * that a file about to be written, fallocated or copied into, or chowned to its
		 * own owner, loses its privileges. It says neither which bits nor whether it is
		 * only for the file's capabilities (which it removes itself, removexattr), so the
		 * daemon clears what a local file system clears for a caller without CAP_FSETID:
		 * root writing to a set-ID file that also has file capabilities loses the set-ID
		 * bits, which it would keep on a local file system. A root caller is taken to
		 * have CAP_FSETID for set-group-ID without group execute, which grants nothing. Only
		 * for a caller who could clear the bits in the store (op_may_kill). */
		if (!rc && fc_killpriv_v2() && !(valid & OP_SET_ATTR_ANY) && op_may_kill(req, n))
			op_kill_setid(n, fd, req);
		nd_unpin(n);
	}
	if (!rc)
		rc = nd_stat(n, &st);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, nd_attr_timeout(n));
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

/* mknod, mkdir and symlink: make parent/name as the caller, look it up. */
static void op_make(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		    dev_t rdev, const char *link)
{
	struct node *p = nd_of(parent);
	struct fuse_entry_param e;
	int rc = op_writable_dir(p);

	if (!rc && op_reserved(p, name))
		rc = -EEXIST;
	if (rc || (rc = nd_pin(p)))
		goto out;
	if ((rc = op_cred_take(req))) {
		nd_unpin(p);
		goto out;
	}
	if (link)
		rc = symlinkat(link, p->fd, name);
	else if (S_ISDIR(mode))
		rc = mkdirat(p->fd, name, mode & 07777);
	else
		rc = mknodat(p->fd, name, mode, rdev);
	rc = rc < 0 ? -errno : 0;
	op_cred_drop();
	nd_unpin(p);
	/* Whatever the name holds by now is only looked up, never changed. */
	if (!rc)
		rc = nd_lookup(p, name, &e);
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
		if (!(rc = op_cred_take(req))) {
			if (unlinkat(p->fd, name, flags) < 0)
				rc = -errno;
			op_cred_drop();
		}
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
			if (!(rc = op_cred_take(req))) {
				if (renameat2(p->fd, name, np->fd, newname, flags) < 0)
					rc = -errno;
				op_cred_drop();
			}
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
		if (!(rc = op_cred_take(req))) {
			/* Through /proc/self/fd/N: the very inode our descriptor holds, not a name. */
			nd_procpath(n, p, sizeof p);
			rc = linkat(sf.procfd, p, np->fd, newname, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
			op_cred_drop();
		}
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
	if ((n == &sf.root || n->kind == ND_STATUS) && !strcmp(name, SF_XATTR_REFRESH)) {
		rc = gen_refresh(sf.gm);
		/* The caller sees why in the status file and the log; keep errno plain. */
		if (rc && rc != -EAGAIN && rc != -ENOSPC && rc != -EBUSY)
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
		if (!(rc = op_cred_take(req))) {
			if (setxattr(path, name, value, size, flags) < 0)
				rc = -errno;
			op_cred_drop();
		}
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
		if (!(rc = op_cred_take(req))) {
			if (removexattr(path, name) < 0)
				rc = -errno;
			op_cred_drop();
		}
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
	/* A snapshot's modes already account for its source's ACL (cap_acl_narrow); an ACL the
	 * cache's own directory gave the copy says nothing about the source. */
	if (n->kind == ND_SNAP && !strncmp(name, "system.posix_acl_", 17)) {
		nd_unpin(n);
		rc = -ENODATA;
		goto out;
	}
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

/* Names in the trusted namespace are listed only to a caller with CAP_SYS_ADMIN (a local file
 * system leaves them out for everyone else), but we list as root: remove them from list, of
 * len bytes, for any caller but root. Returns the new length. */
static size_t op_xattr_hide_trusted(fuse_req_t req, char *list, size_t len)
{
	size_t out = 0;
	if (fuse_req_ctx(req)->uid == 0)
		return len;
	for (size_t i = 0; i < len;) {
		size_t l = strnlen(list + i, len - i) + 1;
		if (strncmp(list + i, "trusted.", 8)) {
			memmove(list + out, list + i, l);
			out += l;
		}
		i += l;
	}
	return out;
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
	/* The whole list even when only its size is asked: the size must be that of the list
	 * the caller will get. */
	len = listxattr(path, NULL, 0);
	if (len >= 0 && !(buf = malloc((size_t)len + 1))) {
		len = -1;
		errno = ENOMEM;
	} else if (len > 0) {
		len = listxattr(path, buf, (size_t)len);   /* ERANGE if it grew meanwhile */
	}
	/* (Not with size 0: that returns the size of a list that grew meanwhile, not ERANGE, and
	 * buf would be taken to hold that many bytes.) */
	if (len < 0)
		rc = -errno;
	nd_unpin(n);
	if (rc)
		goto out;
	len = (ssize_t)op_xattr_hide_trusted(req, buf, (size_t)len);
	if (size && (size_t)len > size)
		fuse_reply_err(req, ERANGE);
	else if (size)
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
	op_cred_init();
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
