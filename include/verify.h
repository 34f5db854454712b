/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Checking a snapshot, or a downloaded copy of one, against its manifest. Prefix: vf_. */
#ifndef STILL_VERIFY_H
#define STILL_VERIFY_H

#include <stdio.h>

struct vf_opts {
	int ignore_extra;    /* files not in the manifest are not problems */
	int quick;           /* skip PRAGMA integrity_check */
};

/* Print one line per problem to out. Returns the number of problems, or -errno when the
 * manifest cannot be read (a one-line reason is logged). */
int vf_verify(const char *dir, const struct vf_opts *o, FILE *out);

#endif
