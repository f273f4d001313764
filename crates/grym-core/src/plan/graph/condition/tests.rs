use super::*;
use serde_json::json;

fn steps() -> Value {
    json!({
        "first": {"status": "SUCCEEDED", "output": {"confidence": 0.55, "labels": ["rain"]}, "text": "rain", "model": "gama"},
    })
}

#[test]
fn a_condition_reads_a_steps_output() {
    let low =
        Condition::compile("steps.first.output.confidence < 0.7", &Limits::default()).unwrap();
    assert_eq!(low.steps(), ["first"]);
    assert!(low.evaluate(&json!("clip"), &steps()).unwrap());
    let high = Condition::compile(
        "steps['first'].output.confidence >= 0.7",
        &Limits::default(),
    )
    .unwrap();
    assert!(!high.evaluate(&json!("clip"), &steps()).unwrap());
}

#[test]
fn macros_and_input_are_allowed() {
    let condition = Condition::compile(
        "steps.first.output.labels.exists(l, l == 'rain') && input.startsWith('cl') && has(steps.first.output.confidence)",
        &Limits::default(),
    )
    .unwrap();
    assert!(condition.evaluate(&json!("clip"), &steps()).unwrap());
}

#[test]
fn syntax_errors_and_unknown_names_are_refused_at_compile_time() {
    let syntax =
        Condition::compile("steps.first.output.confidence <", &Limits::default()).unwrap_err();
    assert!(syntax.contains("not a valid CEL expression"), "{syntax}");
    let unknown = Condition::compile("confidence < 0.7", &Limits::default()).unwrap_err();
    assert!(unknown.contains("unknown name `confidence`"), "{unknown}");
    let bare = Condition::compile("size(steps) > 1", &Limits::default()).unwrap_err();
    assert!(bare.contains("steps.<id>"), "{bare}");
    let nested = Condition::compile(
        "input.exists(x, input.exists(y, x < y))",
        &Limits::default(),
    )
    .unwrap_err();
    assert!(nested.contains("cannot be nested"), "{nested}");
}

#[test]
fn evaluation_errors_and_non_booleans_are_errors() {
    let missing = Condition::compile("steps.first.output.nothing > 1", &Limits::default()).unwrap();
    assert!(missing.evaluate(&json!(null), &steps()).is_err());
    let number = Condition::compile("steps.first.output.confidence", &Limits::default()).unwrap();
    let error = number.evaluate(&json!(null), &steps()).unwrap_err();
    assert!(error.contains("not a boolean"), "{error}");
}

/// Runs `f` on a thread with a stack of `kib` KiB, far less than a tokio
/// worker's 2 MiB: a stack overflow aborts the test process.
fn on_small_stack<T: Send + 'static>(kib: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(kib * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// The worst shapes we know, each `n` levels long: the parser, the walk and
/// evaluation each recurse once per level of them.
fn shapes(n: usize) -> Vec<(&'static str, String)> {
    vec![
        ("member chain", format!("input{} == 1", ".a".repeat(n))),
        ("sum", format!("1{} == 1", "+1".repeat(n))),
        ("index chain", format!("input{} == 1", "[0]".repeat(n))),
        (
            "parentheses",
            format!("{}true{}", "(".repeat(n), ")".repeat(n)),
        ),
        (
            "calls",
            format!("{}input{} > 0", "size(".repeat(n), ")".repeat(n)),
        ),
        ("lists", format!("{}{} == []", "[".repeat(n), "]".repeat(n))),
        (
            "maps",
            format!("{}1{} == {{}}", "{1: ".repeat(n), "}".repeat(n)),
        ),
        ("ternaries", format!("{}false", "true ? false : ".repeat(n))),
        ("negations", format!("{}true", "!".repeat(n))),
        ("minus", format!("{}1 == 1", "-".repeat(n))),
        ("relations", format!("1{} == true", " < 2".repeat(n))),
        (
            "mixed",
            format!(
                "{}input{}",
                "(size([".repeat(n),
                ".a[0] + 1]) == 1)".repeat(n)
            ),
        ),
        (
            "in a macro",
            format!("[1, 2].exists(x, {}x{} == 1)", "(".repeat(n), ")".repeat(n)),
        ),
    ]
}

/// The longest prefix-and-suffix repetition of `shape` within `limit`.
fn at_most(limit: usize, shape: impl Fn(usize) -> String) -> String {
    let mut n = 0;
    while nesting::depth(&shape(n + 1)) <= limit {
        n += 1;
    }
    shape(n)
}

#[test]
fn the_shapes_that_crashed_grymd_are_refused_before_parsing() {
    // The sizes measured against the landed code.
    for (name, source) in [
        ("member chain", format!("input{} == 1", ".a".repeat(4850))),
        ("sum", format!("1{}", "+1".repeat(5200))),
        ("index chain", format!("input{}", "[0]".repeat(5000))),
        (
            "parentheses",
            format!("{}1{}", "(".repeat(65_000), ")".repeat(65_000)),
        ),
        ("&& chain", vec!["input == 1"; 800 * 1024 / 14].join(" && ")),
    ] {
        let error = Condition::compile(&source, &Limits::default()).unwrap_err();
        assert!(
            error.starts_with(&format!(
                "is {} bytes, over the limit of 4096",
                source.len()
            )),
            "{name}: {error}"
        );
        // Even with room for them, their nesting refuses them.
        let roomy = Limits {
            max_condition_bytes: 1 << 20,
            ..Limits::default()
        };
        if name != "&& chain" {
            let error =
                on_small_stack(256, move || Condition::compile(&source, &roomy)).unwrap_err();
            assert!(
                error.contains("levels deep, over the limit of 32"),
                "{name}: {error}"
            );
            assert!(error.len() < 200, "{name}: {error}");
        }
    }
}

#[test]
fn the_depth_limit_is_admitted_exactly_and_refused_one_over() {
    let limits = Limits::default();
    let admitted = format!("input{} == 1", ".a".repeat(30));
    assert_eq!(nesting::depth(&admitted), 32);
    Condition::compile(&admitted, &limits).unwrap();
    let over = format!("input{} == 1", ".a".repeat(31));
    let error = Condition::compile(&over, &limits).unwrap_err();
    assert!(
        error.ends_with("nests 33 levels deep, over the limit of 32"),
        "{error}"
    );
    let shallow = Limits {
        max_condition_depth: 3,
        ..Limits::default()
    };
    Condition::compile("((input))", &shallow).unwrap();
    Condition::compile("(((input)))", &shallow).unwrap_err();
}

#[test]
fn brackets_and_operators_in_strings_are_not_nesting() {
    let parens = "(".repeat(200);
    for source in [
        format!("input == '{parens}'"),
        format!("input == \"{parens}\\\"{parens}\""),
        format!("input == r'{parens}\\'"),
        format!("input == '''{parens}\n{parens}'''"),
        format!("input == b'{}'", "[".repeat(200)),
        format!("input == '{}' // {parens}", "&& +.".repeat(100)),
    ] {
        let condition = Condition::compile(&source, &Limits::default()).unwrap();
        assert!(!condition.evaluate(&json!("clip"), &json!({})).unwrap());
    }
    let condition = Condition::compile("input == ')'", &Limits::default()).unwrap();
    assert!(condition.evaluate(&json!(")"), &json!({})).unwrap());
}

#[test]
fn the_worst_shapes_within_the_limits_fit_a_small_stack() {
    let limits = Limits::default();
    let input = json!({"a": {"a": 1}, "list": [1, 2, 3]});
    for (name, _) in shapes(1) {
        let shape = |n: usize| {
            shapes(n)
                .into_iter()
                .find(|(shape, _)| *shape == name)
                .map(|(_, source)| source)
                .unwrap()
        };
        // At the depth limit, and the byte limit filled with copies of the
        // shape as deep as the rest of the room allows.
        let deepest = at_most(limits.max_condition_depth, shape);
        let copies = (1..)
            .map(|k| {
                let room = limits.max_condition_depth - 1 - nesting::log2_ceil(k);
                let one = at_most(room, shape);
                vec![format!("({one})"); k].join(" || ")
            })
            .take_while(|source| source.len() <= limits.max_condition_bytes)
            .last()
            .unwrap_or_default();
        for source in [deepest, copies] {
            if source.is_empty() {
                continue;
            }
            assert!(
                nesting::depth(&source) <= limits.max_condition_depth,
                "{name}"
            );
            let (limits, input) = (limits.clone(), input.clone());
            let outcome = on_small_stack(256, move || {
                let condition = Condition::compile(&source, &limits)?;
                condition.evaluate(&input, &json!({})).map(|_| ())
            });
            // Refusals and failures are fine; overflowing the stack is not.
            drop(outcome);
        }
    }
}

#[test]
fn a_long_and_chain_within_the_limits_is_cheap() {
    let source = vec!["input == 'x'"; 4096 / 16].join(" && ");
    let condition = Condition::compile(&source, &Limits::default()).unwrap();
    assert!(!condition.evaluate(&json!("y"), &json!({})).unwrap());
}

#[test]
fn a_condition_over_its_cost_is_refused_at_compile_time() {
    let limits = Limits {
        max_condition_cost: 50,
        ..Limits::default()
    };
    Condition::compile("input == 1", &limits).unwrap();
    let error = Condition::compile(&vec!["input == 1"; 20].join(" || "), &limits).unwrap_err();
    assert!(error.contains("over the limit of 50"), "{error}");
    // A comprehension over a literal list costs its body per element.
    let list = (0..100)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let error = Condition::compile(&format!("[{list}].exists(x, x == 7)"), &limits).unwrap_err();
    assert!(error.contains("costs at least"), "{error}");
}

#[test]
fn an_evaluation_over_its_cost_is_refused_before_it_runs() {
    let condition = Condition::compile("input.exists(x, x == 'rain')", &Limits::default()).unwrap();
    assert!(condition.evaluate(&json!(["rain"]), &json!({})).unwrap());
    let huge = Value::Array(vec![json!("snow"); 50_000]);
    let error = condition.evaluate(&huge, &json!({})).unwrap_err();
    assert!(
        error.contains("would cost about") && error.ends_with("over the limit of 100000"),
        "{error}"
    );
    // Strings count by their length.
    let concatenated = Condition::compile("size(input + input) > 0", &Limits::default()).unwrap();
    assert!(concatenated.evaluate(&json!("a"), &json!({})).unwrap());
    let error = concatenated
        .evaluate(&json!("a".repeat(1 << 20)), &json!({}))
        .unwrap_err();
    assert!(error.contains("would cost about"), "{error}");
}

#[test]
fn error_messages_quote_only_the_start_of_a_source() {
    let long = format!("input == '{}' &&", "x".repeat(4000));
    let error = Condition::compile(&long, &Limits::default()).unwrap_err();
    assert!(error.contains("not a valid CEL expression"), "{error}");
    assert!(error.len() < 400, "{}", error.len());
}

/// A measurement, not a check: the stack that parsing, walking and
/// evaluating one shape needs without `stacker`. Run it with
/// `CEL_SHAPE='lists' CEL_DEPTH=32 CEL_KIB=384 cargo test --release -p grym-core
/// --lib stack_needed -- --ignored`: it aborts when the stack is too small.
#[test]
#[ignore = "a measurement driven by CEL_SHAPE, CEL_DEPTH and CEL_KIB"]
fn stack_needed_by_a_shape() {
    let name = std::env::var("CEL_SHAPE").unwrap();
    let kib: usize = std::env::var("CEL_KIB").unwrap().parse().unwrap();
    let depth: usize = std::env::var("CEL_DEPTH").unwrap().parse().unwrap();
    let shape = |n: usize| {
        shapes(n)
            .into_iter()
            .find(|(shape, _)| *shape == name)
            .map(|(_, source)| source)
            .unwrap()
    };
    let source = at_most(depth, shape);
    on_small_stack(kib, move || {
        let program = Program::compile(&source).unwrap();
        let mut walk = Walk::default();
        walk.expr(program.expression());
        let mut context = Context::default();
        let input = cel::to_value(json!({"a": {"a": 1}})).unwrap();
        context.add_variable_from_value(INPUT, input);
        let _ = program.execute(&context);
    });
}

#[test]
fn past_a_raised_depth_limit_the_parsers_own_limit_is_an_error_not_a_panic() {
    // The CEL parser stops at 96 nested expressions; rendering that error
    // is where 65,000 parentheses panicked. Its messages are not rendered.
    let roomy = Limits {
        max_condition_depth: 200,
        ..Limits::default()
    };
    let source = format!("{}1{} == 1", "(".repeat(100), ")".repeat(100));
    let error = on_small_stack(256, move || Condition::compile(&source, &roomy)).unwrap_err();
    assert!(error.contains("not a valid CEL expression"), "{error}");
    assert!(error.len() < 400, "{error}");
}
