/* SPDX-License-Identifier: GPL-2.0-or-later */
/* FUSE passthrough: reads, writes and mmap of open files served by the kernel from the
 * backing file, without a round trip through this daemon (Linux 6.9). How it is negotiated
 * and put in replies depends on the libfuse version and lives in fusecompat.c; this is the
 * policy of which opens get it.
 *
 * The kernel allows one backing file per inode at a time, and refuses to mix passthrough and
 * page-cached (or direct_io) opens of an inode. So a node holds one backing id while any of
 * its handles uses it (pt_users) and counts its cached handles (pt_other); a node with cached
 * handles gets cached opens. A live file's backing is opened read-write whenever it can be
 * (pt_backing_open), so that later writers can share it; one that could only be opened
 * read-only (a running executable, a read-only or immutable file) gives a later writer a
 * direct_io open, which the kernel may refuse. Anything unexpected leaves the open as it
 * would be without passthrough. */
#include "stillfs.h"
#include "fusecompat.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <unistd.h>

static pthread_mutex_t pt_mu = PTHREAD_MUTEX_INITIALIZER;

static int pt_covers(int have, int want)
{
	return have == O_RDWR || have == want;
}

/* A backing file for n with access mode acc, widened to O_RDWR for a live file whenever
 * possible: the kernel refuses every open of an inode that is not passthrough of the same
 * backing while one is (Linux 6.9-6.18 at least: EIO, even for direct_io), so a backing
 * opened read-only would make every later open for writing fail for as long as a reader
 * kept the file open - any user who may read a database could stop its writers. Each open
 * file still reads and writes only as its own access mode allows (the kernel checks it on
 * the FUSE file, and the caller's open was checked with their credentials). Returns the id
 * or -errno. */
static int pt_backing_open(fuse_req_t req, struct node *n, int *acc)
{
	int fd = -EINVAL;
	if (*acc != O_RDONLY || n->kind == ND_LIVE) {
		/* O_NONBLOCK, here and below: a lease on the file (its owner may take one)
		 * fails the open at once instead of holding this thread until the lease is
		 * broken (see fh_open_nowait). */
		fd = nd_reopen(n, O_RDWR | O_NONBLOCK);
		if (fd >= 0) {
			*acc = O_RDWR;
			fcntl(fd, F_SETFL, 0);
		}
	}
	if (fd < 0 && (fd = nd_reopen(n, *acc | O_NONBLOCK)) >= 0)
		fcntl(fd, F_SETFL, 0);
	if (fd < 0)
		return fd;
	/* The kernel writes through the backing file with the credentials of the thread that
	 * registers it, for every handle that shares it, whoever opened that handle: never
	 * root's file-system ids, which may write into the blocks a file system keeps for root
	 * (ext4's reserve), which no user may fill. The overflow ids (nobody) instead: the
	 * writes need no permission of their own (each handle was opened as its caller). */
	uid_t fsuid = (uid_t)setfsuid((uid_t)-1);
	gid_t fsgid = (gid_t)setfsgid((gid_t)-1);
	if (fsuid == 0) {
		setfsgid(65534);
		setfsuid(65534);
	}
	int id = fc_backing_open(req, fd);
	if (fsuid == 0) {
		setfsuid(fsuid);
		setfsgid(fsgid);
	}
	close(fd);
	return id;
}

/* A live executable is not given a backing file (its opens are page-cached, served by the
 * daemon): the backing is opened read-write (pt_backing_open), and a file open for writing
 * cannot be run (ETXTBSY), so a reader holding it open would stop everyone from running it.
 * Nor is a set-ID file: a write through a backing file has the overflow ids' credentials,
 * without CAP_FSETID, so the file system would clear the bits even for a root writer, which
 * keeps them on a local file system; served by the daemon, a write has the caller's. */
static int pt_executable(const struct fh *h)
{
	struct stat st;
	return fstat(h->fd, &st) < 0 || (st.st_mode & (0111 | S_ISUID | S_ISGID));
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
	} else if (n->pt_other == 0 && !n->pt_failed &&
		   !(n->kind == ND_LIVE && pt_executable(h))) {
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
