/* stillctl status / refresh: talk to a running stillfs through its mount (see ctl_mount.h). */
#include "ctl_mount.h"

#include "capture.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#define CTL_STATUS_FILE ".stillfs-status"
#define CTL_XATTR_REFRESH "user.stillfs.refresh"

static int ctl_args(int argc, char **argv, const char **mnt)
{
	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		printf("usage: stillctl %s MOUNTPOINT\n", argv[0]);
		return -1;
	}
	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "stillctl: usage: stillctl %s MOUNTPOINT\n", argv[0]);
		return CAP_EXIT_USAGE;
	}
	*mnt = argv[1];
	return 0;
}

/* The status text of the stillfs mounted at mnt, malloc'd; NULL with a message on stderr. */
static char *ctl_read_status(const char *mnt)
{
	char path[4096], *buf = NULL;
	size_t len = 0, cap = 0;
	int fd;

	if (snprintf(path, sizeof path, "%s/%s", mnt, CTL_STATUS_FILE) >= (int)sizeof path) {
		fprintf(stderr, "stillctl: %s: path too long\n", mnt);
		return NULL;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			fprintf(stderr, "stillctl: %s is not a stillfs mountpoint\n", mnt);
		else
			fprintf(stderr, "stillctl: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			char *b = realloc(buf, cap = cap ? cap * 2 : 8192);
			if (!b) {
				fprintf(stderr, "stillctl: out of memory\n");
				goto fail;
			}
			buf = b;
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "stillctl: %s: %s\n", path, strerror(errno));
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
	close(fd);
	free(buf);
	return NULL;
}

/* The value of "key: value" in the status text, copied into out ("" if absent). */
static void ctl_field(const char *text, const char *key, char *out, size_t len)
{
	size_t k = strlen(key);
	out[0] = 0;
	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (!strncmp(l, key, k) && l[k] == ':' && l[k + 1] == ' ') {
			const char *v = l + k + 2, *e = strchr(v, '\n');
			size_t n = e ? (size_t)(e - v) : strlen(v);
			if (n >= len)
				n = len - 1;
			memcpy(out, v, n);
			out[n] = 0;
			return;
		}
	}
}

int ctl_status(int argc, char **argv)
{
	const char *mnt;
	int rc = ctl_args(argc, argv, &mnt);
	if (rc)
		return rc < 0 ? CAP_EXIT_OK : rc;
	char *text = ctl_read_status(mnt);
	if (!text)
		return CAP_EXIT_FAIL;
	fputs(text, stdout);
	free(text);
	return CAP_EXIT_OK;
}

int ctl_refresh(int argc, char **argv)
{
	const char *mnt;
	char gen[64], id[64], dur[32], copied[32], shared[32], cloned[32] = "", lock[32], err[512];
	int rc = ctl_args(argc, argv, &mnt);
	if (rc)
		return rc < 0 ? CAP_EXIT_OK : rc;
	char *text = ctl_read_status(mnt);      /* also checks that this is a stillfs mount */
	if (!text)
		return CAP_EXIT_FAIL;
	free(text);
	/* On the status file, not on MOUNTPOINT: the kernel locks the target while the capture
	 * runs, and the root's lock would hold up the live view meanwhile. */
	char path[4096];
	if (snprintf(path, sizeof path, "%s/%s", mnt, CTL_STATUS_FILE) >= (int)sizeof path) {
		fprintf(stderr, "stillctl: %s: path too long\n", mnt);
		return CAP_EXIT_FAIL;
	}
	int e = setxattr(path, CTL_XATTR_REFRESH, "1", 1, 0) < 0 ? errno : 0;
	text = ctl_read_status(mnt);
	if (e) {
		ctl_field(text ? text : "", "last_error", err, sizeof err);
		fprintf(stderr, "stillctl: refresh of %s failed: %s%s%s\n", mnt, strerror(e),
			err[0] ? ": " : "", err);
		free(text);
		if (e == EAGAIN || e == ETIMEDOUT)      /* the daemon sends ETIMEDOUT */
			return CAP_EXIT_UNSETTLED;
		return e == ENOSPC || e == EIO ? CAP_EXIT_IO : CAP_EXIT_FAIL;
	}
	if (text) {
		ctl_field(text, "generation", gen, sizeof gen);
		ctl_field(text, "id", id, sizeof id);
		ctl_field(text, "capture_s", dur, sizeof dur);
		ctl_field(text, "bytes_copied", copied, sizeof copied);
		ctl_field(text, "bytes_shared", shared, sizeof shared);
		ctl_field(text, "bytes_cloned", cloned, sizeof cloned);
		ctl_field(text, "lock_max_s", lock, sizeof lock);
		printf("generation %s (%s): captured in %s s, %s bytes copied, %s shared, "
		       "%s cloned, longest lock %s s\n", gen, id, dur, copied, shared,
		       cloned[0] ? cloned : "0", lock);
		free(text);
	}
	return CAP_EXIT_OK;
}
