#!/bin/sh
# Build app/static/vendor/ from the npm registry (never a CDN): installs the exact
# socket.io-client pinned in package-lock.json and copies its browser bundle next to the app, and
# the Socket.IO Admin UI's static files into build/admin-ui/ (served by nginx, see the nginx role).
# Usage: app/build_static.sh   (from anywhere; needs node + npm)
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
npm ci --no-audit --no-fund --loglevel=error
mkdir -p app/static/vendor
cp node_modules/socket.io-client/dist/socket.io.min.js app/static/vendor/socket.io.min.js
cp node_modules/socket.io-client/dist/socket.io.min.js.map app/static/vendor/socket.io.min.js.map 2>/dev/null || true
# The Socket.IO Admin UI for nginx (behind basic auth), outside app/static: the app must not serve it.
rm -rf build/admin-ui
mkdir -p build
cp -r node_modules/@socket.io/admin-ui/ui/dist build/admin-ui
echo "build/admin-ui/ <- @socket.io/admin-ui $(node -p 'require("@socket.io/admin-ui/package.json").version')"
echo "app/static/vendor/socket.io.min.js <- socket.io-client $(node -p 'require("socket.io-client/package.json").version')"
