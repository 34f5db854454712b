#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Class 1: a group of files rewritten in place with a commit to chroma.sqlite3 between two of
# them. A capture's SHARED lock stalls the writer at that commit, half-way through the group,
# where it looks quiet; the cut must not fall there.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/cut-lib.sh"
cut_class 1 group-commit "cp -a"
