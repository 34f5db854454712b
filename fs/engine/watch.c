/* SPDX-License-Identifier: GPL-2.0-or-later */
/* inotify over every directory of the store. */
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define WT_MARKERS 64
#define WT_MASK (IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | \
		 IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

struct wt {
	int fd;
	int marker_wd;
	int private_dirfd;
	uint32_t *wd_ids;     /* watch descriptor -> dir_id; wds are small integers */
	size_t nwd;
};

int wt_open(struct wt **out, int private_dirfd)
{
	struct wt *w = calloc(1, sizeof *w);
	char path[64];
	if (!w)
		return -ENOMEM;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		int e = -errno;
		free(w);
		return e;
	}
	w->private_dirfd = private_dirfd;
	/* Distinct names keep consecutive markers from being merged into one event. */
	for (unsigned i = 0; i < WT_MARKERS; i++) {
		char name[16];
		snprintf(name, sizeof name, "m%02u", i);
		int fd = openat(private_dirfd, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0) {
			int e = -errno;
			wt_close(w);
			return e;
		}
		close(fd);
	}
	snprintf(path, sizeof path, "/proc/self/fd/%d", private_dirfd);
	w->marker_wd = inotify_add_watch(w->fd, path, IN_MODIFY);
	if (w->marker_wd < 0) {
		int e = -errno;
		wt_close(w);
		return e;
	}
	*out = w;
	return 0;
}

void wt_close(struct wt *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	free(w->wd_ids);
	free(w);
}

void wt_unwatch(struct wt *w)
{
	if (!w)
		return;
	for (size_t wd = 0; wd < w->nwd; wd++)
		if (w->wd_ids[wd] != WT_OVERFLOW && inotify_rm_watch(w->fd, (int)wd) == 0)
			w->wd_ids[wd] = WT_OVERFLOW;
	if (w->marker_wd >= 0 && inotify_rm_watch(w->fd, w->marker_wd) == 0)
		w->marker_wd = -1;
}

int wt_fd(const struct wt *w) { return w->fd; }

int wt_add(struct wt *w, int dirfd, uint32_t dir_id)
{
	uint32_t was;
	return wt_add_was(w, dirfd, dir_id, &was);
}

int wt_add_was(struct wt *w, int dirfd, uint32_t dir_id, uint32_t *was)
{
	*was = WT_OVERFLOW;
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", dirfd);
	int wd = inotify_add_watch(w->fd, path, WT_MASK);
	if (wd < 0)
		return errno == ENOSPC ? -ENOSPC : -errno;
	if ((size_t)wd >= w->nwd) {
		size_t n = (size_t)wd * 2 + 16;
		uint32_t *ids = realloc(w->wd_ids, n * sizeof *ids);
		if (!ids)
			return -ENOMEM;
		for (size_t i = w->nwd; i < n; i++)
			ids[i] = WT_OVERFLOW;
		w->wd_ids = ids;
		w->nwd = n;
	}
	*was = w->wd_ids[wd];
	w->wd_ids[wd] = dir_id;
	return 0;
}

int wt_marker(struct wt *w, unsigned seq)
{
	char name[16];
	snprintf(name, sizeof name, "m%02u", seq % WT_MARKERS);
	int fd = openat(w->private_dirfd, name, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = pwrite(fd, "", 1, 0) == 1 ? 0 : -errno;
	close(fd);
	return rc;
}

int wt_drain(struct wt *w, wt_cb cb, void *ctx)
{
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	int count = 0;
	for (;;) {
		ssize_t n = read(w->fd, buf, sizeof buf);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return count;
			return -errno;
		}
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			p += sizeof *ev + ev->len;
			count++;
			if (ev->mask & IN_Q_OVERFLOW) {
				cb(ctx, WT_OVERFLOW, "", ev->mask);
				continue;
			}
			if (ev->mask & IN_IGNORED)
				continue;
			if (ev->wd == w->marker_wd) {
				/* Marker names are "mNN". */
				if (ev->len && ev->name[0] == 'm')
					cb(ctx, WT_MARKER, ev->name + 1, ev->mask);
				continue;
			}
			if (ev->wd < 0 || (size_t)ev->wd >= w->nwd)
				continue;
			cb(ctx, w->wd_ids[ev->wd], ev->len ? ev->name : "", ev->mask);
		}
	}
}
