#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Class 2: the same group with only a SELECT between two of its files, while another thread
# commits a record every few ms: that commit, waiting on a capture's lock, holds SQLite's PENDING
# lock, which blocks the SELECT half-way through the group.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/cut-lib.sh"
cut_class 2 group-select "cp -a"
