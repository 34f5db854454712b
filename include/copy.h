/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Copying and digesting file contents. Prefix: cp_.
 *
 * The content digest ("sha256-1m") is SHA-256 of the content for files up to 1 MiB, and
 * SHA-256 of the concatenated SHA-256 of each 1 MiB block for larger files. It is a pure
 * function of the bytes, so a downloaded copy verifies like the original; but holes and
 * zero blocks hash without being read or stored, and large files can be hashed in pieces. */
#ifndef STILL_COPY_H
#define STILL_COPY_H

#include <stdint.h>
#include <sys/types.h>

#define CP_BLOCK ((uint64_t)1 << 20)

struct cp_result {
	uint64_t size;        /* bytes of content seen (stops early if the source shrank) */
	uint64_t written;     /* bytes actually stored (zero blocks become holes) */
	uint8_t digest[32];
	int cloned;           /* content was shared with FICLONE */
	uint8_t head[16];     /* first bytes, to recognise SQLite files */
};

/* How many threads hash copies: one per CPU this process may use (ut_cpu_count), at most
 * 16. The databases are compared and hashed on as many. */
unsigned cp_hashers(void);

/* Copy src to the empty file dst (both regular files) keeping holes, computing the digest.
 * dst < 0 only digests. want_digest = 0 skips hashing (the caller digests later).
 * Returns 0 or -errno. */
int cp_file(int src, int dst, int want_digest, struct cp_result *r);

/* cp_file(src, dst, 1, r), except that the digest may be left to the hashing threads, which
 * hash the copy while the caller goes on (copying the next files): *out then gets a handle to
 * pass to cp_pending_wait or cp_pending_discard, else it is NULL and r is complete. With a
 * handle, the copy is in place and r->size, r->head and r->cloned are final; r->digest and
 * r->written (which drops when copied zero pages become holes) are not, and the file may
 * still have holes punched into it, which changes its mtime. The handle keeps dst mapped (no
 * descriptor): the caller may close dst at once. Nobody else must write to dst until
 * the handle is waited for or discarded; the last blocks of the copies may be hashed only
 * then. Returns 0 or -errno (then *out is NULL). */
struct cp_pending;
int cp_file_deferred(int src, int dst, struct cp_result *r, struct cp_pending **out);
/* Wait for the digest of a pending copy (hashing on this thread too), and free p: sets
 * r->digest and r->written, nothing else of r. 0 or -errno. */
int cp_pending_wait(struct cp_pending *p, struct cp_result *r);
/* Give up a pending copy's digest: stop hashing it and free p. The copy stays as it is. */
void cp_pending_discard(struct cp_pending *p);

/* Make dst, an earlier copy of src, equal to src again, rewriting only the 1 MiB blocks that
 * differ: reading from the page cache is much cheaper than writing. *written gets the bytes
 * rewritten. 0 or -errno. */
int cp_patch(int src, int dst, uint64_t *written);

/* Digest of an open file. */
int cp_digest_fd(int fd, struct cp_result *r);

/* Remove a tree below dirfd/name (never following symlinks). 0 or -errno. */
int cp_rmtree(int dirfd, const char *name);

/* Percent-escape a path for line-oriented files (bytes <= ' ', >= 0x7f, and '%').
 * Returns a malloc'd string or NULL. */
char *cp_escape(const char *s);
/* Reverse of cp_escape into a malloc'd string, or NULL if malformed. */
char *cp_unescape(const char *s);

#endif
