/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A real-format HNSW segment written the way chroma's hnswlib fork persists one: files opened
 * once and kept open, rewritten in place (no temp file, no rename, no fsync), header.bin ->
 * data_level0.bin -> length.bin -> link_lists.bin -> index_metadata.pickle. The graph is not a
 * good one (neighbours come from a small random sample) but every field obeys the format.
 * Prefix: hg_. Shared by the unit test of fs/engine/hnsw.c and the hnswwriter test program. */
#ifndef STILL_HNSWGEN_H
#define STILL_HNSWGEN_H

#include <stddef.h>
#include <stdint.h>

#define HG_MAX_LEVEL 16

/* Called between the steps of a persist with the step about to run next (1: data_level0.bin,
 * 2: length.bin, 3: link_lists.bin, 4: the pickle's truncation, 5: the pickle's contents). */
typedef void (*hg_stall_fn)(void *arg, int step);

struct hg_index {
	int dirfd, fd[4];
	uint64_t dim, m, max_m, max_m0, capacity, min_capacity, count, total_added;
	uint64_t per_element, label_offset, data_offset, upper_size;
	int maxlevel;
	uint32_t enterpoint;
	double mult;
	uint8_t *level0;      /* capacity slots of per_element bytes */
	float *lengths;
	uint8_t *levels, *dirty, *deleted;
	uint8_t **upper;      /* levels[i] lists of upper_size bytes, or NULL */
	uint32_t *by_level[HG_MAX_LEVEL + 1];  /* ids of the elements reaching each level */
	uint64_t by_level_n[HG_MAX_LEVEL + 1];
	uint64_t rng;
	hg_stall_fn stall;
	void *stall_arg;
};

/* Create the four index files under dirfd at capacity elements, as hnswlib's init does (no
 * pickle yet), and keep them open. 0 or -errno. */
int hg_create(struct hg_index *x, int dirfd, unsigned dim, unsigned m, uint64_t capacity,
	      uint64_t seed);
/* Make room for n more elements the way chroma does before a batch (capacity grows to
 * 1.2 x the needed count, at least the initial capacity); the files are not touched. */
int hg_ensure(struct hg_index *x, uint64_t n);
/* Insert n elements with fresh labels; -ENOSPC beyond the capacity. */
int hg_add(struct hg_index *x, uint64_t n);
/* Mark element id deleted (hnswlib's delete mark in its level-0 link word). */
int hg_delete(struct hg_index *x, uint64_t id);
/* One persist of everything dirty, then the pickle; 0 or -errno. */
int hg_persist(struct hg_index *x);
void hg_close(struct hg_index *x);

#endif
