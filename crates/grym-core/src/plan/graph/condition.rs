//! Step conditions: CEL expressions, compiled once at submission.
//!
//! An expression reads two names: `input`, the composite's input, and
//! `steps`, only as `steps.<id>` (or `steps["<id>"]`), so the steps it reads
//! are known before anything runs and the graph can check them. Names bound
//! by macros (`exists(x, ...)`, `map(x, ...)`) and CEL's type names are
//! allowed too; any other name is refused at compile time rather than
//! failing later at run time.

use std::fmt;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::{Context, Program, Value as CelValue};
use serde_json::Value;

use crate::limits::Limits;

/// The names a condition may read.
const INPUT: &str = "input";
const STEPS: &str = "steps";
/// CEL's type names, usable as values (`type(x) == int`).
const TYPE_NAMES: [&str; 10] = [
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];

/// A compiled `when` expression.
pub(crate) struct Condition {
    source: String,
    program: Program,
    steps: Vec<String>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("source", &self.source)
            .field("steps", &self.steps)
            .finish()
    }
}

impl Condition {
    /// Compiles `source`; the error says what is wrong, for the caller.
    pub(crate) fn compile(source: &str, limits: &Limits) -> Result<Self, String> {
        let _ = limits;
        let program = Program::compile(source).map_err(|errors| {
            format!(
                "`{source}` is not a valid CEL expression: {}",
                errors.to_string().replace('\n', "; ")
            )
        })?;
        let mut walk = Walk::default();
        walk.expr(program.expression());
        if let Some(problem) = walk.problem {
            return Err(format!("`{source}`: {problem}"));
        }
        let mut steps = walk.steps;
        steps.sort();
        steps.dedup();
        Ok(Self {
            source: source.to_owned(),
            program,
            steps,
        })
    }

    /// The expression as written.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The step ids it reads, sorted.
    pub(crate) fn steps(&self) -> &[String] {
        &self.steps
    }

    /// Evaluates it over the composite's `input` and the `steps` ended so
    /// far; anything but a boolean is an error.
    pub(crate) fn evaluate(&self, input: &Value, steps: &Value) -> Result<bool, String> {
        let mut context = Context::default();
        for (name, value) in [(INPUT, input), (STEPS, steps)] {
            let value =
                cel::to_value(value).map_err(|error| format!("cannot read `{name}`: {error}"))?;
            context.add_variable_from_value(name, value);
        }
        match self.program.execute(&context) {
            Ok(CelValue::Bool(holds)) => Ok(holds),
            Ok(other) => Err(format!(
                "`{}` gave {:?}, not a boolean",
                self.source,
                other.type_of()
            )),
            Err(error) => Err(format!("`{}` failed: {error}", self.source)),
        }
    }
}

/// Collects the step ids an expression reads, and the first name it should
/// not read.
#[derive(Default)]
struct Walk<'a> {
    /// Names bound by enclosing macro comprehensions.
    bound: Vec<&'a str>,
    /// Comprehensions around the node being walked.
    depth: usize,
    steps: Vec<String>,
    problem: Option<String>,
}

impl<'a> Walk<'a> {
    fn expr(&mut self, node: &'a IdedExpr) {
        if self.problem.is_some() {
            return;
        }
        match &node.expr {
            Expr::Unspecified | Expr::Literal(_) => {}
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) => {
                if let Expr::Ident(root) = &select.operand.expr
                    && root == STEPS
                    && !self.is_bound(STEPS)
                {
                    self.steps.push(select.field.clone());
                } else {
                    self.expr(&select.operand);
                }
            }
            Expr::Call(call) => {
                // `steps["id"]` reads one step, like `steps.id`.
                if call.func_name == "_[_]"
                    && let [operand, key] = call.args.as_slice()
                    && matches!(&operand.expr, Expr::Ident(root) if root == STEPS && !self.is_bound(STEPS))
                {
                    match &key.expr {
                        Expr::Literal(LiteralValue::String(id)) => {
                            self.steps.push(id.inner().to_owned());
                        }
                        _ => self.fail("`steps` must be indexed by a literal step id".into()),
                    }
                    return;
                }
                if let Some(target) = &call.target {
                    self.expr(target);
                }
                for arg in &call.args {
                    self.expr(arg);
                }
            }
            Expr::Comprehension(comprehension) => {
                // One macro is linear in what it iterates; nested ones would
                // multiply, on a runtime thread nothing can interrupt.
                if self.depth > 0 {
                    self.fail("macros such as `exists` or `map` cannot be nested".into());
                    return;
                }
                self.expr(&comprehension.iter_range);
                self.expr(&comprehension.accu_init);
                self.depth += 1;
                let depth = self.bound.len();
                self.bound.push(&comprehension.iter_var);
                if let Some(second) = &comprehension.iter_var2 {
                    self.bound.push(second);
                }
                self.bound.push(&comprehension.accu_var);
                self.expr(&comprehension.loop_cond);
                self.expr(&comprehension.loop_step);
                self.expr(&comprehension.result);
                self.bound.truncate(depth);
                self.depth -= 1;
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.expr(element);
                }
            }
            Expr::Map(map) => self.entries(&map.entries),
            Expr::Struct(structure) => self.entries(&structure.entries),
        }
    }

    fn entries(&mut self, entries: &'a [cel::common::ast::IdedEntryExpr]) {
        for entry in entries {
            match &entry.expr {
                EntryExpr::StructField(field) => self.expr(&field.value),
                EntryExpr::MapEntry(pair) => {
                    self.expr(&pair.key);
                    self.expr(&pair.value);
                }
            }
        }
    }

    fn ident(&mut self, name: &str) {
        if self.is_bound(name) || name == INPUT || TYPE_NAMES.contains(&name) {
            return;
        }
        if name == STEPS {
            self.fail("read steps as `steps.<id>`, naming the step".into());
        } else {
            self.fail(format!(
                "unknown name `{name}`; a condition reads `input` and `steps.<id>`"
            ));
        }
    }

    fn is_bound(&self, name: &str) -> bool {
        self.bound.contains(&name)
    }

    fn fail(&mut self, problem: String) {
        self.problem.get_or_insert(problem);
    }
}

#[cfg(test)]
mod tests {
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
        let missing =
            Condition::compile("steps.first.output.nothing > 1", &Limits::default()).unwrap();
        assert!(missing.evaluate(&json!(null), &steps()).is_err());
        let number =
            Condition::compile("steps.first.output.confidence", &Limits::default()).unwrap();
        let error = number.evaluate(&json!(null), &steps()).unwrap_err();
        assert!(error.contains("not a boolean"), "{error}");
    }
}
