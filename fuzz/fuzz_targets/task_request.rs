//! Arbitrary bytes as an `ExecuteTaskRequest`: decoded with prost,
//! converted as the server converts it, and planned on a registry of two
//! models whose calls fail. Nothing may panic; a refusal is an answer.

#![no_main]

mod common;

use grym_proto::orchestrator::v1::ExecuteTaskRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ExecuteTaskRequest::decode(data) else {
        return;
    };
    let (runtime, orchestrator) = common::failing();
    let orchestrator = orchestrator.clone();
    common::on_worker(runtime, async move {
        let Ok(task) = grym_server::task_from_api(request.task, grym_core::Tenant::anonymous())
        else {
            return;
        };
        let _ = orchestrator.plan(task);
    });
});
