/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Small shared helpers: logging, time, errors. Prefix: log_, ut_. */
#ifndef STILL_UTIL_H
#define STILL_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Messages go to stderr as "PROG: message"; the daemon may redirect them to syslog. */
void log_init(const char *prog);
void log_to_syslog(int on);
void log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_set_quiet(int quiet);
/* A message whose texts are escaped already (a line another stillfs process logged with these
 * functions, or made from one): control characters are escaped again, backslashes are not. */
enum log_kind { LOG_KIND_INFO, LOG_KIND_WARN, LOG_KIND_ERR };
void log_relay(enum log_kind kind, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Last error message logged with log_err (for status reporting). */
const char *log_last_error(void);
/* How many errors have been logged so far. */
unsigned log_error_count(void);

/* CPUs this process may use: its affinity mask, lowered to its cgroups' CPU quota (the
 * tightest of its own cgroup and the ones above it, rounded up). At least 1; computed once. */
unsigned ut_cpu_count(void);
/* That quota in CPUs, 0 if none: self_cgroup is read as /proc/self/cgroup, root as the
 * directory where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup; cpu.max), v1's cpu
 * controller under it as "cpu,cpuacct" or "cpu" (cpu.cfs_quota_us, cpu.cfs_period_us). */
unsigned ut_cgroup_cpus_at(const char *self_cgroup, const char *root);

/* Whether every read or listing of a file or directory on the file system holding fd leaves
 * its atime after its ctime (relatime or strictatime rules): 1 for ext4, XFS, btrfs and tmpfs
 * mounted without noatime or nodiratime, else 0 (cannot be told). Readers that open with
 * O_NOATIME leave no trace even there. */
int ut_atime_kept(int fd);
/* The inode st was neither read nor listed since its ctime last changed, where
 * ut_atime_kept holds: its atime is still before its ctime. */
struct stat;
int ut_unread_since_change(const struct stat *st);

double ut_now(void);                 /* CLOCK_MONOTONIC seconds */
struct timespec ut_realtime(void);
/* Seconds until the real-time clock reads `wall` (seconds since the epoch), but no later than
 * the monotonic time `limit` (ut_now): a clock stepped back is not waited for longer. */
double ut_wall_left(double wall, double limit);
int64_t ut_ts_ns(struct timespec t);
struct timespec ut_ns_ts(int64_t ns);  /* the inverse, also before 1970 */
struct stat;
int ut_same_file(const struct stat *a, const struct stat *b);  /* same device and inode */
void ut_format_bytes(uint64_t n, char *buf, size_t len);
/* The length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF), or 0. */
size_t ut_utf8_len(const unsigned char *p);
/* src into dst (len bytes, len > 0) with control characters (C0, DEL and C1) and bytes that
 * are not well-formed UTF-8 written as \n, \t or \xHH and, if backslash, "\" as "\\": a
 * file name can then neither break a log or status line, nor pass for another text, nor
 * drive a terminal. Cut to fit, never inside an escape or a character. Returns dst. */
char *ut_escape(char *dst, size_t len, const char *src, int backslash);
/* What openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) does, walked one component at a time
 * with O_NOFOLLOW, for where openat2 is missing (ENOSYS: kernels before 5.6, some seccomp
 * sandboxes, valgrind). An fd or -errno (-ELOOP for a symlink on the way, -EXDEV for ".."). */
int ut_open_beneath_walk(int dirfd, const char *path, int flags);
/* Whether fd is the root directory of a fuse.stillfs mount, and the uid of who mounted it
 * (the user_id= the kernel shows, which no one can choose but the mounter): 0 and *uid, or
 * -EXDEV when it is not such a root, or another -errno. Another user's FUSE file system may
 * call itself stillfs too; only *uid tells them apart. Sends no request to the file system. */
int ut_stillfs_mount(int fd, uid_t *uid);



/* Strings that live as long as their arena: copied one after another into chunks of 64 KiB,
 * without the per-allocation header and rounding of malloc (a path of 14 bytes takes 14,
 * not 32), all freed at once. A zeroed struct ut_arena is empty. */
struct ut_arena {
	char *chunk;           /* the newest chunk; each begins with a pointer to the one before */
	size_t used, room;
};
char *ut_arena_strdup(struct ut_arena *a, const char *s); /* NULL when out of memory */
void ut_arena_free(struct ut_arena *a);

/* A string -> index map (open addressing). Keys are borrowed, not copied. */
size_t ut_hash(const char *s); /* FNV-1a, its hash of keys */
struct ut_map {
	const char **keys;
	size_t *vals;
	size_t cap, n;
};
int ut_map_put(struct ut_map *m, const char *key, size_t val);   /* 0 or -ENOMEM */
int ut_map_get(const struct ut_map *m, const char *key, size_t *val); /* 1 found, 0 not */
void ut_map_del(struct ut_map *m, const char *key);
void ut_map_free(struct ut_map *m);

/* pread until n bytes or end of file: the count read, or -errno. */
ssize_t ut_pread_full(int fd, uint8_t *p, size_t n, off_t off);
/* pwrite all n bytes (retrying short writes and EINTR): 0 or -errno. */
int ut_pwrite_all(int fd, const uint8_t *p, size_t n, off_t off);

#endif
