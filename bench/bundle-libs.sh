#!/usr/bin/env bash
# Copies into DIR/lib the shared libraries that the binaries in DIR (and
# DIR/lib/libdetpost.so) need and a bare CUDA machine may lack: Criterion
# and everything it links, cJSON. Not glibc, not the C++ runtime, not CUDA's
# own libraries, which such a machine has.
set -euo pipefail
dir=$1
mkdir -p "$dir/lib"
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libresolv|libutil|libstdc\+\+|libgcc_s|libcuda|libcublas|libcudart|libnvidia)'
for elf in "$dir"/detpost "$dir"/detpost_tests "$dir"/detpost_bench "$dir"/lib/libdetpost.so; do
    ldd "$elf" | awk '/=> \// {print $1, $3}' | while read -r name path; do
        [[ $name =~ $skip ]] && continue
        [ -e "$dir/lib/$name" ] || cp -L "$path" "$dir/lib/$name"
    done
done
missing=$(for elf in "$dir"/detpost "$dir"/detpost_tests "$dir"/detpost_bench "$dir"/lib/libdetpost.so; do
    LD_LIBRARY_PATH="$dir/lib" ldd "$elf" | grep 'not found' || true; done | sort -u)
if [ -n "$missing" ]; then
    echo "bundle: unresolved libraries:"; echo "$missing"; exit 1
fi
echo "bundle: $(ls "$dir/lib" | wc -l) libraries in $dir/lib ($(du -sh "$dir" | cut -f1) in all)"
