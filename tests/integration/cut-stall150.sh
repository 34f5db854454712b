#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Class 5: a writer that stalls 150 ms between the files of a group rewritten in place, longer
# than the default quiet window.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/cut-lib.sh"
cut_class 5 stall "cp -a" --stall-ms 150
