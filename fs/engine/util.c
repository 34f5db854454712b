/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Logging and small helpers shared by the engine, stillctl and the daemon. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <syslog.h>
#include <unistd.h>

static const char *log_prog = "stillfs";
static int log_syslog;
static int log_journal;            /* stderr is the journal's stream: lines carry "<N>" */
static int log_quiet;
static char log_last[1024];
static unsigned log_errors;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* systemd sets JOURNAL_STREAM to the device and inode of the stream it gave as stdout and
 * stderr; a process whose stderr was redirected since (a capture helper's pipe) is not it. */
void log_init(const char *prog)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	log_prog = prog;
	log_journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
		      (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}
void log_to_syslog(int on) { log_syslog = on; if (on) openlog(log_prog, LOG_PID, LOG_DAEMON); }
void log_set_quiet(int quiet) { log_quiet = quiet; }

size_t ut_utf8_len(const unsigned char *p)
{
	size_t n;
	unsigned min;
	unsigned cp;
	if (*p < 0x80)
		return 1;
	if (*p >= 0xc2 && *p <= 0xdf)
		n = 2, min = 0x80, cp = *p & 0x1f;
	else if (*p >= 0xe0 && *p <= 0xef)
		n = 3, min = 0x800, cp = *p & 0x0f;
	else if (*p >= 0xf0 && *p <= 0xf4)
		n = 4, min = 0x10000, cp = *p & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;              /* also stops at the terminating 0 */
		cp = cp << 6 | (p[i] & 0x3f);
	}
	return cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0 : n;
}

char *ut_escape(char *dst, size_t len, const char *src, int backslash)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (const unsigned char *s = (const unsigned char *)src; *s;) {
		char esc[5] = { (char)*s, 0 };
		size_t in = ut_utf8_len(s), n;
		/* A C1 control (U+0080 to U+009F, in UTF-8 0xc2 0x80 to 0xc2 0x9f) is a
		 * terminal's CSI and the like as much as ESC is: its first byte goes as \xc2
		 * and the second as what it is on its own, not UTF-8. */
		if (in == 2 && s[0] == 0xc2 && s[1] < 0xa0)
			in = 0;
		if (*s == '\\' && backslash)
			strcpy(esc, "\\\\");
		else if (*s == '\n')
			strcpy(esc, "\\n");
		else if (*s == '\t')
			strcpy(esc, "\\t");
		else if (!in || *s < 0x20 || *s == 0x7f) {
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[*s >> 4];
			esc[3] = hex[*s & 15];
		}
		n = strlen(esc);
		if (in > 1) {                  /* a whole character, unchanged */
			n = in;
			memcpy(esc, s, n);
		}
		if (o + n >= len)
			break;                 /* cut, but never in the middle of an escape */
		memcpy(dst + o, esc, n);
		o += n;
		s += in ? in : 1;
	}
	if (len)
		dst[o] = 0;
	return dst;
}

static void log_v(int prio, int backslash, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

/* Every message is escaped (ut_escape): names of files go into messages, and one holding a
 * newline must not make a log line of its own. */
static void log_v(int prio, int backslash, const char *fmt, va_list ap)
{
	char raw[1024], msg[1024];
	vsnprintf(raw, sizeof raw, fmt, ap);
	ut_escape(msg, sizeof msg, raw, backslash);
	pthread_mutex_lock(&log_lock);
	if (prio == LOG_ERR) {
		snprintf(log_last, sizeof log_last, "%s", msg);
		log_errors++;
	}
	if (log_syslog)
		syslog(prio, "%s", msg);
	else if (log_journal && (prio != LOG_INFO || !log_quiet))
		fprintf(stderr, "<%d>%s\n", prio, msg);   /* journald names the program */
	else if (prio != LOG_INFO || !log_quiet)
		fprintf(stderr, "%s: %s%s\n", log_prog,
			prio == LOG_WARNING ? "warning: " : "", msg);
	pthread_mutex_unlock(&log_lock);
}

void log_err(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(LOG_ERR, 1, fmt, ap);
	va_end(ap);
}

void log_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(LOG_WARNING, 1, fmt, ap);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(LOG_INFO, 1, fmt, ap);
	va_end(ap);
}

void log_relay(enum log_kind kind, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(kind == LOG_KIND_ERR ? LOG_ERR : kind == LOG_KIND_WARN ? LOG_WARNING : LOG_INFO, 0,
	      fmt, ap);
	va_end(ap);
}

const char *log_last_error(void) { return log_last; }
unsigned log_error_count(void) { return log_errors; }

double ut_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

struct timespec ut_realtime(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return t;
}

double ut_wall_left(double wall, double limit)
{
	struct timespec now = ut_realtime();
	double left = wall - ((double)now.tv_sec + now.tv_nsec / 1e9), bound = limit - ut_now();
	return bound < left ? bound : left;
}

/* Saturated: a file can be dated past 2262 (touch -d 2300-01-01), which int64 nanoseconds do
 * not reach. */
int64_t ut_ts_ns(struct timespec t)
{
	if (t.tv_sec >= INT64_MAX / 1000000000LL)
		return INT64_MAX;
	if (t.tv_sec < INT64_MIN / 1000000000LL)
		return INT64_MIN;
	return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int ut_same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

struct timespec ut_ns_ts(int64_t ns)
{
	struct timespec t = { (time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL) };
	if (t.tv_nsec < 0) {
		t.tv_nsec += 1000000000L;
		t.tv_sec--;
	}
	return t;
}

void ut_format_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	unsigned i = 0;
	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, len, "%.1f %s", v, unit[i]);
}

int ut_open_beneath_walk(int dirfd, const char *path, int flags)
{
	char name[NAME_MAX + 1];
	int cur = -1, rc;
	if (path[0] == '/')
		return -EXDEV;
	for (const char *p = path;;) {
		while (*p == '/')
			p++;
		size_t len = strcspn(p, "/");
		const char *next = p + len;
		while (*next == '/')
			next++;
		if (len > NAME_MAX) {
			rc = -ENAMETOOLONG;
			break;
		}
		memcpy(name, len ? p : ".", len ? len : 1);
		name[len ? len : 1] = 0;
		if (!strcmp(name, "..")) {
			rc = -EXDEV;
			break;
		}
		int at = cur >= 0 ? cur : dirfd;
		if (!*next) {
			rc = openat(at, name, flags | O_NOFOLLOW | O_CLOEXEC);
			rc = rc < 0 ? -errno : rc;
			break;
		}
		/* A directory on the way: a symlink is refused, not followed. */
		int fd = openat(at, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0) {
			rc = -errno;
			if (fd >= 0)
				close(fd);
			break;
		}
		if (!S_ISDIR(st.st_mode)) {
			close(fd);
			rc = S_ISLNK(st.st_mode) ? -ELOOP : -ENOTDIR;
			break;
		}
		if (cur >= 0)
			close(cur);
		cur = fd;
		p = next;
	}
	if (cur >= 0)
		close(cur);
	return rc;
}

#define UT_ARENA_CHUNK (64 << 10)

char *ut_arena_strdup(struct ut_arena *a, const char *s)
{
	size_t len = strlen(s) + 1;
	if (len > a->room - a->used) {
		/* A string longer than a chunk gets one of its own. */
		size_t room = sizeof(char *) + (len > UT_ARENA_CHUNK / 4 ? len : UT_ARENA_CHUNK);
		char *chunk = malloc(room);
		if (!chunk)
			return NULL;
		memcpy(chunk, &a->chunk, sizeof a->chunk);
		a->chunk = chunk;
		a->used = sizeof(char *);
		a->room = room;
	}
	char *p = a->chunk + a->used;
	memcpy(p, s, len);
	a->used += len;
	return p;
}

void ut_arena_free(struct ut_arena *a)
{
	while (a->chunk) {
		char *prev;
		memcpy(&prev, a->chunk, sizeof prev);
		free(a->chunk);
		a->chunk = prev;
	}
	memset(a, 0, sizeof *a);
}

size_t ut_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (size_t)h;
}

static const char ut_tomb[] = "";

static int ut_map_grow(struct ut_map *m)
{
	size_t cap = m->cap ? m->cap * 2 : 64;
	struct ut_map n = { calloc(cap, sizeof(char *)), calloc(cap, sizeof(size_t)), cap, 0 };
	if (!n.keys || !n.vals) {
		free(n.keys);
		free(n.vals);
		return -ENOMEM;
	}
	for (size_t i = 0; i < m->cap; i++)
		if (m->keys[i] && m->keys[i] != ut_tomb)
			ut_map_put(&n, m->keys[i], m->vals[i]);
	ut_map_free(m);
	*m = n;
	return 0;
}

int ut_map_put(struct ut_map *m, const char *key, size_t val)
{
	if ((m->n + 1) * 2 > m->cap && ut_map_grow(m))
		return -ENOMEM;
	size_t i = ut_hash(key) & (m->cap - 1), tomb = SIZE_MAX;
	for (; m->keys[i]; i = (i + 1) & (m->cap - 1)) {
		if (m->keys[i] == ut_tomb) {
			if (tomb == SIZE_MAX)
				tomb = i;
		} else if (!strcmp(m->keys[i], key)) {
			m->keys[i] = key;
			m->vals[i] = val;
			return 0;
		}
	}
	if (tomb != SIZE_MAX)
		i = tomb;
	else
		m->n++;
	m->keys[i] = key;
	m->vals[i] = val;
	return 0;
}

static size_t ut_map_slot(const struct ut_map *m, const char *key)
{
	if (!m->cap)
		return SIZE_MAX;
	for (size_t i = ut_hash(key) & (m->cap - 1); m->keys[i]; i = (i + 1) & (m->cap - 1))
		if (m->keys[i] != ut_tomb && !strcmp(m->keys[i], key))
			return i;
	return SIZE_MAX;
}

int ut_map_get(const struct ut_map *m, const char *key, size_t *val)
{
	size_t i = ut_map_slot(m, key);
	if (i == SIZE_MAX)
		return 0;
	if (val)
		*val = m->vals[i];
	return 1;
}

void ut_map_del(struct ut_map *m, const char *key)
{
	size_t i = ut_map_slot(m, key);
	if (i != SIZE_MAX)
		m->keys[i] = ut_tomb; /* a tombstone keeps later probes of the chain reachable */
}

void ut_map_free(struct ut_map *m)
{
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof *m);
}

ssize_t ut_pread_full(int fd, uint8_t *p, size_t n, off_t off)
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

int ut_pwrite_all(int fd, const uint8_t *p, size_t n, off_t off)
{
	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += (size_t)w;
		n -= (size_t)w;
		off += w;
	}
	return 0;
}

int ut_stillfs_mount(int fd, uid_t *uid)
{
	struct statx sx;
	unsigned maj, min;
	unsigned long long id;
	char *line = NULL, *save;
	size_t cap = 0;
	int rc = -EXDEV;
	FILE *f;

	/* The attributes as the kernel has them cached, and no statfs: a request to the
	 * daemon could have to be answered by the very daemon that asks. */
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_MNT_ID, &sx) < 0)
		return -errno;
	if (!(sx.stx_mask & STATX_MNT_ID) ||
	    !(sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) ||
	    !(sx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
		return -EXDEV;
	if (!(f = fopen("/proc/self/mountinfo", "re")))
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPEROPTS */
		char *sep = strstr(line, " - "), type[64], *opts;
		if (!sep || sscanf(line, "%llu %*d %u:%u", &id, &maj, &min) != 3 ||
		    id != sx.stx_mnt_id)
			continue;
		if (sscanf(sep + 3, "%63s", type) != 1 || strcmp(type, "fuse.stillfs") ||
		    maj != sx.stx_dev_major || min != sx.stx_dev_minor)
			break;
		opts = strrchr(sep, ' ');
		for (char *o = opts ? strtok_r(opts + 1, ",\n", &save) : NULL; o;
		     o = strtok_r(NULL, ",\n", &save)) {
			unsigned long u;
			char end;
			if (sscanf(o, "user_id=%lu%c", &u, &end) == 1) {
				*uid = (uid_t)u;
				rc = 0;
			}
		}
		break;
	}
	free(line);
	fclose(f);
	return rc;
}

/* CPUs a quota of quota µs per period µs gives, rounded up, at least 1; 0 for none. */
static unsigned ut_quota_cpus(long long quota, long long period)
{
	if (quota <= 0 || period <= 0)
		return 0;
	long long n = (quota + period - 1) / period;
	return n > 65536 ? 65536 : (unsigned)n;
}

/* The quota of cgroup directory dir: v2's cpu.max ("QUOTA PERIOD", "max PERIOD"), else v1's
 * cpu.cfs_quota_us (-1: none) over cpu.cfs_period_us. 0 if none. */
static unsigned ut_dir_quota(const char *dir)
{
	char path[4200];
	long long quota = 0, period = 0;
	char qs[32];
	FILE *f;
	if (snprintf(path, sizeof path, "%s/cpu.max", dir) >= (int)sizeof path)
		return 0;
	if ((f = fopen(path, "re"))) {
		if (fscanf(f, "%31s %lld", qs, &period) == 2 && strcmp(qs, "max"))
			quota = strtoll(qs, NULL, 10);
		fclose(f);
		return ut_quota_cpus(quota, period);
	}
	if (snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir) >= (int)sizeof path)
		return 0;
	if ((f = fopen(path, "re"))) {
		if (fscanf(f, "%lld", &quota) != 1)
			quota = 0;
		fclose(f);
	}
	if (snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir) >= (int)sizeof path)
		return 0;
	if (quota > 0 && (f = fopen(path, "re"))) {
		if (fscanf(f, "%lld", &period) != 1)
			period = 0;
		fclose(f);
	}
	return ut_quota_cpus(quota, period);
}

/* The tightest quota from cgroup rel (a path from /proc/self/cgroup) up to its hierarchy's
 * root mounted at mnt; tight is the tightest so far (0: none). In a cgroup namespace or a
 * container, mnt's root may be a cgroup below the root rel is relative to: its quota is still
 * found, as the last directory tried. */
static unsigned ut_walk_quota(const char *mnt, char *rel, unsigned tight)
{
	char dir[4200];
	for (;;) {
		snprintf(dir, sizeof dir, "%s%s", mnt, rel);
		unsigned n = ut_dir_quota(dir);
		if (n && (!tight || n < tight))
			tight = n;
		char *slash = strrchr(rel, '/');
		if (!slash || !*rel || !strcmp(rel, "/"))
			break;
		*slash = 0; /* the parent; "" is the root */
	}
	return tight;
}

/* 1 if the comma-separated controller list ctl (up to end) names "cpu". */
static int ut_names_cpu(const char *ctl, const char *end)
{
	while (ctl < end) {
		const char *comma = memchr(ctl, ',', (size_t)(end - ctl));
		size_t len = (size_t)((comma ? comma : end) - ctl);
		if (len == 3 && !memcmp(ctl, "cpu", 3))
			return 1;
		ctl += len + 1;
	}
	return 0;
}

unsigned ut_cgroup_cpus_at(const char *self_cgroup, const char *root)
{
	char line[4096], mnt[4200];
	FILE *f = fopen(self_cgroup, "re");
	if (!f)
		return 0;
	unsigned tight = 0;
	while (fgets(line, sizeof line, f)) {
		/* HIERARCHY-ID:CONTROLLERS:PATH; v2's is "0::PATH" */
		line[strcspn(line, "\n")] = 0;
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2 || c2[1] != '/')
			continue;
		if (!strncmp(line, "0::", 3)) {
			tight = ut_walk_quota(root, c2 + 1, tight);
		} else if (ut_names_cpu(c1 + 1, c2)) {
			/* Mounted under its controllers' names ("cpu,cpuacct"), usually also
			 * linked as "cpu". */
			char rel[4096];
			snprintf(mnt, sizeof mnt, "%s/%.*s", root, (int)(c2 - c1 - 1), c1 + 1);
			struct stat st;
			if (stat(mnt, &st) < 0)
				snprintf(mnt, sizeof mnt, "%s/cpu", root);
			snprintf(rel, sizeof rel, "%s", c2 + 1);
			tight = ut_walk_quota(mnt, rel, tight);
		}
	}
	fclose(f);
	return tight;
}

static unsigned ut_cpus;
static pthread_once_t ut_cpus_once = PTHREAD_ONCE_INIT;

static void ut_cpus_init(void)
{
	cpu_set_t set;
	unsigned n = 0;
	if (sched_getaffinity(0, sizeof set, &set) == 0)
		n = (unsigned)CPU_COUNT(&set);
	if (n < 1) {
		long on = sysconf(_SC_NPROCESSORS_ONLN);
		n = on > 0 ? (unsigned)on : 1;
	}
	unsigned q = ut_cgroup_cpus_at("/proc/self/cgroup", "/sys/fs/cgroup");
	if (q && q < n)
		n = q;
	ut_cpus = n;
}

unsigned ut_cpu_count(void)
{
	pthread_once(&ut_cpus_once, ut_cpus_init);
	return ut_cpus;
}

int ut_atime_kept(int fd)
{
	struct statvfs sv;
	struct statfs sf;
	if (fstatvfs(fd, &sv) < 0 || fstatfs(fd, &sf) < 0)
		return 0;
	if (sv.f_flag & (ST_NOATIME | ST_NODIRATIME))
		return 0;
	switch ((unsigned long)sf.f_type) {
	case 0xEF53:       /* ext2/3/4 */
	case 0x58465342:   /* XFS */
	case 0x9123683E:   /* btrfs */
	case 0x01021994:   /* tmpfs */
		return 1;
	default:
		return 0;
	}
}

int ut_unread_since_change(const struct stat *st)
{
	/* relatime (and strictatime) set the atime of an inode read or listed while its atime is
	 * not after its ctime: so an atime still before the ctime means no read since. */
	return ut_ts_ns(st->st_atim) < ut_ts_ns(st->st_ctim);
}
