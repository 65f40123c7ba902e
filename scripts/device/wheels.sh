# Shell functions shared by the device scripts (source it): the Python 3.12 wheels a GPU
# machine of the device tool lacks, downloaded here and installed there.

# download_wheels PY DIR: the wheels named in DIR/requirements.txt, for CPython 3.12 on
# x86-64 Linux, into DIR (with DIR/PYTHON_VERSION).
download_wheels() {
  local py=$1 dir=$2 platforms=() p
  for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 \
           manylinux_2_31_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 \
           manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
  done
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$dir" -r "$dir/requirements.txt"
  echo 3.12 > "$dir/PYTHON_VERSION"
}

# install_carried_wheels PY DIR: install DIR's wheels into a fresh folder put first on
# PYTHONPATH (nothing of the machine's own Python changes) when PY is the Python they are for.
install_carried_wheels() {
  local py=$1 dir=$2 want have site
  compgen -G "$dir/*.whl" >/dev/null || return 0
  want=$(cat "$dir/PYTHON_VERSION")
  have=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$want" != "$have" ]; then
    echo "the carried wheels are for Python $want, $py is $have: using its own packages"
    return 0
  fi
  site=$(mktemp -d /tmp/pneumo-site.XXXXXX)
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$site" "$dir"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed $(ls "$dir"/*.whl | wc -l) carried wheels into $site"
}
