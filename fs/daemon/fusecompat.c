/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libfuse beyond 3.14: passthrough and raw notifications (see fusecompat.h).
 *
 * With libfuse < 3.17, passthrough is spoken on the wire, through libfuse's custom I/O hooks:
 *  - fc_read sees every request; an INIT whose kernel offers FUSE_PASSTHROUGH marks the
 *    thread, and fc_writev adds the flag and a stacking depth to libfuse's INIT reply.
 *  - fc_reply_open/create arm the thread with the backing id just around fuse_reply_open/
 *    create; fc_writev sets FOPEN_PASSTHROUGH and the id in the fuse_open_out that libfuse
 *    writes, which is always the last 16 bytes of the reply's argument (open: the whole of
 *    it; create: after the fuse_entry_out).
 * Reply and request paths of libfuse run in the thread that handles the request, which is what
 * makes thread-local marks correct. Anything unexpected leaves the reply as libfuse made it.
 *
 * Whatever the version, the hooks are installed: see fc_setup on the descriptor's number. */
#include "fusecompat.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

static int fc_devfd = -1;
static int fc_wanted;
static atomic_int fc_active;                /* negotiated and not given up */
static atomic_int fc_kp2;                   /* FUSE_HANDLE_KILLPRIV_V2 negotiated */
static _Thread_local int fc_kill;          /* the request being served asks for a kill */

/* ---- the protocol, where libfuse does not speak it ---------------------------------------- */

/* Constants of linux/fuse.h 7.40 and later, absent from libfuse 3.14's headers. */
#define FC_OP_SETATTR 4
#define FC_OP_OPEN 14
#define FC_OP_WRITE 16
#define FC_OP_INIT 26
#define FC_OP_CREATE 35
#define FC_HANDLE_KILLPRIV_V2 (1U << 28)  /* INIT flags (7.33) */
#define FC_WRITE_KILL_SUIDGID (1U << 2)   /* fuse_write_in.write_flags */
#define FC_FATTR_KILL_SUIDGID (1U << 11)  /* fuse_setattr_in.valid */
#define FC_OPEN_KILL_SUIDGID (1U << 0)    /* fuse_open_in/fuse_create_in.open_flags */
#define FC_INIT_EXT (1U << 30)            /* flags: flags2 is valid */
#define FC_FLAGS2_PASSTHROUGH (1U << 5)   /* FUSE_PASSTHROUGH is 1 << 37 */
#define FC_FOPEN_PASSTHROUGH (1U << 7)
#define FC_IN_HEADER 40                   /* sizeof(struct fuse_in_header) */
#define FC_OUT_HEADER 16                  /* sizeof(struct fuse_out_header) */
#define FC_OPEN_OUT 16                    /* sizeof(struct fuse_open_out) */
#define FC_NOTIFY_INC_EPOCH 8
#define FC_NOTIFY_PRUNE 9

struct fc_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};

#define FC_IOC_BACKING_OPEN _IOW(229, 1, struct fc_backing_map)
#define FC_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

/* A notification as the kernel reads it from /dev/fuse: header, then up to two parts. */
static int fc_notify_raw(struct fuse_session *se, int code, const void *a, size_t alen,
			 const void *b, size_t blen)
{
	struct {
		uint32_t len;
		int32_t error;
		uint64_t unique;
	} hdr = { (uint32_t)(sizeof hdr + alen + blen), code, 0 };
	struct iovec iov[3] = { { &hdr, sizeof hdr }, { (void *)a, alen }, { (void *)b, blen } };
	return writev(fuse_session_fd(se), iov, 3) < 0 ? -errno : 0;
}

#if !FC_LIBFUSE_PASSTHROUGH

struct fc_init_in {
	uint32_t major, minor, max_readahead, flags, flags2;
};

struct fc_init_out {
	uint32_t major, minor, max_readahead, flags;
	uint16_t max_background, congestion_threshold;
	uint32_t max_write, time_gran;
	uint16_t max_pages, map_alignment;
	uint32_t flags2, max_stack_depth;
};

struct fc_open_out {
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;
};

static _Thread_local int fc_init_offered;  /* this thread is answering a passthrough INIT */
static _Thread_local int fc_init_kp2;      /* ... one that offers FUSE_HANDLE_KILLPRIV_V2 */
static _Thread_local int fc_armed;         /* backing id for the open reply being sent */

static void fc_see_request(const void *buf, ssize_t n)
{
	uint32_t op;
	struct fc_init_in in;
	if (n < (ssize_t)(FC_IN_HEADER + sizeof in))
		return;
	memcpy(&op, (const char *)buf + 4, sizeof op);
	if (op != FC_OP_INIT)
		return;
	memcpy(&in, (const char *)buf + FC_IN_HEADER, sizeof in);
	fc_init_offered = fc_wanted && (in.flags & FC_INIT_EXT) &&
			  (in.flags2 & FC_FLAGS2_PASSTHROUGH);
	fc_init_kp2 = (in.flags & FC_HANDLE_KILLPRIV_V2) != 0;
}

static void fc_patch_init(struct iovec *iov, int count, int passthrough, int kp2)
{
	if (count < 2 || iov[1].iov_len < sizeof(struct fc_init_out))
		return;
	struct fc_init_out out;
	memcpy(&out, iov[1].iov_base, sizeof out);
	if (out.major != 7)
		return;
	if (kp2) {
		out.flags |= FC_HANDLE_KILLPRIV_V2;
		atomic_store(&fc_kp2, 1);
	}
	if (passthrough) {
		out.flags |= FC_INIT_EXT;
		out.flags2 |= FC_FLAGS2_PASSTHROUGH;
		/* Backing files on a plain filesystem (depth 0); stacking one more on us stays
		 * legal. */
		out.max_stack_depth = 1;
		atomic_store(&fc_active, 1);
	}
	memcpy(iov[1].iov_base, &out, sizeof out);
}

static void fc_patch_open(struct iovec *iov, int count, int id)
{
	if (count != 2 || iov[1].iov_len < FC_OPEN_OUT)
		return;
	char *p = (char *)iov[1].iov_base + iov[1].iov_len - FC_OPEN_OUT;
	struct fc_open_out o;
	memcpy(&o, p, sizeof o);
	o.open_flags |= FC_FOPEN_PASSTHROUGH;
	o.backing_id = id;
	memcpy(p, &o, sizeof o);
}

static void fc_see_reply(struct iovec *iov, int count)
{
	int32_t error = -1;
	if (count >= 1 && iov[0].iov_len >= FC_OUT_HEADER)
		memcpy(&error, (char *)iov[0].iov_base + 4, sizeof error);
	if (fc_init_offered || fc_init_kp2) {
		if (error == 0)
			fc_patch_init(iov, count, fc_init_offered, fc_init_kp2);
		fc_init_offered = fc_init_kp2 = 0;
	}
	if (fc_armed > 0 && error == 0)
		fc_patch_open(iov, count, fc_armed);
	fc_armed = 0;
}

void fc_init(struct fuse_conn_info *conn)
{
	(void)conn;   /* negotiated on the wire (fc_see_request, fc_see_reply) */
}

static int fc_backing_open_id(fuse_req_t req, int fd)
{
	struct fc_backing_map map = { .fd = fd };
	(void)req;
	int id = ioctl(fc_devfd, FC_IOC_BACKING_OPEN, &map);
	return id > 0 ? id : -errno;
}

void fc_backing_close(fuse_req_t req, int id)
{
	uint32_t u = (uint32_t)id;
	(void)req;
	if (ioctl(fc_devfd, FC_IOC_BACKING_CLOSE, &u) < 0)
		log_warn("passthrough: closing backing %d: %s", id, strerror(errno));
}

int fc_reply_open(fuse_req_t req, struct fuse_file_info *fi, int id)
{
	fc_armed = id;
	int rc = fuse_reply_open(req, fi);
	fc_armed = 0;
	return rc;
}

int fc_reply_create(fuse_req_t req, const struct fuse_entry_param *e,
		    struct fuse_file_info *fi, int id)
{
	fc_armed = id;
	int rc = fuse_reply_create(req, e, fi);
	fc_armed = 0;
	return rc;
}

#else /* libfuse >= 3.17 speaks passthrough itself */

static void fc_see_request(const void *buf, ssize_t n)
{
	(void)buf;
	(void)n;
}

static void fc_see_reply(struct iovec *iov, int count)
{
	(void)iov;
	(void)count;
}

void fc_init(struct fuse_conn_info *conn)
{
#ifdef FUSE_CAP_HANDLE_KILLPRIV_V2
	if (conn->capable & FUSE_CAP_HANDLE_KILLPRIV_V2) {
		conn->want |= FUSE_CAP_HANDLE_KILLPRIV_V2;
		atomic_store(&fc_kp2, 1);
	}
#endif
	if (!fc_wanted || !(conn->capable & FUSE_CAP_PASSTHROUGH))
		return;
	conn->want |= FUSE_CAP_PASSTHROUGH;
	/* Backing files on a plain filesystem (depth 0); libfuse adds one for us, so stacking
	 * one more on us stays legal. */
	conn->max_backing_stack_depth = 0;
	atomic_store(&fc_active, 1);
}

static int fc_backing_open_id(fuse_req_t req, int fd)
{
	/* 0 on failure, errno as the ioctl left it (libfuse only logs it). */
	errno = 0;
	int id = fuse_passthrough_open(req, fd);
	return id > 0 ? id : errno ? -errno : -EIO;
}

void fc_backing_close(fuse_req_t req, int id)
{
	fuse_passthrough_close(req, id);  /* logs a failure itself */
}

int fc_reply_open(fuse_req_t req, struct fuse_file_info *fi, int id)
{
	fi->backing_id = id;
	return fuse_reply_open(req, fi);
}

int fc_reply_create(fuse_req_t req, const struct fuse_entry_param *e,
		    struct fuse_file_info *fi, int id)
{
	fi->backing_id = id;
	return fuse_reply_create(req, e, fi);
}

#endif

/* ---- either way --------------------------------------------------------------------------- */

/* Whether the request just read asks the file system to clear set-ID bits: the kernel says so
 * when FUSE_HANDLE_KILLPRIV_V2 is negotiated and the caller has no CAP_FSETID, for a write, a
 * truncate (setattr of the size) and an open or create with O_TRUNC. libfuse (to 3.18 at
 * least) hands these flags to no operation but setattr, so they are read off the request
 * here, in the thread that will serve it. */
static void fc_see_kill(const void *buf, ssize_t n)
{
	uint32_t op, v = 0;
	size_t at;

	fc_kill = 0;
	if (n < FC_IN_HEADER)
		return;
	memcpy(&op, (const char *)buf + 4, sizeof op);
	switch (op) {
	case FC_OP_WRITE:    /* fuse_write_in: fh, offset, size, write_flags */
		at = 20;
		v = FC_WRITE_KILL_SUIDGID;
		break;
	case FC_OP_SETATTR:  /* fuse_setattr_in: valid */
		at = 0;
		v = FC_FATTR_KILL_SUIDGID;
		break;
	case FC_OP_OPEN:     /* fuse_open_in: flags, open_flags */
		at = 4;
		v = FC_OPEN_KILL_SUIDGID;
		break;
	case FC_OP_CREATE:   /* fuse_create_in: flags, mode, umask, open_flags */
		at = 12;
		v = FC_OPEN_KILL_SUIDGID;
		break;
	default:
		return;
	}
	uint32_t w;
	if (n < (ssize_t)(FC_IN_HEADER + at + sizeof w))
		return;
	memcpy(&w, (const char *)buf + FC_IN_HEADER + at, sizeof w);
	fc_kill = (w & v) != 0;
}

static ssize_t fc_read(int fd, void *buf, size_t len, void *ud)
{
	(void)ud;
	ssize_t n = read(fd, buf, len);
	fc_see_kill(buf, n);
	fc_see_request(buf, n);
	return n;
}

static ssize_t fc_writev(int fd, struct iovec *iov, int count, void *ud)
{
	(void)ud;
	fc_see_reply(iov, count);
	return writev(fd, iov, count);
}

static ssize_t fc_splice_receive(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
				 unsigned int flags, void *ud)
{
	(void)ud;
	return splice(fdin, offin, fdout, offout, len, flags);
}

static ssize_t fc_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			      unsigned int flags, void *ud)
{
	(void)ud;
	return splice(fdin, offin, fdout, offout, len, flags);
}

int fc_setup(struct fuse_session *se, int passthrough, int above)
{
	static const struct fuse_custom_io io = {
		.read = fc_read,
		.writev = fc_writev,
		.splice_receive = fc_splice_receive,
		.splice_send = fc_splice_send,
	};
	int fd = fuse_session_fd(se);
	fc_wanted = passthrough;
	/* fusermount3 (auto_unmount) unmounts when the last descriptor of its socket closes, but
	 * only if opening the mountpoint then fails with ENOTCONN: the connection must be aborted
	 * by then, which the close of /dev/fuse's last descriptor does. A killed daemon's
	 * descriptors are closed in increasing order, but their files are released afterwards in
	 * the reverse order (the exiting task's deferred work runs last-queued first), with time
	 * in between on a loaded machine. With /dev/fuse below the socket, fusermount3 could wake
	 * and open the mountpoint first; its request then failed with ECONNABORTED and the dead
	 * mount stayed. So /dev/fuse moves above the socket, and takes custom I/O there. */
	if (above >= fd) {
		int moved = fcntl(fd, F_DUPFD_CLOEXEC, above + 1);
		if (moved >= 0) {
			close(fd);
			fd = moved;
		}
	}
	fc_devfd = fd;
	if (fuse_session_custom_io(se, &io, fd) != 0) {
		log_warn("libfuse refused custom I/O: no passthrough");
		fc_wanted = 0;
		return -1;
	}
	return 0;
}

int fc_killpriv_v2(void)
{
	return atomic_load(&fc_kp2);
}

int fc_kill_suidgid(void)
{
	return fc_kill;
}

int fc_passthrough(void)
{
	return atomic_load(&fc_active);
}

int fc_backing_open(fuse_req_t req, int fd)
{
	int id = fc_backing_open_id(req, fd);
	/* The refusals that will not change for this mount: no CAP_SYS_ADMIN, no kernel
	 * support. Stop trying. */
	if ((id == -EPERM || id == -ENOTTY || id == -EINVAL) && atomic_exchange(&fc_active, 0))
		log_info("passthrough unavailable (%s); reads go through the daemon", strerror(-id));
	return id;
}

int fc_notify_inc_epoch(struct fuse_session *se)
{
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 18)
	return fuse_lowlevel_notify_increment_epoch(se);
#else
	return fc_notify_raw(se, FC_NOTIFY_INC_EPOCH, NULL, 0, NULL, 0);
#endif
}

int fc_notify_prune(struct fuse_session *se, const uint64_t *ids, uint32_t n)
{
	struct {
		uint32_t count, padding;
		uint64_t spare;
	} arg = { n, 0, 0 };
	return fc_notify_raw(se, FC_NOTIFY_PRUNE, &arg, sizeof arg, ids, n * sizeof ids[0]);
}
