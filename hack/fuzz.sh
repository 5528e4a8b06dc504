#!/usr/bin/env bash
# hack/fuzz.sh: runs every fuzz target in the repository (what `make fuzz`
# runs), one after the other, each for $FUZZTIME. The targets are found, not
# listed: every `func FuzzXxx(f *testing.F)` in a _test.go file, in the main
# module and in nested ones (test/validation), so a new target is fuzzed
# without editing this file.
#
#   FUZZTIME=60s hack/fuzz.sh       # the default; any go test -fuzztime value (30s, 10000x)
#   hack/fuzz.sh -list              # print the targets, run nothing
#
# New crashers are written by go test to the package's testdata/fuzz/ and
# then run by the ordinary tests. The script stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-60s}

# path:name for every target; sorted so runs repeat in the same order.
targets=$(grep -rEo --include='*_test.go' --exclude-dir=testdata --exclude-dir=_output --exclude-dir=.git \
	'^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . | sed -E 's#^\./##; s#:func (Fuzz[A-Za-z0-9_]*)\(.*#:\1#' | sort)
if [ -z "$targets" ]; then
	echo "hack/fuzz.sh: no fuzz targets found" >&2
	exit 1
fi
if [ "${1:-}" = "-list" ]; then
	echo "$targets"
	exit 0
fi

n=$(echo "$targets" | wc -l)
i=0
for t in $targets; do
	i=$((i + 1))
	file=${t%%:*} name=${t##*:}
	dir=$(dirname "$file")
	# The module that holds the package: the nearest go.mod above it.
	mod=$dir
	while [ ! -f "$mod/go.mod" ]; do mod=$(dirname "$mod"); done
	rel=${dir#"$mod"}
	pkg=./${rel#/}
	[ "$pkg" != ./ ] || pkg=.
	echo "== [$i/$n] $name: (cd $mod && go test -run '^\$' -fuzz '^$name\$' -fuzztime $FUZZTIME $pkg)"
	(cd "$mod" && go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg")
done
echo "== all $n fuzz targets ran for $FUZZTIME each"
