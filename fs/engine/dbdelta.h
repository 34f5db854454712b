/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Page-level copies of databases, with the "sha256-1m" digest kept per 1 MiB block. Prefix: dd_.
 *
 * A database copy is described by the SHA-256 of each of its 1 MiB blocks (the inner digests of
 * the "sha256-1m" digest, see copy.h) and which of them still match the copy. Making a copy
 * equal to the live file again then only rewrites the 4 KiB pages that differ and only rehashes
 * the blocks they fall in; the outer digest is rebuilt from the block digests.
 *
 * Both files are mapped, so that comparing and hashing copy nothing to user space. The live
 * file's mapping is read under a SIGBUS guard: a writer's truncate makes the compare return
 * -EAGAIN, as a short read would (where it cannot be mapped, it is read with pread). */
#ifndef STILL_DBDELTA_H
#define STILL_DBDELTA_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DD_BLOCK ((uint64_t)1 << 20)

struct dd_blocks {
	uint64_t size;        /* content size the blocks describe */
	size_t n;             /* ceil(size / DD_BLOCK) */
	uint8_t (*d)[32];     /* SHA-256 of each block */
	uint8_t *valid;       /* 1 where d[i] matches the copy's block i */
};

void dd_init(struct dd_blocks *b);
void dd_free(struct dd_blocks *b);
/* Describe a copy of `size` bytes about which nothing is known (every block invalid). */
int dd_reset(struct dd_blocks *b, uint64_t size);
/* The copy was truncated or extended to `size`: blocks whose extent changed become invalid. */
int dd_resize(struct dd_blocks *b, uint64_t size);
void dd_invalidate(struct dd_blocks *b, uint64_t off, uint64_t len);
int dd_all_valid(const struct dd_blocks *b);
/* The "sha256-1m" digest from the block digests (all must be valid). */
void dd_digest(const struct dd_blocks *b, uint8_t out[32]);

struct dd_result {
	uint64_t written;     /* bytes written to the copy (pages rewritten, blocks copied) */
	uint64_t pages;       /* 4 KiB pages found different and rewritten */
	int cloned;           /* the base was shared with FICLONE */
	double cpu_s;         /* dd_sync: CPU time of every thread it ran on */
	uint64_t faults;      /* dd_sync: their page faults */
};

/* Copy the live file src into the empty file dst: a clone where the two can share extents
 * (r->cloned), else in the kernel where possible. With hash,
 * every block is hashed (through a mapping of dst, while later blocks are copied); without,
 * every block is left invalid. b describes dst afterwards. -EAGAIN if src shrank meanwhile
 * (b still describes what dst holds), else 0 or -errno. */
int dd_copy(int src, int dst, int hash, unsigned threads, struct dd_blocks *b,
	    struct dd_result *r);

/* Make dst hold what src holds, rewriting only the pages that differ. With base >= 0, dst is
 * an empty new file and is first made a copy of base (cloned, or copied in the kernel while
 * the compare follows behind), which b describes on entry; else b describes dst on entry.
 * Blocks that were rewritten become invalid. -EAGAIN if src shrank meanwhile (b still
 * describes dst), else 0 or -errno. */
int dd_sync(int src, int dst, int base, unsigned threads, struct dd_blocks *b,
	    struct dd_result *r);

/* A compare to be made under a lock, made ready before it: both files mapped, their pages
 * mapped in (dd_premap), so that dd_sync_premapped takes no page fault while writers wait;
 * mapping and unmapping a page costs more than comparing it. A page-cache page stays mapped
 * while a writer rewrites it in place, and a mapping shows what the file holds now (the kernel
 * unmaps what a truncation cuts off, and a page before it drops from the cache). The live
 * file's mapping reaches past its end, so that it may grow meanwhile. While it is held, the
 * mapped pages count as the process's resident memory (they are the page cache's). */
struct dd_premap {
	const uint8_t *smap, *dmap; /* NULL: not mapped */
	uint64_t slen, dlen;        /* bytes mapped */
	dev_t sdev, ddev;
	ino_t sino, dino;
};

void dd_premap_init(struct dd_premap *p);
/* Map the live file src and the copy dst and map their pages in. 0 or -errno (p holds
 * nothing then). */
int dd_premap(int src, int dst, struct dd_premap *p);
/* Unmap (after the lock is released: that takes as long as mapping). */
void dd_premap_drop(struct dd_premap *p);

/* dd_sync(src, dst, -1, ...) through p's mappings where they are of these files and reach
 * far enough (else as dd_sync maps them). */
int dd_sync_premapped(int src, int dst, unsigned threads, struct dd_blocks *b,
		      const struct dd_premap *p, struct dd_result *r);

/* Reads SQLite makes through its own mappings of a live database and its -shm (PRAGMA
 * mmap_size; the WAL index) between dd_zerofill_begin and dd_zerofill_end, on this thread: a
 * page past a truncation of the file reads as zeros instead of raising SIGBUS, and
 * dd_zerofill_hit (and dd_zerofill_end) return 1 once one did: what was read since the
 * outermost begin is worthless, and the connections that read it must be closed (their
 * mappings hold the zeros). Pairs nest. dd_zerofill_begin returns 0, or -1 where SIGBUS cannot
 * be caught on this thread (then end must not be called). */
int dd_zerofill_begin(void);
int dd_zerofill_hit(void);
int dd_zerofill_end(void);

/* Hash the invalid blocks of the file fd (which b describes). 0 or -errno. */
int dd_rehash(int fd, unsigned threads, struct dd_blocks *b);

#endif
