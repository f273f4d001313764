//! The gRPC contracts of grym orchestrator.
//!
//! Generated code for `grym.orchestrator.v1` and `grym.worker.v1`, the encoded
//! descriptor set that server reflection serves, and [`json`]: conversions
//! between protobuf's `Struct`/`Value` and `serde_json`, which every adapter
//! on either side of the contracts needs, and the reflection services built
//! from that descriptor set.

pub mod codec;
pub mod json;
pub mod status;

/// `grym.orchestrator.v1`: the API agents call.
pub mod orchestrator {
    #[allow(
        clippy::large_enum_variant,
        reason = "generated: a stream event holds either a marker or a whole result"
    )]
    pub mod v1 {
        tonic::include_proto!("grym.orchestrator.v1");
    }
}

/// `grym.worker.v1`: the API model workers serve.
pub mod worker {
    pub mod v1 {
        tonic::include_proto!("grym.worker.v1");
    }
}

/// The encoded `FileDescriptorSet` of every contract and its imports, with
/// source comments, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/grym_descriptor.bin"));

/// The server reflection services, both `v1` and `v1alpha` (grpcurl before
/// 1.8.8 speaks only `v1alpha`). They describe the grym contracts and
/// `grpc.health.v1`, and list `served` (the application's services) with
/// health and reflection itself, so a listing shows exactly what answers.
pub fn reflection_services(
    served: &[&str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        served
            .iter()
            .copied()
            .chain([
                tonic_health::pb::health_server::SERVICE_NAME,
                tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
                tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
            ])
            .fold(builder, |builder, name| builder.with_service_name(name))
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
