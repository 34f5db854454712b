/* SPDX-License-Identifier: GPL-2.0-or-later */
/* stillctl commands that talk to a running stillfs daemon. Prefix: ctl_.
 *
 * The daemon is reached through its mount only, no socket:
 * - status, metrics: MOUNTPOINT/.stillfs-status is a read-only virtual file (hidden from
 *   listings) whose contents, made anew at each open, are "key: value" lines (report.h
 *   makes JSON and Prometheus metrics of them);
 * - refresh: setxattr(MOUNTPOINT/.stillfs-status, "user.stillfs.refresh") makes the daemon
 *   capture a new generation even if the current one is pinned (on the status file, not on
 *   MOUNTPOINT, whose inode lock the kernel would hold for the whole capture); it returns when
 *   the capture is done, with 0 or the capture's error (ETIMEDOUT: the store never settled;
 *   ENOSPC; EIO: other). */
#ifndef STILL_CTL_MOUNT_H
#define STILL_CTL_MOUNT_H

/* argv[0] is the command name ("status"/"metrics"/"refresh"), then its options and the
 * mountpoint. Each returns an exit status (enum cap_exit, enum ctl_exit). */
int ctl_status(int argc, char **argv);
int ctl_metrics(int argc, char **argv);
int ctl_refresh(int argc, char **argv);

#endif
