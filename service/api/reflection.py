"""Server reflection under both names clients ask for: ``grpc.reflection.v1`` (grpcurl,
buf curl and grpc-java's current one) and ``grpc.reflection.v1alpha`` (older clients), with the
``google.rpc`` error detail types included so a client decodes ``ErrorInfo``, ``BadRequest``
and ``RetryInfo`` from the server's answers alone."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
# The files reflection must be able to serve although no service of ours names them: the
# detail messages packed into google.rpc.Status on every error answer.
DETAIL_FILES = (error_details_pb2.DESCRIPTOR.name, status_pb2.DESCRIPTOR.name)
_ALPHA = "grpc.reflection.v1alpha"
_V1 = "grpc.reflection.v1"


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, made from the v1alpha file grpcio-reflection
    ships (it has no v1 yet, grpc/grpc#38576): v1 changed the package name only, so both
    speak the same messages on the wire."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = proto.name.replace(_ALPHA.replace(".", "/"), _V1.replace(".", "/"))
    proto.package = _V1
    proto.ClearField("options")

    def rename(type_name: str) -> str:
        return type_name.replace(f".{_ALPHA}.", f".{_V1}.")

    for message in proto.message_type:
        for field in message.field:
            field.type_name = rename(field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type = rename(method.input_type)
            method.output_type = rename(method.output_type)
    return proto


def enable(service_names: list[str], server: grpc.aio.Server) -> None:
    """Serve reflection for ``service_names`` (and both reflection services themselves)
    under v1 and v1alpha."""
    pool = descriptor_pool.Default()
    v1 = _v1_file()
    try:
        pool.FindFileByName(v1.name)
    except KeyError:  # not yet added by an earlier server in this process
        pool.Add(v1)
    for name in DETAIL_FILES:  # fails at start, not at a client's first question
        pool.FindFileByName(name)
    names = [*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME]
    servicer: Any = reflection.aio.ReflectionServicer(names, pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                V1_SERVICE_NAME,
                {
                    "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                        servicer.ServerReflectionInfo,
                        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                    )
                },
            ),
        )
    )
