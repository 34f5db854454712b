/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Linked into stillctl-static only, as dlopen (-Wl,--wrap=dlopen). SQLite's run-time extension
 * loader is the one caller of dlopen in stillctl, and stillctl never enables extension loading.
 * A statically linked glibc can only dlopen libraries of its own exact version, which a system
 * running the static binary (an older glibc, AWS Lambda) does not have: refusing here keeps
 * SQLite off that path, and the linker's warning about it out of the build. */
#include <stddef.h>

void *__wrap_dlopen(const char *file, int mode);

void *__wrap_dlopen(const char *file, int mode)
{
	return NULL;
}
