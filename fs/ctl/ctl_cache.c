/* SPDX-License-Identifier: GPL-2.0-or-later */
/* stillctl cache list / prune: the cache directories stillfs daemons leave behind.
 *
 * A daemon's cache (by default ROOT/ESCAPED-STORE, ROOT being /var/cache/stillfs for root)
 * holds a marker file, .stillfs-cache, naming its store, which the daemon flocks for as long
 * as it runs; and after a clean unmount the last generation, kept/ with kept.time, for the
 * next daemon of that store. Nothing else ever removes it. Policy:
 * - a cache whose marker is locked belongs to a running daemon and is never touched;
 * - by default only caches whose store is gone are pruned (--missing-store);
 * - a cache whose store still exists goes only when asked: --older-than (unused for that
 *   long) or --all.
 * Deletion goes by descriptors from the root downwards, never following a symlink, while
 * holding the marker's lock, so that no daemon can start on a cache being deleted. */
#include "ctl.h"

#include "capture.h"
#include "copy.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define CC_MARKER ".stillfs-cache"
#define CC_KEPT "kept"
#define CC_KEPT_TIME "kept.time"

struct cc_info {
	char store[4096];          /* "" when the marker does not say */
	char mountpoint[4096];
	int store_exists;          /* 1, 0, or -1: unknown */
	int in_use;                /* a running daemon holds the marker's lock */
	int kept;                  /* a kept generation is there */
	uint64_t bytes;            /* disk usage, each inode once */
	double age;                /* seconds since it was last used */
};

/* Blocks of the inodes under dirfd; inodes with several links are noted in *links and
 * counted once at the end. Best effort: what cannot be read is not counted. */
struct cc_link {
	dev_t dev;
	ino_t ino;
	uint64_t bytes;
};
struct cc_links {
	struct cc_link *v;
	size_t n, cap;
};

static uint64_t cc_du(int dirfd, struct cc_links *links)
{
	uint64_t sum = 0;
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	struct stat st;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		uint64_t b = (uint64_t)st.st_blocks * 512;
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
					 O_CLOEXEC);
			sum += b;
			if (sub >= 0) {
				sum += cc_du(sub, links);
				close(sub);
			}
		} else if (st.st_nlink > 1) {
			if (links->n == links->cap) {
				size_t cap = links->cap ? links->cap * 2 : 256;
				struct cc_link *v = realloc(links->v, cap * sizeof *v);
				if (!v)
					continue;
				links->v = v;
				links->cap = cap;
			}
			links->v[links->n++] = (struct cc_link){ st.st_dev, st.st_ino, b };
		} else {
			sum += b;
		}
	}
	closedir(d);
	return sum;
}

static int cc_link_cmp(const void *a, const void *b)
{
	const struct cc_link *x = a, *y = b;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static uint64_t cc_usage(int cachefd)
{
	struct cc_links links = { 0 };
	uint64_t sum = cc_du(cachefd, &links);
	qsort(links.v, links.n, sizeof *links.v, cc_link_cmp);
	for (size_t i = 0; i < links.n; i++)
		if (!i || cc_link_cmp(&links.v[i], &links.v[i - 1]))
			sum += links.v[i].bytes;
	free(links.v);
	return sum;
}

/* What the cache at cachefd is (its marker open at markfd, not locked by us yet). */
static void cc_inspect(int cachefd, int markfd, struct cc_info *ci)
{
	char text[8192], tbuf[64];
	struct stat st;
	ssize_t n = pread(markfd, text, sizeof text - 1, 0);
	struct timespec now = ut_realtime();
	double last = 0;

	memset(ci, 0, sizeof *ci);
	text[n > 0 ? n : 0] = 0;
	rep_field(text, "store", ci->store, sizeof ci->store);
	rep_field(text, "mountpoint", ci->mountpoint, sizeof ci->mountpoint);
	ci->store_exists = ci->store[0] != '/' ? -1 : stat(ci->store, &st) == 0 && S_ISDIR(st.st_mode);
	ci->in_use = flock(markfd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
	if (!ci->in_use)
		flock(markfd, LOCK_UN);
	ci->kept = fstatat(cachefd, CC_KEPT, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
	/* Last used: the latest change to the cache's entries, or when the kept generation
	 * stopped being read. */
	if (fstat(cachefd, &st) == 0)
		last = (double)st.st_mtim.tv_sec;
	int tfd = openat(cachefd, CC_KEPT_TIME, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (tfd >= 0) {
		ssize_t k = read(tfd, tbuf, sizeof tbuf - 1);
		double t = k > 0 ? (tbuf[k] = 0, strtod(tbuf, NULL)) : 0;
		if (t > last)
			last = t;
		close(tfd);
	}
	ci->age = last > 0 ? (double)now.tv_sec - last : 0;
	if (ci->age < 0)
		ci->age = 0;
	ci->bytes = cc_usage(cachefd);
}

/* The directory holding caches, by default the one a daemon of this user would use. */
static char *cc_default_root(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	char *p = NULL;
	if (geteuid() == 0)
		return strdup("/var/cache/stillfs");
	if (xdg && xdg[0] == '/')
		return asprintf(&p, "%s/stillfs", xdg) < 0 ? NULL : p;
	if (home && home[0] == '/')
		return asprintf(&p, "%s/.cache/stillfs", home) < 0 ? NULL : p;
	return NULL;
}

static void cc_fmt_age(double s, char *buf, size_t len)
{
	if (s < 120)
		snprintf(buf, len, "%.0fs", s);
	else if (s < 7200)
		snprintf(buf, len, "%.0fm", s / 60);
	else if (s < 172800)
		snprintf(buf, len, "%.0fh", s / 3600);
	else
		snprintf(buf, len, "%.0fd", s / 86400);
}

struct cc_opts {
	const char *root;
	int prune;
	int missing, all, dry_run;
	double older_than;         /* < 0: not given */
};

/* The reason to prune a cache not in use, or NULL to keep it. */
static const char *cc_reason(const struct cc_opts *o, const struct cc_info *ci)
{
	if (o->all)
		return "--all";
	if (o->missing && ci->store_exists == 0)
		return "its store is gone";
	if (o->older_than >= 0 && ci->age > o->older_than)
		return "unused for longer than --older-than";
	return NULL;
}

/* Delete the cache name in rootfd, whose marker markfd we hold locked: its contents, then
 * the marker, then the directory. 0 or -errno. */
static int cc_remove(int rootfd, const char *name, int cachefd)
{
	int fd = openat(cachefd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	if (!d) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    !strcmp(de->d_name, CC_MARKER))
			continue;
		int r = cp_rmtree(cachefd, de->d_name);
		if (r && !rc)
			rc = r;
	}
	closedir(d);
	if (rc)
		return rc;
	if (unlinkat(cachefd, CC_MARKER, 0) < 0 || unlinkat(rootfd, name, AT_REMOVEDIR) < 0)
		return -errno;
	return 0;
}

static int cc_run(const struct cc_opts *o)
{
	char *root = o->root ? strdup(o->root) : cc_default_root();
	int rootfd = -1, rc = CAP_EXIT_OK, shown = 0;
	struct stat st;
	DIR *d = NULL;
	struct dirent *de;

	if (!root) {
		fprintf(stderr, "stillctl: no cache directory: set HOME or give --root DIR\n");
		return CAP_EXIT_USAGE;
	}
	rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0 && errno == ENOENT && !o->root) {
		free(root);                 /* no daemon ever ran: nothing to list */
		return CAP_EXIT_OK;
	}
	if (rootfd < 0 || fstat(rootfd, &st) < 0) {
		fprintf(stderr, "stillctl: %s: %s\n", root, strerror(errno));
		rc = CAP_EXIT_FAIL;
		goto out;
	}
	/* Deleting below a directory others may rename things in would delete what they
	 * chose. */
	if (o->prune && ((st.st_uid != 0 && st.st_uid != geteuid()) ||
			 ((st.st_mode & 0022) && !(st.st_mode & S_ISVTX)))) {
		fprintf(stderr, "stillctl: %s may be changed by other users; not pruning in it\n",
			root);
		rc = CAP_EXIT_FAIL;
		goto out;
	}
	int dfd = dup(rootfd);
	if (dfd < 0 || !(d = fdopendir(dfd))) {
		fprintf(stderr, "stillctl: %s: %s\n", root, strerror(errno));
		if (dfd >= 0)
			close(dfd);
		rc = CAP_EXIT_FAIL;
		goto out;
	}
	while ((de = readdir(d))) {
		struct cc_info ci;
		char size[32], age[32], raw[4096], path[4096], store[4096];
		if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..")))
			continue;
		int cfd = openat(rootfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0)
			continue;
		int mfd = openat(cfd, CC_MARKER, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (mfd < 0 || fstat(mfd, &st) < 0 || !S_ISREG(st.st_mode)) {
			if (mfd >= 0)
				close(mfd);
			close(cfd);
			continue;           /* not a stillfs cache */
		}
		cc_inspect(cfd, mfd, &ci);
		/* Escaped: what is printed below names it, and names under --root are anyone's. */
		snprintf(raw, sizeof raw, "%s/%s", root, de->d_name);
		ut_escape(path, sizeof path, raw, 1);
		ut_escape(store, sizeof store, ci.store[0] ? ci.store : "?", 1);
		if (!o->prune) {
			if (!shown++)
				printf("%-40s %-30s %-8s %9s %6s %-4s %s\n", "CACHE", "STORE", "STORE_IS",
				       "SIZE", "AGE", "KEPT", "DAEMON");
			ut_format_bytes(ci.bytes, size, sizeof size);
			cc_fmt_age(ci.age, age, sizeof age);
			char mnt[4096];
			ut_escape(mnt, sizeof mnt, ci.mountpoint, 1);
			printf("%-40s %-30s %-8s %9s %6s %-4s %s%s\n",
			       path, store,
			       ci.store_exists > 0 ? "there" : ci.store_exists ? "unknown" : "gone",
			       size, age, ci.kept ? "yes" : "no",
			       ci.in_use ? "running at " : "none", ci.in_use ? mnt : "");
		} else {
			const char *why = cc_reason(o, &ci);
			if (why && ci.in_use) {
				printf("kept %s: in use by a running stillfs\n", path);
			} else if (why && o->dry_run) {
				printf("would remove %s (store %s): %s\n", path, store, why);
			} else if (why) {
				/* Exclusive: a daemon starting now finds the cache in use. */
				if (flock(mfd, LOCK_EX | LOCK_NB) < 0) {
					printf("kept %s: in use by a running stillfs\n", path);
				} else {
					int r = cc_remove(rootfd, de->d_name, cfd);
					if (r) {
						fprintf(stderr, "stillctl: cannot remove %s: %s\n", path,
							strerror(-r));
						rc = CAP_EXIT_FAIL;
					} else {
						printf("removed %s (store %s): %s\n", path, store, why);
					}
				}
			}
		}
		close(mfd);
		close(cfd);
	}
out:
	if (d)
		closedir(d);
	if (rootfd >= 0)
		close(rootfd);
	free(root);
	return rc;
}

int ctl_cache(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "root", required_argument, NULL, 'r' },
		{ "missing-store", no_argument, NULL, 'm' },
		{ "older-than", required_argument, NULL, 'o' },
		{ "all", no_argument, NULL, 'a' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 } };
	struct cc_opts o = { .older_than = -1 };
	char *end;
	int c;

	if (argc < 2 || (strcmp(argv[1], "list") && strcmp(argv[1], "prune"))) {
		if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
			ctl_help("cache");
			return CAP_EXIT_OK;
		}
		return ctl_usage_error("cache needs list or prune", NULL);
	}
	o.prune = !strcmp(argv[1], "prune");
	argc--;
	argv++;
	while ((c = getopt_long(argc, argv, o.prune ? "+n" : "+", opts, NULL)) != -1) {
		if (!o.prune && c != 'r' && c != 'h')
			c = '?';
		switch (c) {
		case 'r': o.root = optarg; break;
		case 'm': o.missing = 1; break;
		case 'a': o.all = 1; break;
		case 'n': o.dry_run = 1; break;
		case 'o':
			o.older_than = strtod(optarg, &end);
			if (*end || end == optarg || !(o.older_than >= 0))
				return ctl_usage_error("bad --older-than (seconds)", optarg);
			break;
		case 'h': ctl_help(o.prune ? "cache prune" : "cache list"); return CAP_EXIT_OK;
		default:
			return ctl_bad_option(o.prune ? "cache prune" : "cache list", argv);
		}
	}
	if (optind != argc)
		return ctl_usage_error("unexpected argument", argv[optind]);
	if (o.prune && !o.all && o.older_than < 0)
		o.missing = 1;
	return cc_run(&o);
}
