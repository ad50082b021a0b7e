#!/usr/bin/env bash
# Installs every build and run dependency of the GLA server from Debian packages, and checks
# for the CUDA Toolkit (which Debian does not ship in the version we need).
#
#   deploy/install-deps.sh            install what is missing (idempotent; needs root or sudo)
#   deploy/install-deps.sh --check    only report what is missing; exit 1 if anything is
#   deploy/install-deps.sh --runtime  only what a built glad needs to run (the Docker image's
#                                     runtime stage): shared libraries, no compilers or headers
#   deploy/install-deps.sh --container  only the host tools deploy/container-test.sh needs: a
#                                     Docker engine and debootstrap (for the Debian 12 base image)
#   deploy/install-deps.sh --fuzz     the build dependencies and the fuzzing toolchain
#                                     (deploy/fuzz.sh: clang, libFuzzer, the sanitizer runtimes)
#
# CI, the README's two commands and deploy/Dockerfile all call this one script.
set -euo pipefail

# One line per package, with the reason it is here.
packages=(
  build-essential        # g++ 12 (C++20)
  cmake ninja-build pkg-config
  libgrpc++-dev          # gRPC 1.51 C++ (server, clients)
  protobuf-compiler-grpc # grpc_cpp_plugin for protoc
  libprotobuf-dev protobuf-compiler   # Protobuf 3.21 + protoc
  libabsl-dev            # Abseil 20220623 (Status, flags, strings)
  libsentencepiece-dev   # tokenizer.model
  sentencepiece          # spm_train / spm_encode (tests train a small tokenizer)
  libopenblas-dev        # multi-threaded SGEMM for the CPU backend
  nlohmann-json3-dev     # config.json and safetensors headers (header-only, well-kept)
  libboost-dev           # Boost.Beast/Asio: glad's OpenAI HTTP server (header-only; asynchronous, so a few
                         # threads hold thousands of SSE streams; its HTTP parser is fuzzed and widely used)
  libgtest-dev libgmock-dev googletest   # GoogleTest through ctest
  python3-grpcio python3-protobuf        # Python client and its example
  python3-requests       # the HTTP API's Python example (clients/python/example_http.py)
  python3-jsonschema     # structured output's outputs checked by an independent validator (tests/e2e/structured_output_e2e.py)
  nodejs                 # the official openai npm SDK drives glad's HTTP API in a test (the SDK itself is
                         # fetched from the npm registry by the test, pinned and sha512-checked)
  python3-venv python3-pip python3-setuptools python3-wheel   # `pip install clients/python` offline (--no-build-isolation), and its test's venv
  openssl                # the TLS tests make throwaway certificates (a server's, a client CA's and a client's)
  libssl-dev             # glad checks that --tls_key is --tls_cert's key, and serves HTTPS (OpenSSL, already under gRPC)
  curl                   # the HTTPS tests check glad's TLS with a client that is not our own (Beast) one
  prometheus-cpp-dev     # glad's Prometheus metrics: counters, histograms, the text format
  prometheus             # promtool: the metrics test checks the exposition format with it
  python3-yaml           # the deploy-files test reads the Kubernetes and compose YAML
  libhiredis-dev         # Redis client: the shared state tier (--state_store redis://, issue 22)
  redis-server           # the state tier's tests start their own Redis on loopback
  nginx                  # the reference session-affine proxy (deploy/nginx/gla.conf), tested on loopback
)

# Only for deploy/fuzz.sh (--fuzz), so that the build and Docker images do not carry a second compiler.
fuzz_packages=(
  clang                  # clang 14: libFuzzer needs it (GCC has no -fsanitize=fuzzer)
  libclang-rt-14-dev     # libFuzzer and clang's ASan/UBSan runtimes
  llvm                   # llvm-symbolizer: function names and lines in sanitizer reports
)

# What the binaries load at run time (Debian 12 names), for --runtime.
runtime_packages=(
  libgrpc++1.51 libprotobuf32 libabsl20220623 libsentencepiece0 libopenblas0 libprometheus-cpp-core1.0 libssl3
  libhiredis0.14         # --state_store redis:// (the shared state tier)
  ca-certificates
)

# The host side of deploy/container-test.sh, for --container (not in the image, not in the tests'
# list: building and testing glad needs neither).
container_packages=(
  docker.io              # dockerd + containerd + runc (Debian's engine; any docker CLI talks to it)
  debootstrap            # the Debian 12 base image, from Debian's own mirror (no Docker Hub needed)
)

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  --runtime) packages=("${runtime_packages[@]}") ;;
  --container) packages=("${container_packages[@]}") ;;
  --fuzz) packages+=("${fuzz_packages[@]}") ;;
  "") ;;
  *) echo "install-deps.sh: unknown option '$1' (known: --check, --runtime, --container, --fuzz)" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if ((check_only)); then
    echo "missing Debian packages: ${missing[*]}"
  else
    echo "installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    missing=()
  fi
else
  echo "all Debian packages present"
fi

# The runtime stage brings its CUDA libraries with its base image; the container test needs no CUDA.
case "${1:-}" in --runtime | --container) exit 0 ;; esac

# CUDA Toolkit: optional. Without it the build is CPU-only; the CUDA backend needs nvcc + cuBLAS.
nvcc=""
for c in "$(command -v nvcc 2>/dev/null || true)" /usr/local/cuda/bin/nvcc; do
  [ -n "$c" ] && [ -x "$c" ] && { nvcc=$c; break; }
done
if [ -z "$nvcc" ]; then
  echo "CUDA Toolkit: not found (no nvcc on PATH or in /usr/local/cuda/bin)."
  echo "  The build will be CPU-only. For the CUDA backend install CUDA 12.4+ from NVIDIA"
  echo "  (e.g. the nvidia/cuda:*-devel images or https://developer.nvidia.com/cuda-downloads)."
else
  cuda_root=$(cd "$(dirname "$nvcc")/.." && pwd)
  ver=$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
  if ls "$cuda_root"/lib64/libcublas.so* "$cuda_root"/targets/*/lib/libcublas.so* >/dev/null 2>&1; then
    echo "CUDA Toolkit: $nvcc (release $ver) with cuBLAS"
  else
    echo "CUDA Toolkit: $nvcc (release $ver) but cuBLAS is missing under $cuda_root;"
    echo "  install the toolkit's libcublas-dev package. The build will be CPU-only."
  fi
fi

if ((check_only)) && ((${#missing[@]})); then exit 1; fi
exit 0
