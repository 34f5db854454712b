/* SPDX-License-Identifier: GPL-2.0-or-later */
/* FUSE passthrough: reads, writes and mmap of open files served by the kernel from the
 * backing file, without a round trip through this daemon.
 *
 * The kernel has it since 6.9 (FUSE_PASSTHROUGH); Debian 12's libfuse 3.14 predates it and
 * can negotiate neither the INIT flag nor an open reply's backing id. Both are plain fields
 * of the protocol, so this module speaks them itself, through libfuse's custom I/O hooks:
 *
 *  - pt_read sees every request; an INIT whose kernel offers FUSE_PASSTHROUGH marks the
 *    thread, and pt_writev adds the flag and a stacking depth to libfuse's INIT reply.
 *  - fh_open registers the backing file with FUSE_DEV_IOC_BACKING_OPEN and arms the thread
 *    (pt_arm) just before fuse_reply_open/create; pt_writev sets FOPEN_PASSTHROUGH and the
 *    id in the fuse_open_out that libfuse writes, which is always the last 16 bytes of the
 *    reply's argument (open: the whole of it; create: after the fuse_entry_out).
 *
 * The kernel allows one backing file per inode at a time, and refuses to mix passthrough and
 * page-cached opens of an inode. So a node holds one backing id while any of its handles
 * uses it (pt_users) and counts its cached handles (pt_other); a node with cached handles
 * gets cached opens, one with passthrough handles whose backing lacks the access mode asked
 * for gets a direct_io open (the kernel allows those beside passthrough ones). Reply and
 * request paths of libfuse run in the thread that handles the request, which is what makes
 * thread-local marks correct. Anything unexpected leaves the open as it would be without
 * passthrough. The hooks are installed even with passthrough off: see pt_setup on the
 * descriptor's number. */
#include "stillfs.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

/* Protocol constants (linux/fuse.h 7.40), absent from libfuse 3.14's headers. */
#define PT_OP_INIT 26
#define PT_INIT_EXT (1U << 30)            /* flags: flags2 is valid */
#define PT_FLAGS2_PASSTHROUGH (1U << 5)   /* FUSE_PASSTHROUGH is 1 << 37 */
#define PT_FOPEN_PASSTHROUGH (1U << 7)
#define PT_IN_HEADER 40                   /* sizeof(struct fuse_in_header) */
#define PT_OUT_HEADER 16                  /* sizeof(struct fuse_out_header) */
#define PT_OPEN_OUT 16                    /* sizeof(struct fuse_open_out) */

struct pt_init_in {
	uint32_t major, minor, max_readahead, flags, flags2;
};

struct pt_init_out {
	uint32_t major, minor, max_readahead, flags;
	uint16_t max_background, congestion_threshold;
	uint32_t max_write, time_gran;
	uint16_t max_pages, map_alignment;
	uint32_t flags2, max_stack_depth;
};

struct pt_open_out {
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;
};

struct pt_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};

#define PT_IOC_BACKING_OPEN _IOW(229, 1, struct pt_backing_map)
#define PT_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

static _Thread_local int pt_init_offered;  /* this thread is answering a passthrough INIT */
static _Thread_local int pt_armed;         /* backing id for the open reply being sent */
static int pt_devfd = -1;
static int pt_wanted;
static atomic_int pt_active;                /* negotiated and not given up */
static pthread_mutex_t pt_mu = PTHREAD_MUTEX_INITIALIZER;

static ssize_t pt_read(int fd, void *buf, size_t len, void *ud)
{
	(void)ud;
	ssize_t n = read(fd, buf, len);
	if (n >= (ssize_t)(PT_IN_HEADER + sizeof(struct pt_init_in))) {
		uint32_t op;
		memcpy(&op, (char *)buf + 4, sizeof op);
		if (op == PT_OP_INIT) {
			struct pt_init_in in;
			memcpy(&in, (char *)buf + PT_IN_HEADER, sizeof in);
			pt_init_offered = pt_wanted && (in.flags & PT_INIT_EXT) &&
					  (in.flags2 & PT_FLAGS2_PASSTHROUGH);
		}
	}
	return n;
}

static void pt_patch_init(struct iovec *iov, int count)
{
	if (count < 2 || iov[1].iov_len < sizeof(struct pt_init_out))
		return;
	struct pt_init_out out;
	memcpy(&out, iov[1].iov_base, sizeof out);
	if (out.major != 7)
		return;
	out.flags |= PT_INIT_EXT;
	out.flags2 |= PT_FLAGS2_PASSTHROUGH;
	/* Backing files on a plain filesystem (depth 0); stacking one more on us stays legal. */
	out.max_stack_depth = 1;
	memcpy(iov[1].iov_base, &out, sizeof out);
	atomic_store(&pt_active, 1);
}

static void pt_patch_open(struct iovec *iov, int count, int id)
{
	if (count != 2 || iov[1].iov_len < PT_OPEN_OUT)
		return;
	char *p = (char *)iov[1].iov_base + iov[1].iov_len - PT_OPEN_OUT;
	struct pt_open_out o;
	memcpy(&o, p, sizeof o);
	o.open_flags |= PT_FOPEN_PASSTHROUGH;
	o.backing_id = id;
	memcpy(p, &o, sizeof o);
}

static ssize_t pt_writev(int fd, struct iovec *iov, int count, void *ud)
{
	(void)ud;
	int32_t error = -1;
	if (count >= 1 && iov[0].iov_len >= PT_OUT_HEADER)
		memcpy(&error, (char *)iov[0].iov_base + 4, sizeof error);
	if (pt_init_offered) {
		pt_init_offered = 0;
		if (error == 0)
			pt_patch_init(iov, count);
	}
	if (pt_armed > 0 && error == 0)
		pt_patch_open(iov, count, pt_armed);
	pt_armed = 0;
	return writev(fd, iov, count);
}

static ssize_t pt_splice_receive(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
				 unsigned int flags, void *ud)
{
	(void)ud;
	return splice(fdin, offin, fdout, offout, len, flags);
}

static ssize_t pt_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			      unsigned int flags, void *ud)
{
	(void)ud;
	return splice(fdin, offin, fdout, offout, len, flags);
}

int pt_setup(struct fuse_session *se, int wanted, int slot)
{
	static const struct fuse_custom_io io = {
		.read = pt_read,
		.writev = pt_writev,
		.splice_receive = pt_splice_receive,
		.splice_send = pt_splice_send,
	};
	int fd = fuse_session_fd(se);
	pt_wanted = wanted;
	/* When the daemon dies, the kernel closes its descriptors in increasing order, and
	 * fusermount3 (auto_unmount) unmounts only if opening the mountpoint then fails with
	 * ENOTCONN. With /dev/fuse numbered above fusermount3's socket, fusermount3 can wake and
	 * open the mountpoint before the connection is aborted; its request then fails with
	 * ECONNABORTED and the dead mount stays. So /dev/fuse moves to a slot taken before the
	 * mount made that socket. */
	if (slot >= 0 && slot < fd && dup3(fd, slot, O_CLOEXEC) == slot) {
		close(fd);
		fd = slot;
	} else if (slot >= 0) {
		close(slot);
	}
	pt_devfd = fd;
	if (fuse_session_custom_io(se, &io, fd) != 0) {
		log_warn("libfuse refused custom I/O: no passthrough");
		pt_wanted = 0;
		return -1;
	}
	return 0;
}

int pt_enabled(void)
{
	return atomic_load(&pt_active);
}

static int pt_covers(int have, int want)
{
	return have == O_RDWR || have == want;
}

/* A backing file for n with access mode acc (O_WRONLY is widened to O_RDWR when possible:
 * a later reader could not share a write-only backing). Returns its id or -errno. */
static int pt_backing_open(struct node *n, int *acc)
{
	int fd = -EINVAL;
	if (*acc != O_RDONLY) {
		fd = nd_reopen(n, O_RDWR);
		if (fd >= 0)
			*acc = O_RDWR;
	}
	if (fd < 0)
		fd = nd_reopen(n, *acc);
	if (fd < 0)
		return fd;
	struct pt_backing_map map = { .fd = fd };
	int id = ioctl(pt_devfd, PT_IOC_BACKING_OPEN, &map);
	int err = errno;
	close(fd);
	if (id > 0)
		return id;
	if (err == EPERM || err == ENOTTY || err == EINVAL) {
		/* Not allowed (no CAP_SYS_ADMIN) or not there: stop trying for this mount. */
		if (atomic_exchange(&pt_active, 0))
			log_info("passthrough unavailable (%s); reads go through the daemon",
				 strerror(err));
	}
	return -err;
}

int pt_attach(struct node *n, struct fh *h, struct fuse_file_info *fi)
{
	int acc = fi->flags & O_ACCMODE, id = 0;

	h->pt = PT_NONE;
	if (!atomic_load(&pt_active) || !S_ISREG(n->type) || h->fd < 0 ||
	    (n->kind != ND_LIVE && n->kind != ND_SNAP))
		return 0;
	pthread_mutex_lock(&pt_mu);
	if (n->pt_users > 0) {
		if (pt_covers(n->pt_acc, acc)) {
			n->pt_users++;
			h->pt = PT_BACKED;
			id = n->pt_id;
		} else {
			/* The only kind of open the kernel takes beside passthrough ones. */
			fi->direct_io = 1;
		}
	} else if (n->pt_other == 0 && !n->pt_failed) {
		id = pt_backing_open(n, &acc);
		if (id > 0) {
			n->pt_id = id;
			n->pt_acc = acc;
			n->pt_users = 1;
			h->pt = PT_BACKED;
		} else {
			n->pt_failed = 1;  /* e.g. ELOOP on a stacked store: never mix modes */
			id = 0;
		}
	}
	if (h->pt == PT_NONE && !fi->direct_io) {
		n->pt_other++;
		h->pt = PT_CACHED;
	}
	pthread_mutex_unlock(&pt_mu);
	if (h->pt == PT_BACKED)
		fi->keep_cache = 0;   /* no page cache of ours to keep */
	return id;
}

void pt_detach(struct fh *h)
{
	struct node *n = h->node;
	if (h->pt == PT_NONE)
		return;
	pthread_mutex_lock(&pt_mu);
	if (h->pt == PT_CACHED) {
		n->pt_other--;
	} else if (--n->pt_users == 0) {
		uint32_t id = (uint32_t)n->pt_id;
		if (ioctl(pt_devfd, PT_IOC_BACKING_CLOSE, &id) < 0)
			log_warn("passthrough: closing backing %u: %s", id, strerror(errno));
		n->pt_id = 0;
	}
	pthread_mutex_unlock(&pt_mu);
	h->pt = PT_NONE;
}

void pt_arm(int id)
{
	pt_armed = id;
}
