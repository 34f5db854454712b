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

/* Copy src to the empty file dst (both regular files) keeping holes, computing the digest.
 * dst < 0 only digests. want_digest = 0 skips hashing (the caller digests later).
 * Returns 0 or -errno. */
int cp_file(int src, int dst, int want_digest, struct cp_result *r);

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
