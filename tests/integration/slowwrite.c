/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A writer whose write(2) of the group's first file takes long: its source buffer is a page
 * whose fault is served late (userfaultfd here; a buffer mapped from a slow or network file,
 * or swapped out, does the same). The kernel stamps the file's mtime and ctime when the write
 * begins, before it copies the data in, and raises the inotify event when it ends.
 *
 * usage: slowwrite FIRST SECOND FAULT_MS PAUSE_MS BYTE -- CMD...
 * Writes 4 KiB of BYTE into FIRST (its buffer's fault served after FAULT_MS), runs CMD (a
 * capture started right after the group's first file), waits PAUSE_MS, writes 4 KiB of BYTE
 * into SECOND, then waits for CMD and exits with its status. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int uffd;
static long fault_ms;
static int byte;

static void msleep(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&t, &t) && errno == EINTR)
		;
}

static void *serve(void *arg)
{
	(void)arg;
	static char page[4096] __attribute__((aligned(4096)));
	memset(page, byte, sizeof page);
	struct uffd_msg msg;
	struct pollfd p = { .fd = uffd, .events = POLLIN };
	if (poll(&p, 1, -1) != 1 || read(uffd, &msg, sizeof msg) != sizeof msg ||
	    msg.event != UFFD_EVENT_PAGEFAULT) {
		perror("uffd read");
		exit(2);
	}
	msleep(fault_ms);
	struct uffdio_copy cp = { .dst = msg.arg.pagefault.address & ~4095ULL,
				  .src = (unsigned long)page, .len = 4096 };
	if (ioctl(uffd, UFFDIO_COPY, &cp)) {
		perror("UFFDIO_COPY");
		exit(2);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 8 || strcmp(argv[6], "--")) {
		fprintf(stderr, "usage: %s FIRST SECOND FAULT_MS PAUSE_MS BYTE -- CMD...\n", argv[0]);
		return 2;
	}
	fault_ms = atol(argv[3]);
	long pause_ms = atol(argv[4]);
	byte = argv[5][0];
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	if (uffd < 0) {
		perror("userfaultfd");
		return 77;
	}
	struct uffdio_api api = { .api = UFFD_API };
	if (ioctl(uffd, UFFDIO_API, &api)) {
		perror("UFFDIO_API");
		return 77;
	}
	char *buf = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct uffdio_register reg = { .range = { (unsigned long)buf, 4096 },
				       .mode = UFFDIO_REGISTER_MODE_MISSING };
	if (buf == MAP_FAILED || ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		perror("UFFDIO_REGISTER");
		return 77;
	}
	pthread_t th;
	pthread_create(&th, NULL, serve, NULL);
	int a = open(argv[1], O_WRONLY | O_CLOEXEC), b = open(argv[2], O_WRONLY | O_CLOEXEC);
	if (a < 0 || b < 0) {
		perror("open");
		return 2;
	}
	if (pwrite(a, buf, 4096, 0) != 4096) {
		perror("pwrite first");
		return 2;
	}
	pthread_join(th, NULL);
	pid_t pid = fork();
	if (pid == 0) {
		execvp(argv[7], argv + 7);
		_exit(127);
	}
	msleep(pause_ms);
	char plain[4096];
	memset(plain, byte, sizeof plain);
	if (pwrite(b, plain, 4096, 0) != 4096) {
		perror("pwrite second");
		return 2;
	}
	int status;
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
