/* SPDX-License-Identifier: GPL-2.0-or-later */
/* FUSE passthrough: reads, writes and mmap of open files served by the kernel from the
 * backing file, without a round trip through this daemon (Linux 6.9). How it is negotiated
 * and put in replies depends on the libfuse version and lives in fusecompat.c; this is the
 * policy of which opens get it.
 *
 * The kernel allows one backing file per inode at a time, and refuses to mix passthrough and
 * page-cached opens of an inode. So a node holds one backing id while any of its handles
 * uses it (pt_users) and counts its cached handles (pt_other); a node with cached handles
 * gets cached opens, one with passthrough handles whose backing lacks the access mode asked
 * for gets a direct_io open (the kernel allows those beside passthrough ones). Anything
 * unexpected leaves the open as it would be without passthrough. */
#include "stillfs.h"
#include "fusecompat.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t pt_mu = PTHREAD_MUTEX_INITIALIZER;

static int pt_covers(int have, int want)
{
	return have == O_RDWR || have == want;
}

/* A backing file for n with access mode acc (O_WRONLY is widened to O_RDWR when possible:
 * a later reader could not share a write-only backing). Returns its id or -errno. */
static int pt_backing_open(fuse_req_t req, struct node *n, int *acc)
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
	int id = fc_backing_open(req, fd);
	close(fd);
	return id;
}

int pt_attach(fuse_req_t req, struct node *n, struct fh *h, struct fuse_file_info *fi)
{
	int acc = fi->flags & O_ACCMODE, id = 0;

	h->pt = PT_NONE;
	if (!fc_passthrough() || !S_ISREG(n->type) || h->fd < 0 ||
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
		id = pt_backing_open(req, n, &acc);
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

void pt_detach(fuse_req_t req, struct fh *h)
{
	struct node *n = h->node;
	if (h->pt == PT_NONE)
		return;
	pthread_mutex_lock(&pt_mu);
	if (h->pt == PT_CACHED) {
		n->pt_other--;
	} else if (--n->pt_users == 0) {
		fc_backing_close(req, n->pt_id);
		n->pt_id = 0;
	}
	pthread_mutex_unlock(&pt_mu);
	h->pt = PT_NONE;
}
