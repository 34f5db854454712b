/* SPDX-License-Identifier: GPL-2.0-or-later */
/* inotify over every directory of a tree, with in-band markers. Prefix: wt_.
 *
 * Events from all watches of one inotify instance form one ordered queue, and the kernel
 * queues an event inside the write that causes it. Writing to a private "marker" file puts a
 * fence into that queue, so a drain can tell which store changes happened before and which
 * after a given instant of ours. */
#ifndef STILL_WATCH_H
#define STILL_WATCH_H

#include <stdint.h>

#define WT_MARKER UINT32_MAX   /* dir_id reported for marker events; name is the marker no. */
#define WT_OVERFLOW (UINT32_MAX - 1) /* dir_id reported when the queue overflowed */

struct wt;

/* Create the watcher; private_dir is a directory of ours (not in the store) for markers. */
int wt_open(struct wt **w, int private_dirfd);
void wt_close(struct wt *w);
/* Stop watching, ahead of wt_close: the kernel then lets go of the watches in the background,
 * where closing the instance waits for that (a grace period: about 13 ms here). */
void wt_unwatch(struct wt *w);
int wt_fd(const struct wt *w);

/* Watch the directory open at dirfd, reporting its events as dir_id. */
int wt_add(struct wt *w, int dirfd, uint32_t dir_id);
/* The same; *was is the dir_id its events were reported as until now (WT_OVERFLOW if none):
 * a directory has one watch, so one seen under two names (a bind mount) reports as the last. */
int wt_add_was(struct wt *w, int dirfd, uint32_t dir_id, uint32_t *was);

/* Put marker number seq (0..63) into the queue. */
int wt_marker(struct wt *w, unsigned seq);

typedef void (*wt_cb)(void *ctx, uint32_t dir_id, const char *name, uint32_t mask);
/* Hand every queued event to cb, in order; returns when the queue is empty.
 * Returns the number of events, or -errno. */
int wt_drain(struct wt *w, wt_cb cb, void *ctx);

#endif
