/* SPDX-License-Identifier: GPL-2.0-or-later */
/* File handles: open/create, read/write (spliced where the kernel allows), flush, fsync,
 * release, fallocate, copy_file_range, lseek; and the status file.
 *
 * Where the kernel has FUSE passthrough (passthru.c), reads, writes and mmap of both kinds
 * go straight to the backing file. Otherwise: live files are opened without keep_cache and
 * with zero attribute timeouts, so the kernel drops cached pages on open and
 * (auto_inval_data) when the store changed underneath; no direct_io, because SQLite's WAL
 * index (-shm) must be shared-mmap'able. Snapshot files are immutable per nodeid:
 * keep_cache. Snapshot handles pin their generation. */
#include "stillfs.h"
#include "fusecompat.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static struct fh *fh_of(struct fuse_file_info *fi)
{
	return (struct fh *)(uintptr_t)fi->fh;
}

/* Every open handle: one the kernel never released (a file still open when the session ended,
 * after a lazy unmount) stays reachable at exit instead of looking like a leak. */
static struct sf_link fh_all = { &fh_all, &fh_all };
static pthread_mutex_t fh_mu = PTHREAD_MUTEX_INITIALIZER;

static void fh_link(struct fh *h)
{
	pthread_mutex_lock(&fh_mu);
	sf_link_in(&fh_all, &h->all);
	pthread_mutex_unlock(&fh_mu);
}

static void fh_unlink(struct fh *h)
{
	pthread_mutex_lock(&fh_mu);
	sf_link_out(&h->all);
	pthread_mutex_unlock(&fh_mu);
}

/* The status files are world-readable; the last error's message, which may name a file in a
 * private directory, is shown in full only to root and the store's owner. */
static char *fh_status_text(fuse_req_t req, const struct node *n, size_t *len)
{
	uid_t uid = fuse_req_ctx(req)->uid;
	struct stat st;
	int detailed = uid == 0 || (fstat(sf.storefd, &st) == 0 && st.st_uid == uid);
	char *text = ob_status(detailed, n == &sf.status_json, len), *out = NULL;
	if (!text || n == &sf.status_json || !hp_is_helper(fuse_req_ctx(req)->pid))
		return text;
	/* To the capture helper alone (cap_opts.writeback_inodes): the files open for writing
	 * without passthrough, whose stores through a shared mapping may wait in the mount's
	 * page cache. */
	FILE *f = open_memstream(&out, len);
	if (!f) {
		free(text);
		return NULL;
	}
	fputs(text, f);
	free(text);
	fputs("writeback_inodes:", f);
	pthread_mutex_lock(&fh_mu);
	for (struct sf_link *l = fh_all.next; l != &fh_all; l = l->next) {
		struct fh *h = (struct fh *)((char *)l - offsetof(struct fh, all));
		if (h->wb_counted)
			fprintf(f, " %llu", (unsigned long long)h->node->ino);
	}
	pthread_mutex_unlock(&fh_mu);
	fputc('\n', f);
	if (fclose(f)) {
		free(out);
		return NULL;
	}
	return out;
}

/* A live file opened for a caller, never waiting for a lease: an open that conflicts with a
 * lease (F_SETLEASE, which a file's owner may take) would hold this thread until the holder
 * let go or lease-break-time (45 s) passed, and a user holding a lease on a file of theirs
 * while opening it through the mount many times over would hold every request thread, and
 * stall the mount for everyone. The caller gets EWOULDBLOCK at once (as with O_NONBLOCK),
 * and the holder is told to let go. O_NONBLOCK is then cleared unless the caller asked. */
static int fh_open_nowait(int (*op)(void *, int), void *arg, int flags)
{
	int fd = op(arg, flags | O_NONBLOCK);
	if (fd >= 0 && !(flags & O_NONBLOCK))
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

static int fh_reopen_op(void *n, int flags)
{
	return nd_reopen(n, flags);
}

static int fh_procopen_op(void *path, int flags)
{
	int fd = openat(sf.procfd, path, flags | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* Everything a handle holds besides its memory: descriptor, pin, WAL-index count. */
static void fh_close(fuse_req_t req, struct fh *h)
{
	fh_unlink(h);
	pt_detach(req, h);
	if (h->fd >= 0)
		close(h->fd);
	sf_fd_uncharge(h->uid);
	if (h->node->kind == ND_SNAP)
		gen_unpin_file(sf.gm, h->node->gen, (uint64_t)h->node->ino);
	if (h->shm_counted)
		atomic_fetch_sub(&sf.shm_handles, 1);
	if (h->wb_counted)
		atomic_fetch_sub(&sf.wb_handles, 1);
	free(h->text);
	free(h);
}

/* Open n for the caller, whose uid is charged for it already (sf_fd_charge). On success
 * *out holds a handle that fh_close undoes, the charge included. */
static int fh_make(fuse_req_t req, struct node *n, struct fuse_file_info *fi, int fd,
		   struct fh **out)
{
	struct fh *h = calloc(1, sizeof *h);
	int rc = 0;

	if (!h) {
		rc = -ENOMEM;
		goto fail;
	}
	h->node = n;
	h->uid = fuse_req_ctx(req)->uid;
	h->gid = fuse_req_ctx(req)->gid;
	h->fd = -1;
	h->writable = (fi->flags & O_ACCMODE) != O_RDONLY;
	switch (n->kind) {
	case ND_SNAPDIR:
		rc = -EISDIR;
		goto fail;
	case ND_STATUS:
		if ((fi->flags & O_ACCMODE) != O_RDONLY) {
			rc = -EROFS;
			goto fail;
		}
		if (!(h->text = fh_status_text(req, n, &h->len))) {
			rc = -ENOMEM;
			goto fail;
		}
		/* Made anew at each open and of no fixed size: bypass the page cache. */
		fi->direct_io = 1;
		break;
	case ND_SNAP:
		if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_APPEND))) {
			rc = -EROFS;
			goto fail;
		}
		if ((rc = gen_pin(sf.gm, n->gen, 1)))
			goto fail;
		h->fd = nd_reopen(n, O_RDONLY | (fi->flags & O_NONBLOCK));
		if (h->fd < 0) {
			rc = h->fd;
			gen_unpin(sf.gm, n->gen, 1);
			goto fail;
		}
		/* No data before the file's own second: its generation may date it ahead. */
		struct stat st;
		gen_hold_reads(n->gen, fstat(h->fd, &st) == 0 ? (int64_t)st.st_mtime : INT64_MAX);
		fi->keep_cache = 1;
		break;
	case ND_LIVE:
		if (fd >= 0) {
			h->fd = fd;
		} else {
			/* O_DIRECT would impose alignment on our buffers; the kernel side already
			 * bypasses its cache for such opens. */
			h->fd = fh_open_nowait(fh_reopen_op, n,
					       fi->flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_NOCTTY |
							     O_DIRECT));
			if (h->fd < 0) {
				rc = h->fd;
				goto fail;
			}
		}
		break;
	}
	fi->fh = (uintptr_t)h;
	fh_link(h);
	*out = h;
	return 0;
fail:
	free(h);
	return rc;
}

/* How the kernel will serve h (passthru.c); returns the backing id for the reply. An SQLite
 * WAL index mapped without passthrough lives in the mount's page cache, not the store's: the
 * capture helper must then read databases through the mount (hp_capture). So do stores through
 * any shared mapping of a file opened for writing without passthrough, until the kernel writes
 * them back: the helper must then have the mount to write them back. */
static int fh_attach(fuse_req_t req, struct fh *h, struct fuse_file_info *fi)
{
	int id = pt_attach(req, h->node, h, fi);
	if (h->node->kind == ND_LIVE && h->node->is_shm && h->pt != PT_BACKED) {
		atomic_fetch_add(&sf.shm_handles, 1);
		h->shm_counted = 1;
	}
	if (h->node->kind == ND_LIVE && h->writable && h->pt != PT_BACKED) {
		atomic_fetch_add(&sf.wb_handles, 1);
		pthread_mutex_lock(&fh_mu);    /* fh_status_text lists them */
		h->wb_counted = 1;
		pthread_mutex_unlock(&fh_mu);
	}
	return id;
}

static void fh_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = nd_of(ino);
	uid_t uid = fuse_req_ctx(req)->uid;
	struct fh *h;
	int rc = nd_check(n);

	if (!rc && (n->kind == ND_SNAPDIR || (n->kind != ND_STATUS && S_ISDIR(n->type))))
		rc = -EISDIR;
	/* The kernel opens special files itself; an open of a FIFO here could hold this thread. */
	else if (!rc && n->kind == ND_LIVE && !S_ISREG(n->type))
		rc = -ENXIO;
	/* A live file is opened as the caller: the store's own permission checks apply. */
	if (!rc && !(rc = sf_fd_charge(uid))) {
		if (!(rc = n->kind == ND_LIVE ? op_cred_take(req) : 0)) {
			rc = fh_make(req, n, fi, -1, &h);
			op_cred_drop();
			if (!rc && (fi->flags & O_TRUNC))
				op_kill_suidgid(n, h->fd);
		}
		if (rc)
			sf_fd_uncharge(uid);
	}
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	rc = fc_reply_open(req, fi, fh_attach(req, h, fi));
	if (rc != 0)
		fh_close(req, h);       /* interrupted: no release will come */
}

/* O_CREAT of a name that exists after all (the store changed while the kernel remembered it
 * missing): open it only if it is a regular file, never through a symlink, never a FIFO that
 * would hold this thread or a device. Called with the caller's credentials, p pinned. */
static int fh_open_existing(const struct node *p, const char *name, int flags)
{
	char path[32];
	struct stat st;
	int fd, pfd = openat(p->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);

	if (pfd < 0)
		return -errno;
	if (fstat(pfd, &st) < 0)
		fd = -errno;
	else if (!S_ISREG(st.st_mode))
		fd = S_ISLNK(st.st_mode) ? -ELOOP : S_ISDIR(st.st_mode) ? -EISDIR : -ENXIO;
	else {
		/* Reopen the inode we checked, not the name again. */
		snprintf(path, sizeof path, "%d", pfd);
		fd = fh_open_nowait(fh_procopen_op, path,
				    flags & ~(O_CREAT | O_EXCL | O_NOFOLLOW | O_DIRECT | O_NOCTTY));
	}
	close(pfd);
	return fd;
}

/* Create parent/name as the caller: the kernel makes the file the caller's, with the set-ID
 * bits it allows, and nothing is changed afterwards by name. */
static void fh_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct node *p = nd_of(parent);
	uid_t uid = fuse_req_ctx(req)->uid;
	struct fuse_entry_param e;
	struct stat st;
	struct fh *h;
	int fd = -1, rc = 0, charged = 0;

	if (p->kind == ND_SNAP || p->kind == ND_SNAPDIR)
		rc = -EROFS;
	else if (p->kind == ND_STATUS || !S_ISDIR(p->type))
		rc = -ENOTDIR;
	else if (p == &sf.root && sf_reserved(name))
		rc = -EEXIST;
	/* Like open(2) at its descriptor limit, fail before the file is made. */
	if (rc || (rc = sf_fd_charge(uid)))
		goto out;
	charged = 1;
	if ((rc = nd_pin(p)))
		goto out;
	if ((rc = op_cred_take(req))) {
		nd_unpin(p);
		goto out;
	}
	fd = openat(p->fd, name, (fi->flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC) & ~O_DIRECT,
		    mode & 07777);
	if (fd < 0)
		fd = errno == EEXIST && !(fi->flags & O_EXCL) ? fh_open_existing(p, name, fi->flags)
							       : -errno;
	op_cred_drop();
	nd_unpin(p);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	if ((rc = nd_lookup(p, name, &e)))
		goto out;
	/* The name may name another file by now: the handle and the entry must be one file. */
	if (fstat(fd, &st) < 0 || !ut_same_file(&st, &e.attr)) {
		nd_forget(nd_of(e.ino), 1);
		rc = -ESTALE;
		goto out;
	}
	if ((rc = fh_make(req, nd_of(e.ino), fi, fd, &h))) {
		nd_forget(nd_of(e.ino), 1);
		goto out;
	}
	if (fi->flags & O_TRUNC)
		op_kill_suidgid(h->node, h->fd);   /* an existing file (fh_open_existing) */
	rc = fc_reply_create(req, &e, fi, fh_attach(req, h, fi));
	if (rc != 0)
		fh_close(req, h);
	return;
out:
	if (charged)
		sf_fd_uncharge(uid);
	if (fd >= 0)
		close(fd);
	fuse_reply_err(req, -rc);
}

static void fh_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fh *h = fh_of(fi);
	if (h->text) {
		size_t start = (size_t)off < h->len ? (size_t)off : h->len;
		size_t n = h->len - start < size ? h->len - start : size;
		fuse_reply_buf(req, h->text + start, n);
		return;
	}
	/* Hand the kernel a descriptor: libfuse splices from it when the kernel allows. */
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = h->fd;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static void fh_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
			 struct fuse_file_info *fi)
{
	struct fh *h = fh_of(fi);
	if (h->node->kind != ND_LIVE) {
		fuse_reply_err(req, EROFS);
		return;
	}
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = h->fd;
	out.buf[0].pos = off;
	/* As the caller: a file system lets root's file-system uid write into the blocks it
	 * keeps for root (ext4's reserve), which no user may fill. Pages written back from the
	 * mount's page cache (a shared mapping of a file without a backing file) come from the
	 * kernel itself, with no process and root's ids: as the opener of the handle the kernel
	 * chose for them, or a user's mapping could fill the reserve. */
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	int rc = ctx->pid == 0 && ctx->uid == 0 ? op_cred_take_ids_of(h->uid, h->gid)
						  : op_cred_take_ids(req);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	ssize_t n = fuse_buf_copy(&out, in, 0);
	op_cred_drop();
	if (n > 0)
		op_kill_suidgid(h->node, h->fd);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

static void fh_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fh *h = fh_of(fi);
	int rc = 0;
	/* flush comes with every close(2): that is when POSIX drops the closer's locks. */
	lk_drop_owner(h->node, fi->lock_owner);
	if (h->node->kind == ND_LIVE && h->writable) {
		/* Report the backing close's errors (e.g. a network store's delayed ENOSPC; a
		 * descriptor that wrote nothing has none). Our own descriptors hold no POSIX
		 * locks (only OFD ones), so this drops nothing. */
		int fd = dup(h->fd);
		if (fd < 0 || close(fd) < 0)
			rc = errno;
	}
	fuse_reply_err(req, rc);
}

static void fh_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fh *h = fh_of(fi);
	if (fi->flock_release && h->fd >= 0)
		flock(h->fd, LOCK_UN);
	lk_drop_handle(h->node, h);
	fh_close(req, h);
	fuse_reply_err(req, 0);
}

static void fh_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fh *h = fh_of(fi);
	int rc = 0;
	if (h->node->kind == ND_LIVE && (datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0)
		rc = errno;
	fuse_reply_err(req, rc);
}

static void fh_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct fh *h = fh_of(fi);
	int rc = 0;
	if (h->node->kind != ND_LIVE)
		rc = EROFS;
	else if (!(rc = -op_cred_take_ids(req))) { /* as fh_write_buf: no reserved blocks */
		if (fallocate(h->fd, mode, off, len) < 0)
			rc = errno;
		op_cred_drop();
	}
	fuse_reply_err(req, rc);
}

static void fh_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len, int flags)
{
	struct fh *in = fh_of(fi_in), *out = fh_of(fi_out);
	if (out->node->kind != ND_LIVE || in->text) {
		fuse_reply_err(req, out->node->kind != ND_LIVE ? EROFS : EOPNOTSUPP);
		return;
	}
	int rc = op_cred_take_ids(req);        /* as fh_write_buf: no reserved blocks */
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	ssize_t n = copy_file_range(in->fd, &off_in, out->fd, &off_out, len, (unsigned)flags);
	rc = errno;
	op_cred_drop();
	if (n < 0)
		fuse_reply_err(req, rc);
	else
		fuse_reply_write(req, (size_t)n);
}

static void fh_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct fh *h = fh_of(fi);
	if (h->text) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	off_t r = lseek(h->fd, off, whence);
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, r);
}

void fh_register(struct fuse_lowlevel_ops *ops)
{
	ops->open = fh_open;
	ops->create = fh_create;
	ops->read = fh_read;
	ops->write_buf = fh_write_buf;
	ops->flush = fh_flush;
	ops->release = fh_release;
	ops->fsync = fh_fsync;
	ops->fallocate = fh_fallocate;
	ops->copy_file_range = fh_copy_file_range;
	ops->lseek = fh_lseek;
}
