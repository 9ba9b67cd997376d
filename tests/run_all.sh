#!/usr/bin/env bash
# The whole test suite: installs the test requirements, builds and installs BlockInfer with its
# C++ unit tests and benchmark binaries, runs them (ctest: the unit tests, and the engine
# benchmark on the CPU with a one-layer model) and the Python tests (pytest). Run from anywhere:
#   bash tests/run_all.sh
# CUDA kernels are compiled whenever nvcc is found; GPU tests run only where a GPU is visible and
# are reported as skipped (with the reason) elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# torch==2.13.0 is the CPU build on the development machines (used by tests/reference only).
python3 -m pip install --quiet "torch==2.13.0" pytest numpy safetensors transformers tokenizers tqdm

BUILD_DIR=${BLOCKINFER_TEST_BUILD_DIR:-build/test}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
CUDA_ARGS=()
if command -v nvcc > /dev/null; then
  # Every .cu file must compile wherever nvcc exists, GPU or not (CI has nvcc but no cuBLAS):
  # the nvidia-cublas wheel supplies cublasLt.h, and the CUDA backend is then required.
  python3 -m pip install --quiet nvidia-cublas
  CUBLAS_INCLUDE=$(python3 -c "import nvidia, os; print(next(os.path.join(p, 'cu13', 'include') for p in nvidia.__path__ if os.path.exists(os.path.join(p, 'cu13', 'include', 'cublasLt.h'))))")
  CUDA_ARGS=(-C cmake.define.BLOCKINFER_CUDA=ON -C "cmake.define.BLOCKINFER_CUBLAS_INCLUDE_DIR=$CUBLAS_INCLUDE")
  # CUTLASS's headers (the nvidia-cutlass wheel) for the fused gate_up + SiLU·mul (gemm_cutlass.cu).
  python3 -m pip install --quiet --no-deps "nvidia-cutlass==4.2.0.0"
  CUTLASS_INCLUDE=$(python3 -c "import importlib.util as u, os; print(os.path.join(list(u.find_spec('cutlass_library').submodule_search_locations)[0], 'source', 'include'))")
  CUDA_ARGS+=(-C "cmake.define.BLOCKINFER_CUTLASS_INCLUDE_DIR=$CUTLASS_INCLUDE")
fi
python3 -m pip install --quiet . \
  -C build-dir="$BUILD_DIR" \
  -C cmake.define.BLOCKINFER_BUILD_TESTS=ON -C cmake.define.BLOCKINFER_BUILD_BENCHMARKS=ON "${CUDA_ARGS[@]}"

echo "== C++ unit tests (ctest)"
ctest --test-dir "$BUILD_DIR" --output-on-failure

echo "== Python tests (pytest)"
# Run against the installed package, never the source tree's python/ folder.
python3 -m pytest tests/python -q -rs -p no:cacheprovider
