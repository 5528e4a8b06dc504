#!/usr/bin/env bash
# hack/azurite.sh: installs Azurite, Microsoft's Azure Storage emulator, into
# .cache/azurite (idempotently) and prints the path of its azurite-blob
# binary. The azblob source's tests start it on loopback; they find it via
# MLPLANE_AZURITE or this cache path, and skip when it is not installed.
#
#   hack/azurite.sh            # prints e.g. /repo/.cache/azurite/node_modules/.bin/azurite-blob
#   export MLPLANE_AZURITE=$(hack/azurite.sh)
#
# Needs node and npm. AZURITE_VERSION overrides the pinned version: 3.35.0
# is the newest that runs on Node 20 (3.36 and later need Node >= 21/22).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${AZURITE_VERSION:-3.35.0}
DIR=.cache/azurite
BIN=$DIR/node_modules/.bin/azurite-blob

installed() {
	[ -x "$BIN" ] && [ "$(node -p "require('./$DIR/node_modules/azurite/package.json').version" 2>/dev/null)" = "$VERSION" ]
}

if ! installed; then
	command -v npm >/dev/null || { echo "hack/azurite.sh: npm is not installed" >&2; exit 1; }
	mkdir -p "$DIR"
	npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "azurite@$VERSION" >&2
	installed || { echo "hack/azurite.sh: azurite $VERSION did not install into $DIR" >&2; exit 1; }
fi
echo "$PWD/$BIN"
