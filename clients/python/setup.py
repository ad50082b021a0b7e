"""Builds the gla-client package: the gla_client module plus the gla.v1 stubs, which are
generated here from proto/gla/v1/gla.proto instead of being kept in git.

The stubs come from the same tools as the CMake build's (proto/CMakeLists.txt): Debian's protoc
and grpc_python_plugin (protobuf-compiler, protobuf-compiler-grpc), which match Debian's
python3-protobuf and python3-grpcio. (Debian's python3-grpc-tools is gRPC 1.14, far older.)
PROTOC, GRPC_PYTHON_PLUGIN and GLA_PROTO_DIR override where they are looked for.
"""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "gla/v1/gla.proto"


def _tool(env, name):
    path = os.environ.get(env) or shutil.which(name)
    if not path:
        raise SystemExit(f"gla-client: {name} not found (deploy/install-deps.sh installs it; or set {env})")
    return path


class BuildWithStubs(build_py):
    """build_py, then gla/v1/gla_pb2.py and gla_pb2_grpc.py generated into the build tree."""

    def run(self):
        super().run()
        proto_dir = os.environ.get("GLA_PROTO_DIR") or os.path.join(HERE, "..", "..", "proto")
        if not os.path.isfile(os.path.join(proto_dir, PROTO)):
            raise SystemExit(f"gla-client: {PROTO} not found under {proto_dir} (build from the repository, "
                             "or set GLA_PROTO_DIR)")
        subprocess.check_call([
            _tool("PROTOC", "protoc"), f"--proto_path={proto_dir}", f"--python_out={self.build_lib}",
            f"--grpc_python_out={self.build_lib}",
            f"--plugin=protoc-gen-grpc_python={_tool('GRPC_PYTHON_PLUGIN', 'grpc_python_plugin')}", PROTO])
        for package in ("gla", "gla/v1"):  # protoc writes modules only
            open(os.path.join(self.build_lib, package, "__init__.py"), "a").close()


setup(py_modules=["gla_client"], cmdclass={"build_py": BuildWithStubs})
