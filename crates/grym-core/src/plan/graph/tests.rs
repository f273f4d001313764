use std::time::Duration;

use super::*;
use crate::ids::TaskType;
use crate::task::StepTask;

fn step(id: &str, after: &[&str], when: Option<&str>) -> StepSpec {
    StepSpec {
        id: StepId::new(id).unwrap(),
        task: StepTask::of(TaskType::new("echo").unwrap()),
        after: after.iter().map(|a| StepId::new(*a).unwrap()).collect(),
        when: when.map(str::to_owned),
    }
}

fn spec(strategy: Strategy, steps: Vec<StepSpec>) -> CompositeSpec {
    CompositeSpec {
        strategy,
        steps,
        failure_policy: FailurePolicy::FailFast,
        output_step: None,
    }
}

fn waits(graph: &Graph) -> Vec<Vec<usize>> {
    // Read as `[[], [0], [1]]`: each step's waits, by index.
    graph.nodes.iter().map(|n| n.after.clone()).collect()
}

fn refusal(spec: CompositeSpec) -> (&'static str, String) {
    match Graph::build(spec, &Limits::default()).unwrap_err() {
        Error::InvalidRequest { field, reason } => (field, reason),
        other => panic!("expected an invalid request, got {other:?}"),
    }
}

#[test]
fn each_strategy_orders_the_steps_that_name_no_waits() {
    let three = || {
        vec![
            step("a", &[], None),
            step("b", &[], None),
            step("c", &[], None),
        ]
    };
    let sequential = Graph::build(spec(Strategy::Sequential, three()), &Limits::default()).unwrap();
    assert_eq!(waits(&sequential), [vec![], vec![0], vec![1]]);
    let parallel = Graph::build(spec(Strategy::Parallel, three()), &Limits::default()).unwrap();
    assert!(waits(&parallel).iter().all(Vec::is_empty));
    assert_eq!(parallel.stages(), [vec![0, 1, 2]]);
    let conditional =
        Graph::build(spec(Strategy::Conditional, three()), &Limits::default()).unwrap();
    assert_eq!(waits(&conditional), [vec![], vec![0], vec![0]]);
    assert_eq!(conditional.stages(), [vec![0], vec![1, 2]]);
}

#[test]
fn explicit_waits_build_a_graph_with_stages_and_a_critical_path() {
    let graph = Graph::build(
        spec(
            Strategy::Parallel,
            vec![
                step("fetch", &[], None),
                step("left", &["fetch"], None),
                step("right", &["fetch"], None),
                step("join", &["left", "right"], None),
            ],
        ),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(graph.stages(), [vec![0], vec![1, 2], vec![3]]);
    let ms = Duration::from_millis;
    let (path, total) = graph.critical_path(&[ms(100), ms(50), ms(300), ms(100)]);
    assert_eq!(path, [0, 2, 3]);
    assert_eq!(total, ms(500));
}

#[test]
fn unknown_waits_cycles_and_duplicates_are_refused_naming_the_step() {
    let (field, reason) = refusal(spec(
        Strategy::Sequential,
        vec![step("a", &[], None), step("b", &["nope"], None)],
    ));
    assert_eq!(field, "task.composite.steps.after");
    assert!(
        reason.contains("step `b`") && reason.contains("`nope`"),
        "{reason}"
    );

    let (_, reason) = refusal(spec(
        Strategy::Parallel,
        vec![step("a", &["b"], None), step("b", &["a"], None)],
    ));
    assert!(
        reason.contains("cycle") && reason.contains("`a`"),
        "{reason}"
    );

    let (field, _) = refusal(spec(
        Strategy::Parallel,
        vec![step("a", &[], None), step("a", &[], None)],
    ));
    assert_eq!(field, "task.composite.steps.id");
    let (_, reason) = refusal(spec(Strategy::Parallel, vec![]));
    assert!(reason.contains("at least one step"), "{reason}");
}

#[test]
fn conditions_are_compiled_at_build_and_read_only_steps_waited_for() {
    let (field, reason) = refusal(spec(
        Strategy::Sequential,
        vec![
            step("first", &[], None),
            step("second", &[], Some("steps.first.output.confidence <")),
        ],
    ));
    assert_eq!(field, "task.composite.steps.when");
    assert!(reason.starts_with("step `second`"), "{reason}");

    let (_, reason) = refusal(spec(
        Strategy::Sequential,
        vec![
            step("first", &[], None),
            step("second", &[], Some("steps.ghost.status == 'SUCCEEDED'")),
        ],
    ));
    assert!(reason.contains("unknown step `ghost`"), "{reason}");

    // In parallel, `b` does not wait for `a`, so it cannot read it.
    let (_, reason) = refusal(spec(
        Strategy::Parallel,
        vec![
            step("a", &[], None),
            step("b", &[], Some("steps.a.status == 'SUCCEEDED'")),
        ],
    ));
    assert!(reason.contains("does not wait for"), "{reason}");

    // Waiting for it indirectly is enough.
    let graph = Graph::build(
        spec(
            Strategy::Sequential,
            vec![
                step("a", &[], None),
                step("b", &[], None),
                step("c", &[], Some("steps.a.output.confidence < 0.7")),
            ],
        ),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(graph.nodes[2].condition.as_ref().unwrap().steps(), ["a"]);
}

#[test]
fn only_a_conditional_composite_with_conditions_needs_a_match() {
    let branches = || {
        vec![
            step("a", &[], None),
            step("b", &[], Some("steps.a.text == 'x'")),
        ]
    };
    assert!(
        Graph::build(spec(Strategy::Conditional, branches()), &Limits::default())
            .unwrap()
            .needs_a_match()
    );
    assert!(
        !Graph::build(spec(Strategy::Sequential, branches()), &Limits::default())
            .unwrap()
            .needs_a_match()
    );
}

#[test]
fn an_unknown_output_step_is_refused() {
    let mut spec = spec(Strategy::Sequential, vec![step("a", &[], None)]);
    spec.output_step = Some(StepId::new("b").unwrap());
    let (field, _) = refusal(spec);
    assert_eq!(field, "task.composite.output_step");
}

#[test]
fn a_condition_over_a_limit_is_refused_naming_the_field_and_the_limit() {
    let long = format!("input == '{}'", "x".repeat(5000));
    let (field, reason) = refusal(spec(
        Strategy::Sequential,
        vec![step("a", &[], None), step("b", &[], Some(&long))],
    ));
    assert_eq!(field, "task.composite.steps.when");
    assert_eq!(
        reason,
        format!("step `b`: is {} bytes, over the limit of 4096", long.len())
    );

    let deep = format!("steps.a.output{} == 1", ".x".repeat(40));
    let (field, reason) = refusal(spec(
        Strategy::Sequential,
        vec![step("a", &[], None), step("b", &[], Some(&deep))],
    ));
    assert_eq!(field, "task.composite.steps.when");
    assert!(
        reason.starts_with("step `b`: `steps.a.output.x")
            && reason.ends_with("nests 44 levels deep, over the limit of 32"),
        "{reason}"
    );

    let costly = Limits {
        max_condition_cost: 10,
        ..Limits::default()
    };
    let error = Graph::build(
        spec(
            Strategy::Sequential,
            vec![
                step("a", &[], None),
                step(
                    "b",
                    &[],
                    Some("steps.a.output.labels.exists(l, l == 'rain')"),
                ),
            ],
        ),
        &costly,
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("over the limit of 10"),
        "{error}"
    );
}
