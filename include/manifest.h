/* The snapshot manifest: one text file at the snapshot root. Prefix: mf_.
 *
 *   stillfs-manifest 1
 *   KEY VALUE            (id, cut_ns, cut, digest, duration_s, lock_max_s, retries, files,
 *   ...                   bytes_copied, bytes_linked)
 *   .
 *   KIND MODE UID GID SIZE MTIME_NS DIGEST IDENT PATH
 *
 * KIND is d (directory), f (file), s (SQLite database), l (symlink; DIGEST of its target).
 * MODE is octal; DIGEST is "sha256-1m" hex (see copy.h) or "-"; IDENT is the source's
 * identity when it was captured ("-" when it could not be trusted), used to prove a file
 * unchanged for the next incremental capture; PATH is relative and %-escaped. */
#ifndef STILL_MANIFEST_H
#define STILL_MANIFEST_H

#include <stdint.h>
#include <stdio.h>

#include "capture.h"
#include "util.h"

struct mf_entry {              /* one per file of a loaded manifest: kept small */
	char kind;
	uint8_t has_digest;
	uint32_t mode, uid, gid;
	uint64_t size;
	int64_t mtime_ns;
	uint8_t digest[32];
	char *ident;          /* NULL when none */
	char *path;           /* unescaped, relative, "" never appears */
};

struct mf {
	struct cap_stats stats;
	struct mf_entry *e;
	size_t n, cap;
	struct ut_map index;  /* path -> entry */
};

/* Write the header; then one mf_write_entry per entry. */
int mf_write_header(FILE *f, const struct cap_stats *st);
int mf_write_entry(FILE *f, const struct mf_entry *e);

/* Parse the manifest file at dirfd/name (or a path when dirfd is AT_FDCWD).
 * 0, -ENOENT, -EBADMSG (with line number logged) or -errno. */
int mf_load(int dirfd, const char *name, struct mf *m);
const struct mf_entry *mf_find(const struct mf *m, const char *path);
void mf_free(struct mf *m);

#endif
