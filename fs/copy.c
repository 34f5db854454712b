/* File copy with holes kept and the content digest computed in the same pass. */
#include "copy.h"
#include "sha256.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

static uint8_t cp_zero_block_digest[32];
static const uint8_t *cp_zeros;
static pthread_once_t cp_once = PTHREAD_ONCE_INIT;

static void cp_init_once(void)
{
	/* calloc of a large block maps zero pages: no real memory is used for it. */
	cp_zeros = calloc(1, CP_BLOCK);
	if (cp_zeros)
		sha256(cp_zeros, CP_BLOCK, cp_zero_block_digest);
}

static int cp_all_zero(const uint8_t *p, size_t n)
{
	/* Checking the first bytes by hand lets memcmp run over the rest against itself. */
	if (n == 0)
		return 1;
	for (size_t i = 0; i < n && i < 16; i++)
		if (p[i])
			return 0;
	return memcmp(p, p + 1, n - 1) == 0;
}

struct cp_hasher {
	struct sha256 outer;
	uint8_t first[32];
	uint64_t blocks;
};

static void cp_hash_block(struct cp_hasher *h, const uint8_t *data, size_t n, int zero)
{
	uint8_t d[32];
	if (zero && n == CP_BLOCK)
		memcpy(d, cp_zero_block_digest, 32);
	else
		sha256(zero ? cp_zeros : data, n, d);
	if (h->blocks == 0)
		memcpy(h->first, d, 32);
	sha256_update(&h->outer, d, 32);
	h->blocks++;
}

static void cp_hash_final(struct cp_hasher *h, uint8_t out[32])
{
	if (h->blocks == 0)
		sha256("", 0, out);
	else if (h->blocks == 1)
		memcpy(out, h->first, 32);
	else
		sha256_final(&h->outer, out);
}

static int cp_pwrite_all(int fd, const uint8_t *p, size_t n, off_t off)
{
	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
		off += w;
	}
	return 0;
}

/* Read up to n bytes at off; short only at end of file. */
static ssize_t cp_pread_full(int fd, uint8_t *p, size_t n, off_t off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, p + got, n - got, off + (off_t)got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* Offset of the next data at or after off, or size if the rest is a hole. */
static uint64_t cp_next_data(int fd, uint64_t off, uint64_t size)
{
	off_t d = lseek(fd, (off_t)off, SEEK_DATA);
	if (d < 0)
		return errno == ENXIO ? size : off; /* no SEEK_DATA support: treat all as data */
	return (uint64_t)d;
}

/* Copy without hashing: in-kernel, data segments only. */
static int cp_kernel_copy(int src, int dst, uint64_t size, struct cp_result *r)
{
	uint64_t off = 0;
	while (off < size) {
		uint64_t data = cp_next_data(src, off, size);
		if (data >= size)
			break;
		off_t hole = lseek(src, (off_t)data, SEEK_HOLE);
		uint64_t end = hole < 0 ? size : (uint64_t)hole;
		if (end > size)
			end = size;
		off_t in = (off_t)data, out = (off_t)data;
		while ((uint64_t)in < end) {
			ssize_t n = copy_file_range(src, &in, dst, &out, end - (uint64_t)in, 0);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			if (n == 0) { /* source shrank under us */
				end = (uint64_t)in;
				size = end;
				break;
			}
			r->written += (uint64_t)n;
		}
		off = end;
	}
	r->size = size;
	return 0;
}

int cp_file(int src, int dst, int want_digest, struct cp_result *r)
{
	struct stat st;
	int rc = 0;
	uint8_t *buf = NULL;

	pthread_once(&cp_once, cp_init_once);
	if (!cp_zeros)
		return -ENOMEM;
	memset(r, 0, sizeof *r);
	if (fstat(src, &st) < 0)
		return -errno;
	uint64_t size = (uint64_t)st.st_size;
	ssize_t hn = pread(src, r->head, sizeof r->head, 0);
	if (hn < 0)
		return -errno;

	if (dst >= 0 && size > 0 && ioctl(dst, FICLONE, src) == 0) {
		r->cloned = 1;
		r->size = size;
		if (!want_digest)
			return 0;
		dst = -1; /* content is shared; only the digest is left to do */
	}
	if (dst >= 0 && !want_digest) {
		rc = cp_kernel_copy(src, dst, size, r);
		if (rc == 0 || (rc != -EXDEV && rc != -EINVAL && rc != -ENOSYS && rc != -EOPNOTSUPP))
			goto out_truncate;
		r->written = 0; /* fall back to the read/write loop below */
	}

	buf = malloc(CP_BLOCK);
	if (!buf)
		return -ENOMEM;
	struct cp_hasher h = { .blocks = 0 };
	sha256_init(&h.outer);
	uint64_t off = 0, data = 0;
	while (off < size) {
		size_t n = (size_t)(size - off < CP_BLOCK ? size - off : CP_BLOCK);
		if (data < off + n && data <= off)
			data = cp_next_data(src, off, size);
		if (data >= off + n) { /* the whole block lies in a hole */
			if (want_digest)
				cp_hash_block(&h, NULL, n, 1);
			off += n;
			continue;
		}
		ssize_t got = cp_pread_full(src, buf, n, (off_t)off);
		if (got < 0) {
			rc = (int)got;
			goto out;
		}
		int zero = cp_all_zero(buf, (size_t)got);
		if (want_digest && got > 0)
			cp_hash_block(&h, buf, (size_t)got, zero);
		if (dst >= 0 && !zero) {
			rc = cp_pwrite_all(dst, buf, (size_t)got, (off_t)off);
			if (rc)
				goto out;
			r->written += (uint64_t)got;
		}
		off += (uint64_t)got;
		if ((size_t)got < n) { /* source shrank under us */
			size = off;
			break;
		}
	}
	r->size = size;
	if (want_digest)
		cp_hash_final(&h, r->digest);
out_truncate:
	if (rc == 0 && dst >= 0 && ftruncate(dst, (off_t)r->size) < 0)
		rc = -errno;
out:
	free(buf);
	return rc;
}

int cp_digest_fd(int fd, struct cp_result *r)
{
	return cp_file(fd, -1, 1, r);
}

int cp_rmtree(int dirfd, const char *name)
{
	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	int rc = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		int r = cp_rmtree(fd, e->d_name);
		if (r && !rc)
			rc = r;
	}
	closedir(d);
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && !rc)
		rc = -errno;
	return rc;
}

char *cp_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *out = malloc(3 * n + 1), *p = out;
	if (!out)
		return NULL;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c <= ' ' || *c >= 0x7f || *c == '%') {
			*p++ = '%';
			*p++ = hex[*c >> 4];
			*p++ = hex[*c & 15];
		} else {
			*p++ = (char)*c;
		}
	}
	*p = 0;
	return out;
}

static int cp_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

char *cp_unescape(const char *s)
{
	char *out = malloc(strlen(s) + 1), *p = out;
	if (!out)
		return NULL;
	while (*s) {
		if (*s == '%') {
			int hi = cp_hexval(s[1]), lo = hi < 0 ? -1 : cp_hexval(s[2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				free(out);
				return NULL;
			}
			*p++ = (char)(hi << 4 | lo);
			s += 3;
		} else {
			*p++ = *s++;
		}
	}
	*p = 0;
	return out;
}
