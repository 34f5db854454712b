/* SPDX-License-Identifier: GPL-2.0-or-later */
/* stillctl status / metrics / refresh: talk to a running stillfs through its mount (see
 * ctl_mount.h). */
#include "ctl_mount.h"

#include "capture.h"
#include "ctl.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define CTL_STATUS_FILE ".stillfs-status"
#define CTL_XATTR_REFRESH "user.stillfs.refresh"

static int ctl_args(int argc, char **argv, const char **mnt)
{
	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		ctl_help(argv[0]);
		return -1;
	}
	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "stillctl: usage: stillctl %s MOUNTPOINT\n", argv[0]);
		return CAP_EXIT_USAGE;
	}
	*mnt = argv[1];
	return 0;
}

#define CTL_STATUS_MAX (1 << 20)   /* the status text is a few KiB */

/* The status file of the stillfs mounted at mnt, opened for reading; -1 with a message on
 * stderr. Whatever is at mnt when no stillfs of root's or ours is mounted there (its daemon
 * stopped, and the mountpoint is the store itself: a directory its users write) is not
 * read: a file planted there could forge the status, a symlink lead our setxattr to any
 * file, a fifo or /dev/zero hold us forever. */
static int ctl_open_status(const char *mnt)
{
	int dfd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC), fd = -1, rc;
	uid_t owner;
	struct stat st;

	if (dfd < 0) {
		fprintf(stderr, "stillctl: %s: %s\n", mnt, strerror(errno));
		return -1;
	}
	if ((rc = ut_stillfs_mount(dfd, &owner))) {
		if (rc == -EXDEV)
			fprintf(stderr, "stillctl: %s is not a stillfs mountpoint\n", mnt);
		else
			fprintf(stderr, "stillctl: %s: %s\n", mnt, strerror(-rc));
	} else if (owner != 0 && owner != geteuid()) {
		fprintf(stderr, "stillctl: %s is a stillfs of uid %u, neither root's nor ours\n", mnt,
			(unsigned)owner);
	} else if ((fd = openat(dfd, CTL_STATUS_FILE, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
				 O_CLOEXEC)) < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "stillctl: %s/%s: %s\n", mnt, CTL_STATUS_FILE,
			fd < 0 ? strerror(errno) : "not a regular file");
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	close(dfd);
	return fd;
}

/* The status text of the stillfs mounted at mnt, malloc'd; NULL with a message on stderr. */
static char *ctl_read_status(const char *mnt)
{
	char *buf = malloc(CTL_STATUS_MAX + 1);
	size_t len = 0;
	int fd = ctl_open_status(mnt);

	if (fd < 0 || !buf) {
		if (fd >= 0)
			fprintf(stderr, "stillctl: out of memory\n");
		goto fail;
	}
	while (len < CTL_STATUS_MAX) {
		ssize_t n = read(fd, buf + len, CTL_STATUS_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "stillctl: %s/%s: %s\n", mnt, CTL_STATUS_FILE, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = 0;
	return buf;
fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

/* The health of a status text, as stillctl status exits: the last capture failed, or the
 * generation is missing or older than max_age (< 0: not asked); a line on stderr says why. */
static int ctl_health(const char *mnt, const char *text, double max_age)
{
	char last[32], gen[64], age[64], err[512];
	rep_field(text, "last_capture", last, sizeof last);
	rep_field(text, "generation", gen, sizeof gen);
	rep_field(text, "age_s", age, sizeof age);
	if (!strcmp(last, "failed")) {
		rep_field(text, "last_error", err, sizeof err);
		fprintf(stderr, "stillctl: %s: the last capture failed: %s\n", mnt, err);
		return CTL_EXIT_CAPTURE_FAILED;
	}
	if (max_age >= 0 && (!strcmp(gen, "none") || !gen[0])) {
		fprintf(stderr, "stillctl: %s: no generation captured yet\n", mnt);
		return CTL_EXIT_STALE;
	}
	if (max_age >= 0 && !(atof(age) <= max_age)) {
		fprintf(stderr, "stillctl: %s: generation %s is %s s old, more than --max-age %g\n",
			mnt, gen, age, max_age);
		return CTL_EXIT_STALE;
	}
	return CAP_EXIT_OK;
}

int ctl_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "max-age", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 } };
	double max_age = -1;
	int json = 0, c;
	char *end;
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = 1; break;
		case 'm':
			max_age = strtod(optarg, &end);
			if (*end || end == optarg || !(max_age >= 0))
				return ctl_usage_error("bad --max-age (seconds)", optarg);
			break;
		case 'h': ctl_help("status"); return CAP_EXIT_OK;
		default: return ctl_bad_option("status", argv);
		}
	}
	if (argc - optind != 1)
		return ctl_usage_error("status needs one MOUNTPOINT", NULL);
	const char *mnt = argv[optind];
	char *text = ctl_read_status(mnt), *out = text;
	if (!text)
		return CAP_EXIT_FAIL;
	if (json && !(out = rep_json(text))) {
		fprintf(stderr, "stillctl: out of memory\n");
		free(text);
		return CAP_EXIT_FAIL;
	}
	fputs(out, stdout);
	int rc = ctl_health(mnt, text, max_age);
	if (out != text)
		free(out);
	free(text);
	return rc;
}

int ctl_metrics(int argc, char **argv)
{
	const char *mnt;
	int rc = ctl_args(argc, argv, &mnt);
	if (rc)
		return rc < 0 ? CAP_EXIT_OK : rc;
	char *text = ctl_read_status(mnt);
	if (!text)
		return CAP_EXIT_FAIL;
	struct timespec now = ut_realtime();
	char *m = rep_metrics(text, (double)now.tv_sec + now.tv_nsec / 1e9);
	free(text);
	if (!m) {
		fprintf(stderr, "stillctl: out of memory\n");
		return CAP_EXIT_FAIL;
	}
	fputs(m, stdout);
	free(m);
	return CAP_EXIT_OK;
}

int ctl_refresh(int argc, char **argv)
{
	const char *mnt;
	char gen[64], id[64], dur[32], copied[32], shared[32], cloned[32] = "", lock[32], err[512];
	int rc = ctl_args(argc, argv, &mnt);
	if (rc)
		return rc < 0 ? CAP_EXIT_OK : rc;
	/* On the status file, not on MOUNTPOINT: the kernel locks the target while the capture
	 * runs, and the root's lock would hold up the live view meanwhile. */
	int fd = ctl_open_status(mnt);
	if (fd < 0)
		return CAP_EXIT_FAIL;
	int e = fsetxattr(fd, CTL_XATTR_REFRESH, "1", 1, 0) < 0 ? errno : 0;
	close(fd);
	char *text = ctl_read_status(mnt);
	if (e == EBUSY) {
		fprintf(stderr, "stillctl: refresh of %s refused (%s): as many openers of .snapshot "
			"as may are waiting for the capture under way; try again\n", mnt, strerror(e));
		free(text);
		return CAP_EXIT_FAIL;
	}
	if (e) {
		rep_field(text ? text : "", "last_error", err, sizeof err);
		fprintf(stderr, "stillctl: refresh of %s failed: %s%s%s\n", mnt, strerror(e),
			err[0] ? ": " : "", err);
		free(text);
		if (e == EAGAIN || e == ETIMEDOUT)      /* the daemon sends ETIMEDOUT */
			return CAP_EXIT_UNSETTLED;
		return e == ENOSPC || e == EIO ? CAP_EXIT_IO : CAP_EXIT_FAIL;
	}
	if (text) {
		rep_field(text, "generation", gen, sizeof gen);
		rep_field(text, "id", id, sizeof id);
		rep_field(text, "capture_s", dur, sizeof dur);
		rep_field(text, "bytes_copied", copied, sizeof copied);
		rep_field(text, "bytes_shared", shared, sizeof shared);
		rep_field(text, "bytes_cloned", cloned, sizeof cloned);
		rep_field(text, "lock_max_s", lock, sizeof lock);
		printf("generation %s (%s): captured in %s s, %s bytes copied, %s shared, "
		       "%s cloned, longest lock %s s\n", gen, id, dur, copied, shared,
		       cloned[0] ? cloned : "0", lock);
		free(text);
	}
	return CAP_EXIT_OK;
}
