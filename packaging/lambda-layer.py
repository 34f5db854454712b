#!/usr/bin/env python3
"""lambda-layer.py BINARY ZIP: write ZIP holding BINARY as bin/stillctl (mode 0755), the layout
of an AWS Lambda layer (extracted under /opt). Fixed timestamps: the same binary makes the same zip."""
import os
import sys
import zipfile

binary, out = sys.argv[1], sys.argv[2]
with open(binary, "rb") as f:
    data = f.read()
info = zipfile.ZipInfo("bin/stillctl", date_time=(1980, 1, 1, 0, 0, 0))
info.external_attr = 0o100755 << 16
info.create_system = 3  # Unix, so unzip and Lambda honour the mode bits
info.compress_type = zipfile.ZIP_DEFLATED
with zipfile.ZipFile(out + ".tmp", "w") as z:
    z.writestr(info, data)
os.replace(out + ".tmp", out)
