/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What the daemon needs of libfuse beyond the 3.14 API, behind one interface. Prefix: fc_.
 *
 * Two things are newer than Debian 12's libfuse 3.14:
 *  - FUSE passthrough (Linux 6.9): the INIT flag, the backing-file ioctls and an open reply's
 *    backing id. libfuse has them from 3.17 (fuse_passthrough_open/close, FUSE_CAP_PASSTHROUGH,
 *    fuse_file_info.backing_id); against an older one, fusecompat.c speaks these fields of the
 *    protocol itself, through libfuse's custom I/O hooks.
 *  - notifications libfuse has no call for: FUSE_NOTIFY_INC_EPOCH (libfuse 3.18 has one) and
 *    FUSE_NOTIFY_PRUNE (none yet), written to /dev/fuse as raw messages.
 * The choice is made at compile time from FUSE_VERSION; nothing else in the daemon depends on
 * the libfuse version. */
#ifndef STILLFS_FUSECOMPAT_H
#define STILLFS_FUSECOMPAT_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 314
#endif
#include <fuse_lowlevel.h>

#include <stddef.h>
#include <stdint.h>

/* 1 where libfuse itself negotiates passthrough and fills open replies (>= 3.17). */
#define FC_LIBFUSE_PASSTHROUGH (FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17))

/* After fuse_session_mount: move /dev/fuse to a descriptor above `above` (fusermount3's
 * socket, or -1) if it is not already, and install the I/O hooks (with an older libfuse they
 * also negotiate passthrough if `passthrough`). 0, or -1 if libfuse refused the hooks (no
 * passthrough then). */
int fc_setup(struct fuse_session *se, int passthrough, int above);
/* From the init operation: ask for passthrough if fc_setup was told to and the kernel offers
 * it (with an older libfuse, fc_setup's hooks do this on the wire instead). */
void fc_init(struct fuse_conn_info *conn);
/* 1 if FUSE_HANDLE_KILLPRIV_V2 is negotiated (whenever the kernel offers it, Linux 5.11):
 * the kernel then leaves clearing set-user-ID, set-group-ID and security.capability on write,
 * truncate and chown to the file system, and asks for it with flags in the requests. */
int fc_killpriv_v2(void);
/* 1 if the request this thread is serving carries such a flag (FUSE_WRITE_KILL_SUIDGID,
 * FATTR_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID). */
int fc_kill_suidgid(void);
/* 1 while passthrough is negotiated and has not been given up. */
int fc_passthrough(void);

/* Register fd (a descriptor of the backing file) with the kernel, for the open being answered
 * in req: a backing id > 0, or -errno. A refusal that will not change for this mount (no
 * CAP_SYS_ADMIN, no kernel support) turns passthrough off. */
int fc_backing_open(fuse_req_t req, int fd);
void fc_backing_close(fuse_req_t req, int id);
/* fuse_reply_open/fuse_reply_create, the file served by the kernel from backing id (0: by us). */
int fc_reply_open(fuse_req_t req, struct fuse_file_info *fi, int id);
int fc_reply_create(fuse_req_t req, const struct fuse_entry_param *e,
		    struct fuse_file_info *fi, int id);

/* Make the kernel look every cached name up again (Linux 6.16). 0 or -errno. */
int fc_notify_inc_epoch(struct fuse_session *se);
/* Offer the kernel to forget these inodes if unused (Linux 6.18). 0 or -errno. */
int fc_notify_prune(struct fuse_session *se, const uint64_t *ids, uint32_t n);

#endif
