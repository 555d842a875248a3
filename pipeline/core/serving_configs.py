"""TF Serving's server-side files beside the exported models, in its own text-proto formats:

    <paths.models>/batching.config      --batching_parameters_file (BatchingParameters), with --enable_batching
    <paths.models>/monitoring.config    --monitoring_config_file (MonitoringConfig): Prometheus metrics over REST

tensorflow-serving-api ships model_server_config_pb2 (models.config) but not these two messages, so their schema
is declared here with the field names and numbers of TF Serving's session_bundle_config.proto and
monitoring_config.proto, and the files are written and read back through it: a typo cannot reach the server.
"""

from functools import cache

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from pipeline.core.config import Config

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default path, served on the REST port

_INT64, _STRING = "google.protobuf.Int64Value", "google.protobuf.StringValue"
_SCHEMA = {  # message -> (field, number, type, label); upstream numbers, only the fields a CPU server needs
    "BatchingParameters": [
        ("max_batch_size", 1, _INT64, "optional"),
        ("batch_timeout_micros", 2, _INT64, "optional"),
        ("max_enqueued_batches", 3, _INT64, "optional"),
        ("num_batch_threads", 4, _INT64, "optional"),
        ("thread_pool_name", 5, _STRING, "optional"),
        ("allowed_batch_sizes", 6, "int64", "repeated"),
        ("pad_variable_length_inputs", 7, "bool", "optional"),
    ],
    "PrometheusConfig": [("enable", 1, "bool", "optional"), ("path", 2, "string", "optional")],
    "MonitoringConfig": [("prometheus_config", 1, ".tensorflow.serving.PrometheusConfig", "optional")],
}


@cache
def message_class(name: str):
    """The message class of one of TF Serving's server config messages (BatchingParameters, MonitoringConfig)."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="pipeline/tf_serving_server_configs.proto", package="tensorflow.serving", syntax="proto3"
    )
    file.dependency.append(wrappers_pb2.DESCRIPTOR.name)
    field = descriptor_pb2.FieldDescriptorProto
    for message, fields in _SCHEMA.items():
        proto = file.message_type.add(name=message)
        for fname, number, ftype, label in fields:
            scalar = getattr(field, f"TYPE_{ftype.upper()}", None)
            spec = {"type": scalar} if scalar else {"type": field.TYPE_MESSAGE, "type_name": ftype}
            if ftype.startswith("google."):
                spec["type_name"] = f".{ftype}"
            proto.field.add(name=fname, number=number, label=getattr(field, f"LABEL_{label.upper()}"), **spec)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))


def batching_config(cfg: Config) -> str:
    """--batching_parameters_file for --enable_batching, from [export] (tuned by `make bench-serving`)."""
    params = message_class("BatchingParameters")()
    e = cfg.export
    params.max_batch_size.value = e.batch_max_size
    params.batch_timeout_micros.value = e.batch_timeout_micros
    params.max_enqueued_batches.value = e.batch_max_enqueued
    params.num_batch_threads.value = e.batch_threads
    # Off: TF Serving pads with a tensor's first element, a real token of tag_tokens' [B, n] input, not "".
    params.pad_variable_length_inputs = False
    return text_format.MessageToString(params)


def monitoring_config() -> str:
    """--monitoring_config_file: Prometheus metrics (request counts, latencies, batch sizes) on the REST port."""
    config = message_class("MonitoringConfig")()
    config.prometheus_config.enable, config.prometheus_config.path = True, PROMETHEUS_PATH
    return text_format.MessageToString(config)


def parse(name: str, text: str):
    """A server config file read back through its schema (text_format.ParseError on an unknown field)."""
    return text_format.Parse(text, message_class(name)())
