/* SPDX-License-Identifier: GPL-2.0-or-later */
/* stillfs: mount a live store directory and serve consistent `.snapshot/` generations.
 *
 * Start-up order matters: everything that can fail is checked and every descriptor is opened
 * before mounting (the mountpoint may cover the store itself, and errors must reach the
 * user's terminal), then the daemon detaches, and only then are threads started. */
#include "stillfs.h"

#include "util.h"
#include "clone.h"

#include <dirent.h>
#include <linux/capability.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#define SF_CACHE_MARKER ".stillfs-cache"
#define SF_DEFAULT_MAX_AGE 10.0
#define SF_DEFAULT_LINGER 30.0
#define SF_DEFAULT_THREADS 64
/* Request threads that callers waiting for a capture may never take: the live view is served
 * meanwhile, and the capture's helper writes mapped pages back through the mount (gen.c). */
#define SF_FREE_THREADS(n) ((n) / 4 > 2 ? (n) / 4 : 2)
#define SF_MIN_THREADS 4
#define SF_DEFAULT_CAPTURE_NICE 10
#define SF_FUSE_MAGIC 0x65735546

enum { SF_EXIT_OK = 0, SF_EXIT_FAIL = 1, SF_EXIT_USAGE = 2 };
/* Options noted here and left for libfuse too. */
enum { SF_KEY_MAX_THREADS };

static const struct fuse_opt sf_optspec[] = {
	{ "snapdir=%s", offsetof(struct sf_opts, snapdir_opt), 0 },
	{ "snapshot_max_age=%s", offsetof(struct sf_opts, max_age_opt), 0 },
	{ "snapshot_linger=%s", offsetof(struct sf_opts, linger_opt), 0 },
	{ "settle_timeout=%s", offsetof(struct sf_opts, settle_opt), 0 },
	{ "cache=%s", offsetof(struct sf_opts, cache_opt), 0 },
	{ "no_passthrough", offsetof(struct sf_opts, no_passthrough), 1 },
	{ "no_live_cache", offsetof(struct sf_opts, no_live_cache), 1 },
	{ "no_recycle", offsetof(struct sf_opts, no_recycle), 1 },
	{ "max_nodes=%s", offsetof(struct sf_opts, max_nodes_opt), 0 },
	{ "max_user_fds=%s", offsetof(struct sf_opts, max_user_fds_opt), 0 },
	{ "capture_nice=%s", offsetof(struct sf_opts, capture_nice_opt), 0 },
	{ "metrics_file=%s", offsetof(struct sf_opts, metrics_file), 0 },
	FUSE_OPT_KEY("max_threads=", SF_KEY_MAX_THREADS),
	FUSE_OPT_END
};

static void sf_usage(const char *prog)
{
	printf("usage: %s STORE MOUNTPOINT [options]\n\n"
	       "Mount the live directory STORE at MOUNTPOINT (which may be STORE itself) and\n"
	       "serve consistent point-in-time snapshots of it under MOUNTPOINT/.snapshot/.\n\n"
	       "stillfs options:\n"
	       "    -o snapdir=hidden|visible  list .snapshot in the root directory (default: hidden)\n"
	       "    -o snapshot_max_age=SECS   capture anew when .snapshot is opened and the\n"
	       "                               current generation is older (default: %g)\n"
	       "    -o snapshot_linger=SECS    keep a generation pinned this long after its\n"
	       "                               last handle closes (default: %g)\n"
	       "    -o settle_timeout=SECS     give up a capture when the store never holds still\n"
	       "                               for a consistent cut (default: 30)\n"
	       "    -o cache=DIR               where generations are kept (default:\n"
	       "                               /var/cache/stillfs/ESCAPED-STORE as root,\n"
	       "                               $XDG_CACHE_HOME/stillfs/ESCAPED-STORE otherwise)\n"
	       "    -o no_passthrough          serve every read and write through the daemon, even\n"
	       "                               where the kernel could pass them to the store\n"
	       "    -o no_live_cache           never let the kernel cache live entries and\n"
	       "                               attributes (default: cached, and invalidated by\n"
	       "                               inotify when the store changes directly)\n"
	       "    -o no_recycle              delete an old generation at once (default: the last\n"
	       "                               one is kept until the next capture, which moves\n"
	       "                               its database copies over and rewrites only the\n"
	       "                               pages that changed)\n"
	       "    -o max_nodes=N             most inodes kept for the kernel (default: 262144, or\n"
	       "                               3/4 of the descriptor limit where nodes cannot be\n"
	       "                               reopened by file handle); past 3/4 of it the least\n"
	       "                               recently used are offered back to the kernel\n"
	       "    -o max_user_fds=N          most open files, directories and lock owners of one\n"
	       "                               user other than root (default: a quarter of the\n"
	       "                               descriptors left for them; see stillfs(1))\n"
	       "    -o capture_nice=N          CPU niceness of captures, so that the application\n"
	       "                               keeps its cores (default: %d; 0 = the daemon's)\n"
	       "    -o metrics_file=PATH       write Prometheus metrics to PATH (atomically) at\n"
	       "                               start and after each capture, e.g. for\n"
	       "                               node_exporter's textfile collector\n\n",
	       prog, SF_DEFAULT_MAX_AGE, SF_DEFAULT_LINGER, SF_DEFAULT_CAPTURE_NICE);
	printf("Status: cat MOUNTPOINT/%s or %s (or stillctl status MOUNTPOINT).\n\n", SF_STATUS,
	       SF_STATUS_JSON);
	printf("FUSE options:\n");
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

static int sf_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct sf_opts *o = data;
	(void)outargs;
	if (key == SF_KEY_MAX_THREADS) {
		o->max_threads_given = 1;   /* libfuse parses the number (cmd.max_threads) */
		return 1;
	}
	if (key == FUSE_OPT_KEY_NONOPT && !o->store) {
		o->store = strdup(arg);
		return 0;
	}
	/* The second is the mountpoint: noted to check it ourselves, left for libfuse. */
	if (key == FUSE_OPT_KEY_NONOPT && !o->mountpoint)
		o->mountpoint = strdup(arg);
	return 1;
}

/* libfuse's own messages go where ours go (syslog once detached). It builds a line from
 * several calls, so collect until the newline. */
__attribute__((format(printf, 2, 0)))
static void sf_fuse_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static char line[1024];
	static size_t len;
	static enum fuse_log_level worst = FUSE_LOG_DEBUG;

	pthread_mutex_lock(&mu);
	int n = vsnprintf(line + len, sizeof line - len, fmt, ap);
	len = n < 0 ? len : len + (size_t)n >= sizeof line ? sizeof line - 1 : len + (size_t)n;
	worst = level < worst ? level : worst;
	if (len && (line[len - 1] == '\n' || len == sizeof line - 1)) {
		while (len && line[len - 1] == '\n')
			line[--len] = 0;
		if (worst <= FUSE_LOG_ERR)
			log_err("%s", line);
		else if (worst <= FUSE_LOG_WARNING)
			log_warn("%s", line);
		else
			log_info("%s", line);
		len = 0;
		worst = FUSE_LOG_DEBUG;
	}
	pthread_mutex_unlock(&mu);
}

static int sf_is_mountpoint(const char *path)
{
	struct statx sx;
	if (statx(AT_FDCWD, path, AT_NO_AUTOMOUNT, STATX_BASIC_STATS, &sx) < 0)
		return 0;
	return (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	       (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

/* 1 if path equals dir or lies below it (both canonical). */
static int sf_within(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	if (n == 1)
		return 1;
	return !strncmp(path, dir, n) && (path[n] == 0 || path[n] == '/');
}

/* The default cache name for a store: its path escaped the way systemd-escape --path does,
 * so "/var/lib/chroma" becomes "var-lib-chroma". */
static char *sf_escape_path(const char *path)
{
	size_t len = strlen(path);
	char *out = malloc(len * 4 + 2), *p = out;
	if (!out)
		return NULL;
	while (*path == '/')
		path++;
	if (!*path) {
		strcpy(out, "-");
		return out;
	}
	for (const char *s = path; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '/') {
			if (s[1] && s[1] != '/')
				*p++ = '-';
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			   c == '_' || c == ':' || (c == '.' && s != path)) {
			*p++ = (char)c;
		} else {
			p += sprintf(p, "\\x%02x", c);
		}
	}
	*p = 0;
	return out;
}

static char *sf_default_cache(const char *store)
{
	char *esc = sf_escape_path(store), *path = NULL;
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	int r = -1;
	if (!esc)
		return NULL;
	if (geteuid() == 0)
		r = asprintf(&path, "/var/cache/stillfs/%s", esc);
	else if (xdg && xdg[0] == '/')
		r = asprintf(&path, "%s/stillfs/%s", xdg, esc);
	else if (home && home[0] == '/')
		r = asprintf(&path, "%s/.cache/stillfs/%s", home, esc);
	free(esc);
	return r < 0 ? NULL : path;
}

/* mkdir -p, mode 0700 for what it creates; *made: whether the last component was created
 * now. */
static int sf_mkdirs(const char *path, int *made)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		return -ENAMETOOLONG;
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || !*p) {
			char c = *p;
			*p = 0;
			*made = mkdir(buf, 0700) == 0;
			if (!*made && errno != EEXIST)
				return -errno;
			*p = c;
			if (!c)
				break;
		}
	}
	return 0;
}

/* Every directory in which a name on the way to path is looked up may be changed only by
 * root or the daemon's user (or is sticky): anyone else could swap that name for a symlink
 * and have the root daemon write, delete or chmod where they choose. Checked for path as
 * given (a directory of the user's on the way, even one a symlink then leads away from) and
 * as it resolves (where a symlink leads). path is absolute. One line on stderr and -EPERM,
 * or -errno, if not. */
static int sf_path_safe(const char *what, const char *path)
{
	uid_t me = geteuid();
	char *paths[2] = { strdup(path), realpath(path, NULL) }, *slash;
	struct stat st;
	int rc = 0;

	if (!paths[0] || !paths[1]) {
		rc = -errno;
		fprintf(stderr, "stillfs: %s %s: %s\n", what, path, strerror(errno));
		goto out;
	}
	for (int i = 0; i < 2 && !rc; i++) {
		char *p = paths[i];
		while ((slash = strrchr(p, '/'))) {
			slash[slash == p] = 0;          /* the parent; "/" stays "/" */
			if (stat(p, &st) < 0) {
				rc = -errno;
				fprintf(stderr, "stillfs: %s: %s\n", p, strerror(errno));
				break;
			}
			if ((st.st_uid != 0 && st.st_uid != me) ||
			    ((st.st_mode & 0022) && !(st.st_mode & S_ISVTX))) {
				fprintf(stderr, "stillfs: %s %s is inside %s, which others may change; "
					"give one in a directory only root or uid %u may write\n", what,
					path, p, (unsigned)me);
				rc = -EPERM;
				break;
			}
			if (!p[1])
				break;
		}
	}
out:
	free(paths[0]);
	free(paths[1]);
	return rc;
}

/* The cache is ours alone: the daemon's own directory, reached only through directories
 * nobody else may change (sf_path_safe). fd is the opened cache. One line on stderr and
 * -EPERM if not. */
static int sf_cache_safe(const char *dir, int fd)
{
	uid_t me = geteuid();
	struct stat st, named;
	int rc = sf_path_safe("cache directory", dir);

	if (rc)
		return rc;
	if (fstat(fd, &st) < 0 || stat(dir, &named) < 0) {
		rc = -errno;
		fprintf(stderr, "stillfs: cache directory %s: %s\n", dir, strerror(errno));
		return rc;
	}
	if (!ut_same_file(&st, &named)) {
		fprintf(stderr, "stillfs: cache directory %s changed while this daemon started\n", dir);
		return -EAGAIN;
	}
	if (st.st_uid != me) {
		fprintf(stderr, "stillfs: cache directory %s belongs to uid %u, not to this daemon's "
			"uid %u\n", dir, (unsigned)st.st_uid, (unsigned)me);
		return -EPERM;
	}
	return 0;
}

/* Open the cache directory and claim it: a marker file, flock'ed for as long as we run,
 * says it is ours, so its contents may be deleted and no second daemon shares it. */
static int sf_open_cache(void)
{
	const char *dir = sf.o.cache;
	int made = 0, marked = 0, rc = sf_mkdirs(dir, &made), fd;
	struct stat st, named;

	if (rc) {
		fprintf(stderr, "stillfs: cannot create the cache directory %s: %s\n", dir, strerror(-rc));
		return rc;
	}
	sf.cachefd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sf.cachefd < 0) {
		rc = -errno;
		fprintf(stderr, "stillfs: cache directory %s: %s\n", dir, strerror(errno));
		return rc;
	}
	if ((rc = sf_cache_safe(dir, sf.cachefd)))
		return rc;
	fd = openat(sf.cachefd, SF_CACHE_MARKER, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT) {
		/* A new cache must be empty: we delete whatever is in it. */
		int dfd = openat(sf.cachefd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
		struct dirent *de;
		int others = 0;
		while (d && (de = readdir(d)))
			others |= strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
		if (d)
			closedir(d);
		if (others) {
			fprintf(stderr, "stillfs: cache directory %s is not empty and not a stillfs "
				"cache; give an empty or new one with -o cache=DIR\n", dir);
			return -ENOTEMPTY;
		}
		fd = openat(sf.cachefd, SF_CACHE_MARKER, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		marked = fd >= 0;
	}
	if (fd < 0) {
		rc = -errno;
		fprintf(stderr, "stillfs: cache directory %s: %s\n", dir, strerror(errno));
		return rc;
	}
	sf.cachelockfd = fd;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		rc = -errno;
		fprintf(stderr, "stillfs: cache directory %s is in use by another stillfs\n", dir);
		return rc;
	}
	/* A daemon whose start failed removes the marker it made (main): the one we locked must
	 * still be the one in the directory. */
	if (fstat(fd, &st) < 0 ||
	    fstatat(sf.cachefd, SF_CACHE_MARKER, &named, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !ut_same_file(&st, &named)) {
		fprintf(stderr, "stillfs: cache directory %s changed while this daemon started; "
			"start it again\n", dir);
		return -EAGAIN;
	}
	/* Which store the cache is of, for stillctl cache list: its name need not say. */
	if (ftruncate(fd, 0) < 0 ||
	    dprintf(fd, "store: %s\nmountpoint: %s\n", sf.o.store, sf.o.mountpoint) < 0)
		fprintf(stderr, "stillfs: warning: cache directory %s: cannot write its marker: %s\n",
			dir, strerror(errno));
	/* Only now is the cache ours to undo if this start fails. */
	sf.cache_marked = marked;
	sf.cache_made = made && marked;
	if (fchmod(sf.cachefd, 0700) < 0 || fstat(sf.cachefd, &st) < 0) {
		rc = -errno;
		fprintf(stderr, "stillfs: cache directory %s: %s\n", dir, strerror(errno));
		return rc;
	}
	rc = gen_clean_cache(sf.cachefd, SF_CACHE_MARKER, &sf.kept_until);
	if (rc)
		fprintf(stderr, "stillfs: warning: cannot empty the cache %s: %s\n", dir, strerror(-rc));
	return 0;
}

/* -o NAME=TEXT, if given: a number from min to max (a whole one if whole), all of TEXT.
 * 0, or -1 after one line on stderr. */
static int sf_number(const char *name, const char *text, double min, double max, int whole,
		     double *out)
{
	char *end;
	double v;

	if (!text)
		return 0;
	errno = 0;
	v = strtod(text, &end);
	if (!*text || *text == ' ' || *text == '\t' || *end || errno || !(v >= min && v <= max) ||
	    (whole && v != (double)(long long)v)) {
		fprintf(stderr, "stillfs: %s must be %s from %g to %g, not '%s'\n", name,
			whole ? "a whole number" : "a number", min, max, text);
		return -1;
	}
	*out = v;
	return 0;
}

/* -o metrics_file: its directory is opened now and written in by descriptor only; never
 * in the store, the mountpoint or the cache. */
static int sf_metrics_path(void)
{
	char *path = NULL, *cwd = NULL, *slash, *dir = NULL;
	const char *base, *given;
	int rc = SF_EXIT_USAGE;

	if (sf.o.metrics_file[0] == '/')
		path = strdup(sf.o.metrics_file);
	else if ((cwd = getcwd(NULL, 0)) && asprintf(&path, "%s/%s", cwd, sf.o.metrics_file) < 0)
		path = NULL;
	free(cwd);
	if (!path) {
		fprintf(stderr, "stillfs: metrics_file=%s: %s\n", sf.o.metrics_file, strerror(errno));
		return SF_EXIT_FAIL;
	}
	slash = strrchr(path, '/');
	*slash = 0;
	base = slash + 1;
	given = path[0] ? path : "/";
	if (!*base || !strcmp(base, ".") || !strcmp(base, "..") || strlen(base) > 200) {
		fprintf(stderr, "stillfs: metrics_file=%s: not a file name\n", sf.o.metrics_file);
	} else if (!(dir = realpath(given, NULL))) {
		fprintf(stderr, "stillfs: metrics_file=%s: %s\n", sf.o.metrics_file, strerror(errno));
		rc = SF_EXIT_FAIL;
	} else if (sf_within(dir, sf.o.store) || sf_within(dir, sf.o.mountpoint) ||
		   sf_within(dir, sf.o.cache)) {
		fprintf(stderr, "stillfs: metrics_file %s must be outside the store, the mountpoint "
			"and the cache\n", sf.o.metrics_file);
	} else if (sf_path_safe("metrics_file directory", given)) {
		/* Its directory itself may be another user's (a collector's): it is written in
		 * by descriptor only; but no one else may put another directory in its place. */
		rc = SF_EXIT_FAIL;
	} else {
		rc = ob_metrics_open(dir, base) ? SF_EXIT_FAIL : SF_EXIT_OK;
	}
	free(dir);
	free(path);
	return rc;
}

/* Everything about paths and options; one line on stderr and non-zero on the first error. */
static int sf_validate(void)
{
	struct sf_opts *o = &sf.o;
	char *p;
	struct stat st;
	struct statfs sfs;
	double nodes = (double)o->max_nodes, nice = o->capture_nice, ufds = 0;

	if (sf_number("snapshot_max_age", o->max_age_opt, 0, 1e9, 0, &o->max_age) ||
	    sf_number("snapshot_linger", o->linger_opt, 0, 1e9, 0, &o->linger) ||
	    sf_number("settle_timeout", o->settle_opt, 0.001, 1e9, 0, &o->settle) ||
	    sf_number("max_nodes", o->max_nodes_opt, 0, 1e12, 1, &nodes) ||
	    sf_number("max_user_fds", o->max_user_fds_opt, 1, 1e12, 1, &ufds) ||
	    sf_number("capture_nice", o->capture_nice_opt, 0, 19, 1, &nice))
		return SF_EXIT_USAGE;
	o->max_nodes = (unsigned long)nodes;
	o->max_user_fds = (unsigned long)ufds;
	o->capture_nice = (int)nice;
	if (o->cache_opt && !o->cache_opt[0]) {
		fprintf(stderr, "stillfs: -o cache= needs a directory\n");
		return SF_EXIT_USAGE;
	}
	if (o->snapdir_opt) {
		if (!strcmp(o->snapdir_opt, "visible"))
			o->snapdir_visible = 1;
		else if (strcmp(o->snapdir_opt, "hidden")) {
			fprintf(stderr, "stillfs: snapdir must be 'hidden' or 'visible', not '%s'\n",
				o->snapdir_opt);
			return SF_EXIT_USAGE;
		}
	}
	if (!(p = realpath(o->store, NULL))) {
		fprintf(stderr, "stillfs: store %s: %s\n", o->store, strerror(errno));
		return SF_EXIT_FAIL;
	}
	free(o->store);
	o->store = p;
	if (stat(o->store, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "stillfs: store %s: not a directory\n", o->store);
		return SF_EXIT_FAIL;
	}
	if (!(p = realpath(o->mountpoint, NULL))) {
		fprintf(stderr, "stillfs: mountpoint %s: %s\n", o->mountpoint, strerror(errno));
		return SF_EXIT_FAIL;
	}
	free(o->mountpoint);
	o->mountpoint = p;
	if (stat(o->mountpoint, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "stillfs: mountpoint %s: not a directory\n", o->mountpoint);
		return SF_EXIT_FAIL;
	}
	int over = !strcmp(o->store, o->mountpoint);
	if (statfs(o->mountpoint, &sfs) == 0 && sfs.f_type == SF_FUSE_MAGIC &&
	    sf_is_mountpoint(o->mountpoint)) {
		fprintf(stderr, "stillfs: mountpoint %s is already a FUSE mount (stillfs running?)\n",
			o->mountpoint);
		return SF_EXIT_FAIL;
	}
	/* Mounting over the store is fine even when the store is a mount of its own. */
	if (!over && sf_is_mountpoint(o->mountpoint)) {
		fprintf(stderr, "stillfs: mountpoint %s is already a mount point\n", o->mountpoint);
		return SF_EXIT_FAIL;
	}
	/* Below the store, the mount would appear inside what it serves, and captures would
	 * walk into it. */
	if (!over && sf_within(o->mountpoint, o->store)) {
		fprintf(stderr, "stillfs: mountpoint %s is inside the store %s (it may be the store "
			"itself)\n", o->mountpoint, o->store);
		return SF_EXIT_USAGE;
	}
	o->cache = o->cache_opt ? strdup(o->cache_opt) : sf_default_cache(o->store);
	if (!o->cache) {
		fprintf(stderr, "stillfs: no cache directory: set HOME or use -o cache=DIR\n");
		return SF_EXIT_USAGE;
	}
	if (o->cache[0] != '/') {
		char *abs = realpath(".", NULL);
		if (!abs || asprintf(&p, "%s/%s", abs, o->cache) < 0) {
			free(abs);
			fprintf(stderr, "stillfs: cache %s: %s\n", o->cache, strerror(errno));
			return SF_EXIT_FAIL;
		}
		free(abs);
		free(o->cache);
		o->cache = p;
	}
	if (sf_within(o->cache, o->store) || sf_within(o->cache, o->mountpoint) ||
	    sf_within(o->store, o->cache)) {
		fprintf(stderr, "stillfs: the cache %s must be outside the store and the mountpoint\n",
			o->cache);
		return SF_EXIT_USAGE;
	}
	if (sf_open_cache())
		return SF_EXIT_FAIL;
	/* The cache may have been reached through a symlink: check the real place too. */
	if ((p = realpath(o->cache, NULL))) {
		int bad = sf_within(p, o->store) || sf_within(p, o->mountpoint);
		free(o->cache);
		o->cache = p;
		if (bad) {
			fprintf(stderr, "stillfs: the cache %s must be outside the store and the "
				"mountpoint\n", o->cache);
			return SF_EXIT_USAGE;
		}
	}
	if (o->metrics_file)
		return sf_metrics_path();
	return SF_EXIT_OK;
}

/* Descriptors of handles and lock owners charged per user (sf_fd_charge); sf_fd_mu. */
struct sf_user {
	uid_t uid;
	size_t n;
};
static pthread_mutex_t sf_fd_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sf_user *sf_users;
static size_t sf_nusers, sf_users_cap;
static size_t sf_fd_pool;          /* most charged descriptors, all users together */
static size_t sf_fd_limit;         /* RLIMIT_NOFILE, shared out by sf_budgets */
static int sf_fd_handles;          /* node descriptors are reopened by file handle */
static size_t sf_fd_all, sf_fd_users;   /* charged now: in all, to users other than root */

/* Root and the daemon's own user are charged against the pool alone. */
static int sf_privileged(uid_t uid)
{
	return uid == 0 || uid == sf.uid;
}

int sf_fd_charge(uid_t uid)
{
	int rc = 0;
	size_t i = 0;

	pthread_mutex_lock(&sf_fd_mu);
	if (sf_fd_all >= sf_fd_pool) {
		rc = -ENFILE;
	} else if (!sf_privileged(uid)) {
		while (i < sf_nusers && sf_users[i].uid != uid)
			i++;
		if (sf_fd_users >= sf_fd_pool - sf_fd_pool / 8) {
			rc = -ENFILE;            /* what is left is root's */
		} else if (i < sf_nusers && sf_users[i].n >= sf.o.max_user_fds) {
			rc = -EMFILE;
		} else if (i == sf_nusers) {
			if (sf_nusers == sf_users_cap) {
				size_t cap = sf_users_cap ? sf_users_cap * 2 : 16;
				struct sf_user *u = realloc(sf_users, cap * sizeof *u);
				if (!u)
					rc = -ENOMEM;
				else
					sf_users = u, sf_users_cap = cap;
			}
			if (!rc)
				sf_users[sf_nusers++] = (struct sf_user){ uid, 0 };
		}
		if (!rc) {
			sf_users[i].n++;
			sf_fd_users++;
		}
	}
	if (!rc)
		sf_fd_all++;
	pthread_mutex_unlock(&sf_fd_mu);
	return rc;
}

void sf_fd_counts(size_t *charged, size_t *limit)
{
	pthread_mutex_lock(&sf_fd_mu);
	*charged = sf_fd_all;
	*limit = sf_fd_limit;
	pthread_mutex_unlock(&sf_fd_mu);
}

void sf_fd_uncharge(uid_t uid)
{
	pthread_mutex_lock(&sf_fd_mu);
	sf_fd_all--;
	if (!sf_privileged(uid))
		for (size_t i = 0; i < sf_nusers; i++)
			if (sf_users[i].uid == uid) {
				sf_fd_users--;
				if (!--sf_users[i].n)
					sf_users[i] = sf_users[--sf_nusers];
				break;
			}
	pthread_mutex_unlock(&sf_fd_mu);
}

/* Share the descriptor limit out: a reserve for what must not fail (captures, directory
 * scans, transient reopens), node descriptors (sf.fd_budget), and the pool that handles and
 * lock owners are charged to. With file handles, nodes need only a quarter, however many
 * inodes the kernel knows; without, each node holds a descriptor and the node table is
 * bounded instead, so the limit is raised as far as privilege allows. */
static void sf_budgets(void)
{
	struct rlimit rl;
	int handles = nd_handles_init();

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		rl.rlim_cur = rl.rlim_max = 1024;
	if (!handles) {
		FILE *f = fopen("/proc/sys/fs/nr_open", "re");
		unsigned long nr_open = 0;
		if (f && fscanf(f, "%lu", &nr_open) == 1 && nr_open > rl.rlim_max) {
			struct rlimit more = { nr_open, nr_open };
			if (setrlimit(RLIMIT_NOFILE, &more) == 0)
				rl = more;
		}
		if (f)
			fclose(f);
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	size_t limit = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1UL << 30) ? 1UL << 30
										   : (size_t)rl.rlim_cur;
	size_t avail = limit > 256 ? limit - 64 : limit / 2;
	sf.fd_budget = handles ? avail / 4 : avail / 4 * 3;
	sf_fd_pool = avail - sf.fd_budget;
	if (!sf.o.max_user_fds)
		sf.o.max_user_fds = sf_fd_pool / 4 ? sf_fd_pool / 4 : 1;
	/* With handles the node table costs memory only: prune it well before that matters. */
	sf.node_budget = handles ? 262144 : sf.fd_budget;
	if (sf.o.max_nodes > 0 && (handles || (size_t)sf.o.max_nodes < sf.node_budget))
		sf.node_budget = (size_t)sf.o.max_nodes;
	if (sf.fd_budget > sf.node_budget)
		sf.fd_budget = sf.node_budget;
	sf_fd_limit = limit;
	sf_fd_handles = handles;
}

/* Every descriptor from 3 up closes at exec. libfuse keeps fusermount3's socket (auto_unmount)
 * open without FD_CLOEXEC, and whoever started the daemon may have left descriptors open. A
 * capture helper that inherited the socket would keep a dead daemon's mount in place until
 * the helper ends (one stuck in I/O: minutes); fusermount3 unmounts only once the last copy
 * closes. A child gets nothing but what posix_spawn hands it explicitly. */
static void sf_cloexec_all(void)
{
#ifdef CLOSE_RANGE_CLOEXEC
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
		return;
#endif
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	if (!d) {
		log_warn("/proc/self/fd: %s: descriptors may leak into capture helpers",
			 strerror(errno));
		return;
	}
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name), fl;
		if (fd < 3 || fd == dirfd(d) || (fl = fcntl(fd, F_GETFD)) < 0)
			continue;
		fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
	}
	closedir(d);
}

/* Which of the descriptors below SF_SOCKET_SCAN are sockets; and the highest that became one
 * since (the socket libfuse keeps open for fusermount3 with auto_unmount), or -1. */
#define SF_SOCKET_SCAN 1024
static void sf_sockets(unsigned char *is)
{
	struct stat st;
	for (int fd = 0; fd < SF_SOCKET_SCAN; fd++)
		is[fd] = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

static int sf_new_socket(const unsigned char *before)
{
	unsigned char now[SF_SOCKET_SCAN];
	sf_sockets(now);
	for (int fd = SF_SOCKET_SCAN - 1; fd >= 0; fd--)
		if (now[fd] && !before[fd])
			return fd;
	return -1;
}

static int sf_open_fds(void)
{
	struct stat st;
	sf.storefd = open(sf.o.store, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sf.storefd < 0 || fstat(sf.storefd, &st) < 0) {
		fprintf(stderr, "stillfs: store %s: %s\n", sf.o.store, strerror(errno));
		return -1;
	}
	if (access("/proc/self/fd", X_OK) < 0) {
		fprintf(stderr, "stillfs: /proc/self/fd: %s (is /proc mounted?)\n", strerror(errno));
		return -1;
	}
	sf.root.fd = sf.storefd;
	sf.root.dev = st.st_dev;
	sf.root.ino = st.st_ino;
	sf.root.type = S_IFDIR;
	sf.root.kind = ND_LIVE;
	sf.root.is_static = 1;
	sf.root.nlookup = 2;
	sf.snapdir.fd = -1;
	sf.snapdir.ino = (ino_t)0x57111f5ULL << 32;   /* any constant; no backing inode */
	sf.snapdir.type = S_IFDIR;
	sf.snapdir.kind = ND_SNAPDIR;
	sf.snapdir.is_static = 1;
	sf.snapdir.nlookup = 1;
	sf.snapdir_st = st;
	sf.snapdir_st.st_ino = sf.snapdir.ino;
	/* Its listing is the snapshot of the root's: no more open than the root's ACL allows. */
	sf.snapdir_st.st_mode = S_IFDIR | (cap_acl_mode(sf.storefd, st.st_mode) & 07555);
	sf.snapdir_st.st_nlink = 2;
	sf.snapdir_st.st_atim = sf.snapdir_st.st_mtim = sf.snapdir_st.st_ctim = ut_realtime();
	sf.status.fd = -1;
	sf.status.ino = sf.snapdir.ino + 1;
	sf.status.type = S_IFREG;
	sf.status.kind = ND_STATUS;
	sf.status.is_static = 1;
	sf.status.nlookup = 1;
	sf.status_json = sf.status;
	sf.status_json.ino = sf.status.ino + 1;
	sf_budgets();
	return 0;
}

static void sf_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* Reads are served from a descriptor; let libfuse splice them to the kernel. */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	/* Requests are read into memory, never spliced from /dev/fuse: fusecompat.c reads
	 * flags off each one as it arrives (fc_kill_suidgid). */
	conn->want &= ~FUSE_CAP_SPLICE_READ;
	/* We write as root: the kernel must clear set-ID bits itself on a user's write. Its
	 * successor, FUSE_HANDLE_KILLPRIV_V2, which tells us when to, is negotiated by fc_init
	 * or on the wire (fusecompat.c) and honoured by op_kill_suidgid. */
	conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
	/* Never cache writes: the store is also written directly. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/* Pages of live files must be dropped when the store changed them underneath. */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* default_permissions alone checks the mode bits only: a live directory or file whose
	 * POSIX ACL denies a user what its mode grants (user:x:---) would be open to them through
	 * the mount, since lookups and listings run as root. With this the kernel reads each
	 * node's system.posix_acl_access (op_getxattr) and checks it too. Snapshot nodes have no
	 * ACL: their modes were narrowed by the capture instead (cap_acl_narrow). */
	if (conn->capable & FUSE_CAP_POSIX_ACL)
		conn->want |= FUSE_CAP_POSIX_ACL;
	else
		log_warn("the kernel cannot check POSIX ACLs for FUSE: ACLs in the store that deny "
			 "what the mode bits allow are not enforced through the mount");
	fc_init(conn);
	conn->max_write = 1U << 20;
	conn->max_readahead = conn->max_readahead > (1U << 20) ? conn->max_readahead : 1U << 20;
}

/* CAP_SYS_RESOURCE out of the effective set, before any thread exists (capabilities are per
 * thread; new ones inherit them, and so do the passthrough backing files, which write with
 * the credentials of the thread that registered them). With it, every write the daemon makes
 * for a user - through a handle, a passthrough backing file, a create - may go past that
 * user's disk quota and into the blocks a file system keeps for root (ext4's 5 %), so a user
 * who may write the store could fill it, and whatever else of root's lives on it, to the last
 * block. Kept in the permitted set; the daemon raised its descriptor limit already. */
static void sf_drop_resource(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &hdr, d) < 0 || !(d[0].effective & (1U << CAP_SYS_RESOURCE)))
		return;
	d[0].effective &= ~(1U << CAP_SYS_RESOURCE);
	if (syscall(SYS_capset, &hdr, d) < 0)
		log_warn("cannot give up CAP_SYS_RESOURCE: writes through the mount may go past "
			 "disk quotas and root's reserved blocks: %s", strerror(errno));
}

static atomic_int sf_hk_stop;

static void sf_on_dead(struct gen *g) { nd_reclaim(g); }

struct sf_names {
	char **v;
	size_t n;
};

static void sf_names_free(struct sf_names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	ns->v = NULL;
	ns->n = 0;
}

/* Names in the current generation's root (best effort: an empty list on any error). */
static void sf_names_load(struct sf_names *ns)
{
	int fd = gen_open_current(sf.gm);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	size_t cap = 0;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (ns->n == cap) {
			char **v = realloc(ns->v, (cap = cap ? cap * 2 : 16) * sizeof *v);
			if (!v)
				break;
			ns->v = v;
		}
		if (!(ns->v[ns->n] = strdup(de->d_name)))
			break;
		ns->n++;
	}
	closedir(d);
}

/* Housekeeping: delete old generations, tell the kernel when .snapshot switched. */
static void *sf_housekeeper(void *arg)
{
	unsigned long seen = 0;
	struct sf_names names = { 0 };
	(void)arg;
	while (!atomic_load(&sf_hk_stop)) {
		double next = gen_reap(sf.gm, sf_on_dead);
		unsigned long cur = gen_current_seq(sf.gm);
		if (cur != seen) {
			/* Entries below .snapshot are looked up again on every walk anyway, but
			 * dropping the old generation's lets the kernel forget its nodes (and us
			 * close their files) now rather than under memory pressure. Never from a
			 * request: it takes the directory's lock. */
			for (size_t i = 0; i < names.n; i++)
				fuse_lowlevel_notify_inval_entry(sf.se, nd_id(&sf.snapdir), names.v[i],
								 strlen(names.v[i]));
			sf_names_free(&names);
			sf_names_load(&names);
			seen = cur;
		}
		if (fuse_session_exited(sf.se) && !atomic_load(&sf.exiting)) {
			atomic_store(&sf.exiting, 1);
			hp_kill();
		}
		ob_tick(0);
		gen_wait(sf.gm, next < 1 ? next : 1);
	}
	sf_names_free(&names);
	return NULL;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts cmd;
	struct fuse_lowlevel_ops ops;
	pthread_t hk;
	int hk_started = 0, mounted = 0, rc = SF_EXIT_FAIL;

	if (argc > 1 && !strcmp(argv[1], "--capture-helper"))
		return hp_main(argc, argv);

	log_init("stillfs");
	ob_init();
	fuse_set_log_func(sf_fuse_log);
	memset(&cmd, 0, sizeof cmd);
	sf.storefd = sf.cachefd = sf.cachelockfd = sf.procfd = -1;
	sf.o.max_age = SF_DEFAULT_MAX_AGE;
	sf.o.linger = SF_DEFAULT_LINGER;
	sf.o.capture_nice = SF_DEFAULT_CAPTURE_NICE;
	sf.o.settle = 30;
	pthread_mutex_init(&sf.mu, NULL);
	pthread_condattr_t budget_ca;
	pthread_condattr_init(&budget_ca);
	pthread_condattr_setclock(&budget_ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sf.budget_cv, &budget_ca);
	pthread_condattr_destroy(&budget_ca);

	if (fuse_opt_parse(&args, &sf.o, sf_optspec, sf_opt_proc) < 0) {
		rc = SF_EXIT_USAGE;
		goto out;
	}
	if (sf.o.mountpoint && access(sf.o.mountpoint, F_OK) < 0) {
		fprintf(stderr, "stillfs: mountpoint %s: %s\n", sf.o.mountpoint, strerror(errno));
		goto out;
	}
	if (fuse_parse_cmdline(&args, &cmd) != 0) {
		rc = SF_EXIT_USAGE;
		goto out;
	}
	if (cmd.show_help) {
		sf_usage(argv[0]);
		rc = SF_EXIT_OK;
		goto out;
	}
	if (cmd.show_version) {
		printf("stillfs %s\n", STILLFS_VERSION);
		fuse_lowlevel_version();
		rc = SF_EXIT_OK;
		goto out;
	}
	if (!sf.o.store || !cmd.mountpoint) {
		fprintf(stderr, "stillfs: usage: stillfs STORE MOUNTPOINT [-o options] "
			"(see stillfs --help)\n");
		rc = SF_EXIT_USAGE;
		goto out;
	}
	if (cmd.clone_fd || cmd.max_idle_threads != UINT_MAX)
		fprintf(stderr, "stillfs: clone_fd and max_idle_threads are ignored: requests are "
			"read by the request threads themselves, which stay\n");
	sf.threads = sf.o.max_threads_given ? cmd.max_threads : SF_DEFAULT_THREADS;
	if (cmd.singlethread || sf.threads < SF_MIN_THREADS) {
		fprintf(stderr, "stillfs: %s: a capture needs request threads besides the ones "
			"waiting for it (max_threads=%d at least)\n", cmd.singlethread ? "-s" :
			"max_threads is too small", SF_MIN_THREADS);
		rc = SF_EXIT_USAGE;
		goto out;
	}
	free(sf.o.mountpoint);
	sf.o.mountpoint = strdup(cmd.mountpoint);
	if ((rc = sf_validate()) != SF_EXIT_OK)
		goto out;
	rc = SF_EXIT_FAIL;
	if (sf_open_fds() < 0)
		goto out;
	umask(0);          /* the kernel has applied the caller's umask to every mode we get */
	sf.uid = geteuid();
	sf.gid = getegid();
	sf.started = ut_realtime();
	/* The thread of the caller that starts a capture waits in it too. */
	struct gen_cfg gc = { .cachefd = sf.cachefd, .max_age = sf.o.max_age,
			      .linger = sf.o.linger, .recycle = !sf.o.no_recycle,
			      .kept_until = sf.kept_until, .capture = hp_capture,
			      .max_waiters = sf.threads - SF_FREE_THREADS(sf.threads) - 1 };
	if (nd_init() || lk_init() || gen_init(&sf.gm, &gc)) {
		fprintf(stderr, "stillfs: out of memory\n");
		goto out;
	}

	/* The kernel checks permissions from the attributes we report: the daemon itself runs
	 * with the rights to do anything. The store's path names the mount in mount tables. */
	char *fsname = NULL;
	size_t fl = strlen(sf.o.store);
	if (!(fsname = malloc(fl * 2 + 16))) {
		fprintf(stderr, "stillfs: out of memory\n");
		goto out;
	}
	char *q = fsname + sprintf(fsname, "-ofsname=");
	for (const char *s = sf.o.store; *s; s++) {
		if (*s == ',' || *s == '\\')
			*q++ = '\\';
		*q++ = *s;
	}
	*q = 0;
	if (fuse_opt_add_arg(&args, "-odefault_permissions") || fuse_opt_add_arg(&args, fsname) ||
	    fuse_opt_add_arg(&args, "-osubtype=stillfs")) {
		free(fsname);
		goto out;
	}
	free(fsname);

	memset(&ops, 0, sizeof ops);
	ops.init = sf_init;
	op_register(&ops);
	dr_register(&ops);
	fh_register(&ops);
	lk_register(&ops);
	sf.se = fuse_session_new(&args, &ops, sizeof ops, NULL);
	if (!sf.se) {
		rc = SF_EXIT_USAGE;      /* libfuse said which option it did not take */
		goto out;
	}
	if (fuse_set_signal_handlers(sf.se) != 0)
		goto out;
	unsigned char sockets[SF_SOCKET_SCAN];
	sf_sockets(sockets);
	if (fuse_session_mount(sf.se, sf.o.mountpoint) != 0)
		goto out;
	mounted = 1;
	sf_cloexec_all();
	fc_setup(sf.se, !sf.o.no_passthrough, sf_new_socket(sockets));
	if (fuse_daemonize(cmd.foreground) != 0)
		goto out;
	/* Only now: /proc/self names the process that opens it, and daemonizing forks. */
	sf.procfd = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sf.procfd < 0) {
		log_err("/proc/self/fd: %s", strerror(errno));
		goto out;
	}
	if (!cmd.foreground)
		log_to_syslog(1);
	log_info("serving %s at %s (cache %s)", sf.o.store, sf.o.mountpoint, sf.o.cache);
	const char *why;
	if (cl_probe(sf.storefd, sf.cachefd, &why))
		log_info("the cache shares the store's filesystem and can clone: snapshot copies "
			 "share extents with the store (reflink), databases are cloned under their lock");
	else
		log_info("snapshot copies are written out (cache: %s; for clones put the cache on "
			 "the store's XFS or btrfs filesystem)", why);
	log_info("descriptor limit %zu: %zu for nodes%s, %zu for handles and lock owners "
		 "(%lu per user)", sf_fd_limit, sf.fd_budget,
		 sf_fd_handles ? " (reopened by file handle)" : "", sf_fd_pool,
		 sf.o.max_user_fds);

	sf_drop_resource();
	/* Our own thread must not take the signals meant to stop the loop. */
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	ob_tick(1);        /* the metrics file exists from the start */
	hk_started = pthread_create(&hk, NULL, sf_housekeeper, NULL) == 0;
	if (hk_started)
		iv_start(sf.se, !sf.o.no_live_cache);
	int lk_failed = hk_started && lk_start() != 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!hk_started || lk_failed) {
		log_err("cannot start the housekeeping threads");
		goto out;
	}

	/* Mounted and serving from here on: units ordered after ours find the mount in place. */
	ob_notify("READY=1");
	/* A share of the threads per user (loop.c); openers waiting for a capture never take
	 * SF_FREE_THREADS of them (gen.c); blocking lock requests hold none (lock.c). */
	rc = lp_run(sf.se, sf.threads);
	if (rc)
		log_err("reading requests: %s", strerror(-rc));
	rc = rc ? SF_EXIT_FAIL : SF_EXIT_OK;
	log_info("unmounting %s", sf.o.mountpoint);
	ob_notify("STOPPING=1");
out:
	atomic_store(&sf.exiting, 1);
	lk_stop();         /* before the session goes: it answers the waiting lock requests */
	iv_stop_thread();
	if (hk_started) {
		atomic_store(&sf_hk_stop, 1);
		gen_wake(sf.gm);
		pthread_join(hk, NULL);
	}
	if (sf.se) {
		if (mounted)
			fuse_session_unmount(sf.se);
		fuse_remove_signal_handlers(sf.se);
		fuse_session_destroy(sf.se);
	}
	gen_destroy(sf.gm);
	/* A start that failed before mounting leaves no cache it made itself behind. */
	if (!mounted && sf.cache_marked && sf.cachefd >= 0) {
		struct stat a, b;
		unlinkat(sf.cachefd, SF_CACHE_MARKER, 0);
		if (sf.cache_made && fstat(sf.cachefd, &a) == 0 && stat(sf.o.cache, &b) == 0 &&
		    ut_same_file(&a, &b))
			rmdir(sf.o.cache);
	}
	free(cmd.mountpoint);
	fuse_opt_free_args(&args);
	return rc;
}
