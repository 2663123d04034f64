"""protoc plugin: Python messages (+ .pyi) and gRPC stubs via grpcio-tools.

buf runs local plugins over the protoc plugin protocol, but grpcio-tools ships
its Python and gRPC-Python generators only inside its bundled protoc
(`python -m grpc_tools.protoc`), not as protoc-gen-* programs. This plugin
bridges the two: it writes the request's descriptors to a FileDescriptorSet,
runs the bundled protoc on it with --python_out, --pyi_out and
--grpc_python_out, and answers with the files it wrote. Offline once the
tools/python virtualenv is installed (see tools/python/requirements.txt).

Run by buf.gen.yaml as
  local: ["tools/python/.venv/bin/python", "tools/python/protoc_gen_parley_python.py"]
with `strategy: all`.
"""

import os
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    req = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    resp = plugin_pb2.CodeGeneratorResponse()
    resp.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    with tempfile.TemporaryDirectory() as tmp:
        fds = descriptor_pb2.FileDescriptorSet(file=req.proto_file)
        fds_path = os.path.join(tmp, "in.binpb")
        with open(fds_path, "wb") as f:
            f.write(fds.SerializeToString())
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        args = [
            "grpc_tools.protoc",
            f"--descriptor_set_in={fds_path}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *req.file_to_generate,
        ]
        if protoc.main(args) != 0:
            resp.error = "grpc_tools.protoc failed (see its output above)"
        else:
            for root, _, names in os.walk(out):
                for name in sorted(names):
                    path = os.path.join(root, name)
                    f = resp.file.add()
                    f.name = os.path.relpath(path, out)
                    with open(path, encoding="utf-8") as src:
                        f.content = src.read()
    sys.stdout.buffer.write(resp.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
