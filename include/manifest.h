/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The snapshot manifest: one text file at the snapshot root. Prefix: mf_.
 * This module is the only one that knows its format:
 *
 *   stillfs-manifest 2
 *   KEY VALUE            (id, cut_ns, cut, digest, duration_s, lock_max_s, retries, files,
 *   ...                   bytes_copied, bytes_linked, entries, blocks)
 *   .
 *   KIND MODE UID GID SIZE MTIME_NS DIGEST IDENT PATH    ("entries" lines, sorted by PATH)
 *   blocks PATH HEX                                      ("blocks" lines, in the same order)
 *   end SHA256
 *
 * KIND is d (directory), f (file), s (SQLite database), l (symlink; DIGEST of its target).
 * MODE is octal; DIGEST is "sha256-1m" hex (see copy.h) or "-"; IDENT is the source's
 * identity when it was captured ("-" when it could not be trusted), used to prove a file
 * unchanged for the next incremental capture; PATH is relative and %-escaped (copy.h), and
 * the entries are in strcmp order of the unescaped paths, each path once. "files" counts the
 * f and s entries. A block line holds the SHA-256 of each 1 MiB block of a database of more
 * than one block (64 hex digits each); they add up to its DIGEST (dbdelta.h).
 * The end line holds the SHA-256 of every byte before it: a manifest cut short, reordered or
 * edited by accident is refused as a whole. (Not a signature: whoever can write the copy can
 * write a new manifest.) */
#ifndef STILL_MANIFEST_H
#define STILL_MANIFEST_H

#include <stdint.h>
#include <stdio.h>

#include "capture.h"
#include "dbdelta.h"
#include "util.h"

struct mf_entry {              /* one per file of a manifest: kept small */
	char kind;
	uint8_t has_digest;
	uint32_t mode, uid, gid;
	uint64_t size;
	int64_t mtime_ns;
	uint8_t digest[32];
	const char *ident;    /* NULL when none */
	const char *path;     /* unescaped, relative, "" never appears */
	uint8_t (*blocks)[32]; /* a database's block digests (see mf_blocks_of), or NULL */
};

struct mf {
	struct cap_stats stats;
	struct mf_entry *e;   /* loaded: in path order, which mf_find searches by halves */
	size_t n, cap;
	struct ut_arena text; /* loaded: the paths and identities */
	int owns;             /* loaded: the strings and blocks are its own, not borrowed */
	char why[200];        /* after a failed mf_load: what is wrong, one line */
};

/* Building a manifest to write: start from a zeroed struct mf with its stats set, mf_add the
 * entries in any order, then mf_write. The entry's strings and blocks are borrowed, not
 * copied: they must stay as they are until mf_write. 0 or -ENOMEM. */
int mf_add(struct mf *m, const struct mf_entry *e);

/* Write the whole manifest, its entries sorted (in place) and counted. Blocks are written
 * only for databases of more than one block, and only when they add up to the entry's digest
 * (else the next capture just hashes that database again). -EINVAL if an entry is one no
 * reader would accept (a path that escapes, a path twice, an unknown kind), else 0 or -EIO. */
int mf_write(FILE *f, struct mf *m);

/* The same without a struct mf: n entries, stats and counts as mf_write. get(arg, i, e) fills
 * e with entry i of n in path order; it is asked for each entry more than once and must give
 * the same each time. e's path must stay as it is until mf_write_each returns, its identity
 * and blocks until the next call of get. */
typedef void mf_get_fn(void *arg, size_t i, struct mf_entry *e);
int mf_write_each(FILE *f, const struct cap_stats *stats, size_t n, mf_get_fn *get, void *arg);

/* Parse the manifest file at dirfd/name (or a path when dirfd is AT_FDCWD). 0, or -errno:
 * -EBADMSG for a manifest that is malformed, truncated, reordered, whose counts disagree with
 * its lines or whose end line does not match, or of another format version. On failure m
 * holds no entries and m->why says what is wrong, in one line. Nothing is logged. */
int mf_load(int dirfd, const char *name, struct mf *m);
const struct mf_entry *mf_find(const struct mf *m, const char *path);
/* Of a loaded manifest, keep only the entries keep() is true of, in their order, and give up
 * what the others held. Left as it was when out of memory (-ENOMEM); else 0. */
int mf_keep(struct mf *m, int (*keep)(const struct mf_entry *e));
/* The block digests the manifest records for the database at path, all valid, into b.
 * 0, -ENOENT (none recorded: not a database, or of at most one block) or -ENOMEM. */
int mf_blocks_of(const struct mf *m, const char *path, struct dd_blocks *b);
void mf_free(struct mf *m);

#endif
