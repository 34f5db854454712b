/* Reading and writing the snapshot manifest (format in manifest.h). */
#include "manifest.h"
#include "copy.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int mf_write_header(FILE *f, const struct cap_stats *st)
{
	struct tm tm;
	char when[64];
	gmtime_r(&st->cut.tv_sec, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(f, "stillfs-manifest 1\n");
	fprintf(f, "id %s\n", st->id);
	fprintf(f, "cut_ns %" PRId64 "\n", ut_ts_ns(st->cut));
	fprintf(f, "cut %s.%09ldZ\n", when, st->cut.tv_nsec);
	fprintf(f, "digest sha256-1m\n");
	fprintf(f, "duration_s %.6f\n", st->duration_s);
	fprintf(f, "lock_max_s %.6f\n", st->lock_max_s);
	fprintf(f, "retries %u\n", st->retries);
	fprintf(f, "files %" PRIu64 "\n", st->files);
	fprintf(f, "bytes_copied %" PRIu64 "\n", st->bytes_copied);
	fprintf(f, "bytes_linked %" PRIu64 "\n", st->bytes_linked);
	fprintf(f, ".\n");
	return ferror(f) ? -EIO : 0;
}

int mf_write_entry(FILE *f, const struct mf_entry *e)
{
	char hex[65] = "-";
	char *path = cp_escape(e->path);
	if (!path)
		return -ENOMEM;
	if (e->has_digest)
		sha256_hex(e->digest, hex);
	fprintf(f, "%c %o %u %u %" PRIu64 " %" PRId64 " %s %s %s\n", e->kind, e->mode, e->uid,
		e->gid, e->size, e->mtime_ns, hex, e->ident ? e->ident : "-", path);
	free(path);
	return ferror(f) ? -EIO : 0;
}

static int mf_header_line(struct mf *m, const char *key, const char *val)
{
	struct cap_stats *st = &m->stats;
	if (!strcmp(key, "id"))
		snprintf(st->id, sizeof st->id, "%s", val);
	else if (!strcmp(key, "cut_ns")) {
		long long ns = strtoll(val, NULL, 10);
		st->cut.tv_sec = (time_t)(ns / 1000000000LL);
		st->cut.tv_nsec = (long)(ns % 1000000000LL);
	} else if (!strcmp(key, "digest")) {
		if (strcmp(val, "sha256-1m"))
			return -EBADMSG;
	} else if (!strcmp(key, "duration_s"))
		st->duration_s = strtod(val, NULL);
	else if (!strcmp(key, "lock_max_s"))
		st->lock_max_s = strtod(val, NULL);
	else if (!strcmp(key, "retries"))
		st->retries = (unsigned)strtoul(val, NULL, 10);
	else if (!strcmp(key, "files"))
		st->files = strtoull(val, NULL, 10);
	else if (!strcmp(key, "bytes_copied"))
		st->bytes_copied = strtoull(val, NULL, 10);
	else if (!strcmp(key, "bytes_linked"))
		st->bytes_linked = strtoull(val, NULL, 10);
	return 0; /* unknown keys are for newer readers */
}

/* A whole unsigned number in base, nothing else; manifests may come from anywhere. */
static int mf_num(const char *s, int base, uint64_t max, uint64_t *out)
{
	char *end;
	if (!*s || *s == '-' || *s == '+' || *s == ' ')
		return -EBADMSG;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || *end || v > max)
		return -EBADMSG;
	*out = v;
	return 0;
}

static int mf_entry_line(struct mf *m, char *line)
{
	struct mf_entry e = { 0 };
	char *f[10], *save = NULL;
	uint64_t v[5];
	int n = 0;
	for (char *t = strtok_r(line, " ", &save); t && n < 10; t = strtok_r(NULL, " ", &save))
		f[n++] = t;
	if (n != 9 || strlen(f[0]) != 1 || !strchr("dfsl", f[0][0]))
		return -EBADMSG;
	char *mt = f[5][0] == '-' ? f[5] + 1 : f[5]; /* mtimes before 1970 are negative */
	if (mf_num(f[1], 8, 07777, &v[0]) || mf_num(f[2], 10, UINT32_MAX, &v[1]) ||
	    mf_num(f[3], 10, UINT32_MAX, &v[2]) || mf_num(f[4], 10, INT64_MAX, &v[3]) ||
	    mf_num(mt, 10, INT64_MAX, &v[4]))
		return -EBADMSG;
	e.kind = f[0][0];
	e.mode = (uint32_t)v[0];
	e.uid = (uint32_t)v[1];
	e.gid = (uint32_t)v[2];
	e.size = v[3];
	e.mtime_ns = mt == f[5] ? (int64_t)v[4] : -(int64_t)v[4];
	if (strcmp(f[6], "-")) {
		if (sha256_from_hex(f[6], e.digest))
			return -EBADMSG;
		e.has_digest = 1;
	}
	e.path = cp_unescape(f[8]);
	if (!e.path || !e.path[0] || e.path[0] == '/')
		goto bad;
	/* A manifest may come from a downloaded copy: refuse paths that climb out of it. */
	for (const char *p = e.path; p; p = strchr(p, '/')) {
		if (*p == '/')
			p++;
		if (!strncmp(p, "..", 2) && (p[2] == '/' || !p[2]))
			goto bad;
		if (p[0] == '.' && (p[1] == '/' || !p[1]))
			goto bad;
	}
	if (strcmp(f[7], "-") && !(e.ident = strdup(f[7])))
		goto bad;
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 256;
		struct mf_entry *ne = realloc(m->e, cap * sizeof *ne);
		if (!ne)
			goto bad;
		m->e = ne;
		m->cap = cap;
	}
	m->e[m->n++] = e;
	return 0;
bad:
	free(e.path);
	free(e.ident);
	return -EBADMSG;
}

int mf_load(int dirfd, const char *name, struct mf *m)
{
	memset(m, 0, sizeof *m);
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	FILE *f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int rc = 0, lineno = 0, in_header = 1;
	while ((len = getline(&line, &cap, f)) > 0) {
		lineno++;
		if (line[len - 1] == '\n')
			line[--len] = 0;
		if (lineno == 1) {
			if (strcmp(line, "stillfs-manifest 1")) {
				rc = -EBADMSG;
				break;
			}
			continue;
		}
		if (in_header) {
			if (!strcmp(line, ".")) {
				in_header = 0;
				continue;
			}
			char *sp = strchr(line, ' ');
			if (!sp) {
				rc = -EBADMSG;
				break;
			}
			*sp = 0;
			rc = mf_header_line(m, line, sp + 1);
		} else {
			rc = mf_entry_line(m, line);
		}
		if (rc)
			break;
	}
	free(line);
	fclose(f);
	if (!rc && (lineno == 0 || in_header))
		rc = -EBADMSG;
	if (rc == -EBADMSG)
		log_err("%s: manifest line %d is malformed", name, lineno);
	for (size_t i = 0; !rc && i < m->n; i++)
		if (ut_map_put(&m->index, m->e[i].path, i))
			rc = -ENOMEM;
	if (rc)
		mf_free(m);
	return rc;
}

const struct mf_entry *mf_find(const struct mf *m, const char *path)
{
	size_t i;
	return ut_map_get(&m->index, path, &i) ? &m->e[i] : NULL;
}

void mf_free(struct mf *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->e[i].path);
		free(m->e[i].ident);
	}
	free(m->e);
	ut_map_free(&m->index);
	memset(m, 0, sizeof *m);
}
