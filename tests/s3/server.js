// Start s3rver for one test: node server.js DATA_DIR PORT_FILE BUCKET...
// Listens on 127.0.0.1 on a port the kernel picks (no race for a "free" port), creates the
// buckets, then writes the port to PORT_FILE (via a rename, so a reader never sees half of
// it). Logs one line per request on stdout. Stops on SIGTERM/SIGINT.
'use strict';
const fs = require('fs');
const path = require('path');

const peers = process.env.STILLFS_PEERS_DIR || '/opt/stillfs-test-peers';
const S3rver = require(path.join(peers, 'node_modules', 's3rver'));

const [dir, portFile, ...buckets] = process.argv.slice(2);
if (!dir || !portFile || buckets.length === 0) {
  console.error('usage: node server.js DATA_DIR PORT_FILE BUCKET...');
  process.exit(2);
}

const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  directory: dir,
  silent: false,
  vhostBuckets: false,
  configureBuckets: buckets.map(name => ({ name })),
});

server.run().then(
  addr => {
    fs.writeFileSync(portFile + '.tmp', `${addr.port}\n`);
    fs.renameSync(portFile + '.tmp', portFile);
  },
  err => {
    console.error(`s3rver: ${err.message}`);
    process.exit(1);
  },
);

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
