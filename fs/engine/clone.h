/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Shared extents (reflinks) for the capture. Prefix: cl_.
 *
 * Where the snapshot and the store share a filesystem that can clone (XFS with reflink, btrfs),
 * a copy of a file is a new inode sharing the file's extents: made in a few milliseconds
 * whatever the size, writing no data. A database is then cloned under its lock and the work
 * that used to hold the lock (comparing with the early copy, hashing) follows the release:
 * blocks that still sit in the same extents as in the early copy hold the same bytes and keep
 * their digests, the others are hashed again. */
#ifndef STILL_CLONE_H
#define STILL_CLONE_H

#include <stdint.h>

struct dd_blocks;

/* Create dirfd/name (it must not exist; mode 0600) sharing all of src's content. The new
 * descriptor (read-write), or -errno; -EOPNOTSUPP, -EXDEV or -EINVAL mean the two cannot
 * share extents (nothing is left behind). */
int cl_clone_new(int src, int dirfd, const char *name);

/* 1 if the error of a clone means "cannot clone here", not a failure. */
int cl_unsupported(int err);

/* Whether files of the directory `from` can be cloned into the directory `to`, found without
 * writing to `from`: both on one filesystem (st_dev) and two unnamed files of `to` can share
 * extents. 1 yes, 0 no, with a short reason in *why (static). */
int cl_probe(int from, int to, const char **why);

/* clone shares extents with a file of which ref is an earlier copy that b describes (digests of
 * ref's 1 MiB blocks). Make b describe clone: a block whose bytes lie in the same extents in
 * both files (after writing both back) holds the same bytes and keeps its digest; any other
 * becomes invalid. Only extent maps are read, no data. 0 or -errno (b then describes clone
 * with every block invalid). */
int cl_adopt(int clone, int ref, struct dd_blocks *b);

/* A fingerprint of where the first `size` bytes of fd lie on disk, from its extent map
 * (FIEMAP; the file's dirty pages written back first if sync): never 0. Where the bytes of a
 * file can be replaced without a write, by giving it the extents of another file
 * (XFS_IOC_SWAPEXT, EXT4_IOC_MOVE_EXT: neither moves mtime or ctime or raises an event), the
 * fingerprint moves. So does a write to an extent the file shares with another (a clone),
 * once written back, and the first write to an unwritten (preallocated) one, once its write-back
 * has ended (until then, a write-back that has begun also leaves the extents it allocates
 * unwritten: taken with sync, the fingerprint stays put unless the file is written again). A
 * write in place to an extent of the file's own leaves it as it was (those move the times),
 * and so does one made while the extents were swapped out, once they are swapped back. 0, or
 * -errno (-EOPNOTSUPP where the file system has no extent map). */
int cl_map_sig(int fd, uint64_t size, int sync, uint64_t *sig);

#endif
