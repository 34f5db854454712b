/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Consistency check of a persisted HNSW vector segment (chroma's hnswlib fork). Prefix: hv_.
 *
 * A segment is a directory of files that the application rewrites in place, in this order,
 * on every persist: header.bin, data_level0.bin, length.bin, link_lists.bin, then
 * index_metadata.pickle (truncated and rewritten). A copy whose files come from two different
 * persists loads without complaint and crashes or corrupts later; hv_check finds such copies
 * from the files' contents alone. No FUSE, no allocation beyond O(element count) bytes. */
#ifndef STILL_HNSW_H
#define STILL_HNSW_H

#include <stddef.h>
#include <time.h>

/* The segment's files, in the order one persist writes them. */
enum hv_file { HV_HEADER, HV_DATA_LEVEL0, HV_LENGTH, HV_LINK_LISTS, HV_PICKLE, HV_NFILES };
extern const char *const hv_file_names[HV_NFILES];

/* 1 when dirfd holds regular files header.bin, data_level0.bin, length.bin and link_lists.bin
 * (the pickle is optional: a fresh index has none until its first persist), else 0. */
int hv_is_segment(int dirfd);

/* Check the files under dirfd (opened with openat O_RDONLY|O_NOFOLLOW) against each other.
 * 0: consistent as far as the format can tell; 1: torn or corrupt, why holds one line saying
 * what disagrees; negative errno on an I/O error (a missing file is -ENOENT). */
int hv_check(int dirfd, char *why, size_t whylen);

/* Whether the modification times of the live files, indexed by enum hv_file, are in persist
 * order (each file no newer than the next). Every persist writes all five files in that order,
 * so a set out of order was caught inside a persist: 1 in order, 0 not. A zero timespec for
 * HV_PICKLE means the pickle does not exist (fresh index). Equal times pass: file systems
 * stamp with a coarse clock, so this can only prove a set torn, never prove it whole. */
int hv_order_ok(const struct timespec mt[HV_NFILES]);

#endif
