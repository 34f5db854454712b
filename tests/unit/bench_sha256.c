/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Throughput of sha256 on each available path: 1 GiB hashed from a 1 MiB buffer, the
 * size the capture engine feeds it. Not a test; run by hand:
 *   bench_sha256 [MiB]      (default 1024) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sha256.h"

enum { BUF = 1 << 20 };

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void run(const char *name, const uint8_t *buf, unsigned long mib)
{
	struct sha256 s;
	uint8_t d[32];
	char hex[65];
	double t0, dt;

	sha256_init(&s);
	t0 = now();
	for (unsigned long i = 0; i < mib; i++)
		sha256_update(&s, buf, BUF);
	sha256_final(&s, d);
	dt = now() - t0;
	sha256_hex(d, hex);
	/* The digest is printed so the two paths can be seen to agree. */
	printf("%-8s %8.1f MB/s  (%lu MiB in %.3f s)  %s\n", name,
	       (double)mib * BUF / 1e6 / dt, mib, dt, hex);
}

int main(int argc, char **argv)
{
	unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
	uint8_t *buf = malloc(BUF);

	if (!buf || mib == 0) {
		fprintf(stderr, "usage: %s [MiB]\n", argv[0]);
		return 2;
	}
	for (size_t i = 0; i < BUF; i++)
		buf[i] = (uint8_t)(i * 2654435761u >> 13);

	if (sha256_accelerated())
		run("sha-ni", buf, mib);
	else
		printf("sha-ni   not available on this CPU\n");
	sha256_force_portable(1);
	run("portable", buf, mib);
	free(buf);
	return 0;
}
