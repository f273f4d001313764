//! Step conditions: CEL expressions, compiled once at submission.
//!
//! An expression reads two names: `input`, the composite's input, and
//! `steps`, only as `steps.<id>` (or `steps["<id>"]`), so the steps it reads
//! are known before anything runs and the graph can check them. Names bound
//! by macros (`exists(x, ...)`, `map(x, ...)`) and CEL's type names are
//! allowed too; any other name is refused at compile time rather than
//! failing later at run time.
//!
//! No expression can crash, stall or hog grymd: before the CEL parser sees
//! a source, its length and its nesting ([`nesting`]) are checked against
//! the limits, so that parsing, walking, evaluating and dropping its tree
//! (all recursive) fit on any runtime thread's stack; its cost ([`cost`]) is
//! bounded at compile time and again before each evaluation, from the sizes
//! of the values it will read.
//!
//! Within the default limits an optimized build needs at most about 400 KiB
//! of stack for the deepest shape (nested lists), a fifth of a tokio
//! worker's; an unoptimized one needs twenty times that. Compiling and
//! evaluating therefore check the stack left and, when it could be short,
//! run on a fresh stack sized for the expression's depth (`stacker`).

mod cost;
mod nesting;

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

/// How much of a source an error message shows.
const SHOWN_BYTES: usize = 96;
/// How much of the CEL parser's message an error shows.
const PARSER_MESSAGE_BYTES: usize = 160;

/// The stack one level of nesting may take while parsing or evaluating:
/// twice the most measured (see the module doc).
const STACK_PER_LEVEL: usize = if cfg!(debug_assertions) {
    512 * 1024
} else {
    32 * 1024
};

/// Runs `f`, which recurses about once per level of an expression `depth`
/// deep, on the current stack if enough of it is left, else on a new one.
fn with_stack_for<T>(depth: usize, f: impl FnOnce() -> T) -> T {
    // Macros and the parser's own rules add a few levels to any depth.
    let need = STACK_PER_LEVEL.saturating_mul(depth.saturating_add(4));
    stacker::maybe_grow(need, need, f)
}

/// A compiled `when` expression.
pub(crate) struct Condition {
    source: String,
    program: Program,
    steps: Vec<String>,
    /// Its nesting, by the [`nesting`] measure.
    depth: usize,
    /// The most one evaluation may cost, in [`cost`] units.
    max_cost: u64,
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
    /// Compiles `source`, within the `max_condition_*` limits; the error
    /// says what is wrong, for the caller.
    pub(crate) fn compile(source: &str, limits: &Limits) -> Result<Self, String> {
        // Both checks come before the parser, which recurses once per level
        // and whose error messages quote the source.
        if source.len() > limits.max_condition_bytes {
            return Err(format!(
                "is {} bytes, over the limit of {}",
                source.len(),
                limits.max_condition_bytes
            ));
        }
        let depth = nesting::depth(source);
        if depth > limits.max_condition_depth {
            return Err(format!(
                "`{}` nests {depth} levels deep, over the limit of {}",
                shown(source),
                limits.max_condition_depth
            ));
        }
        let (program, walk, cost) = with_stack_for(depth, || {
            let program = Program::compile(source).map_err(|errors| {
                format!(
                    "`{}` is not a valid CEL expression: {}",
                    shown(source),
                    parse_problem(&errors)
                )
            })?;
            let mut walk = Walk::default();
            walk.expr(program.expression());
            let Walk { steps, problem, .. } = walk;
            let cost = cost::estimate(program.expression(), cost::Sizes::LEAST);
            Ok::<_, String>((program, (steps, problem), cost))
        })?;
        let (mut steps, problem) = walk;
        if let Some(problem) = problem {
            return Err(format!("`{}`: {problem}", shown(source)));
        }
        if cost > limits.max_condition_cost {
            return Err(format!(
                "`{}` costs at least {cost} to evaluate, over the limit of {}",
                shown(source),
                limits.max_condition_cost
            ));
        }
        steps.sort();
        steps.dedup();
        Ok(Self {
            source: source.to_owned(),
            program,
            steps,
            depth,
            max_cost: limits.max_condition_cost,
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
    /// far; anything but a boolean is an error, and so is an evaluation
    /// that would cost more than the limit, which is refused before it
    /// starts.
    pub(crate) fn evaluate(&self, input: &Value, steps: &Value) -> Result<bool, String> {
        let sizes = cost::Sizes {
            input: cost::json_size(input),
            steps: cost::json_size(steps),
        };
        with_stack_for(self.depth, || {
            self.evaluate_within_stack(input, steps, sizes)
        })
    }

    fn evaluate_within_stack(
        &self,
        input: &Value,
        steps: &Value,
        sizes: cost::Sizes,
    ) -> Result<bool, String> {
        let cost = cost::estimate(self.program.expression(), sizes);
        if cost > self.max_cost {
            return Err(format!(
                "`{}` would cost about {cost} over these values, over the limit of {}",
                shown(&self.source),
                self.max_cost
            ));
        }
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
                shown(&self.source),
                other.type_of()
            )),
            Err(error) => Err(format!(
                "`{}` failed: {}",
                shown(&self.source),
                truncated(&error.to_string(), PARSER_MESSAGE_BYTES)
            )),
        }
    }
}

/// The start of `source`, for an error message.
fn shown(source: &str) -> String {
    truncated(source, SHOWN_BYTES)
}

/// `text` cut to about `bytes` bytes, at a character boundary, marked
/// when cut.
fn truncated(text: &str, bytes: usize) -> String {
    if text.len() <= bytes {
        return text.to_owned();
    }
    let end = (0..=bytes)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}...", &text[..end])
}

/// The parser's first complaint, where it is, and how many more there are;
/// not its own rendering, which quotes the source once per error.
fn parse_problem(errors: &cel::ParseErrors) -> String {
    let Some(first) = errors.errors.first() else {
        return "the parser gave no reason".to_owned();
    };
    let more = match errors.errors.len() - 1 {
        0 => String::new(),
        1 => " (and 1 more error)".to_owned(),
        n => format!(" (and {n} more errors)"),
    };
    format!(
        "at {}:{}: {}{more}",
        first.pos.0,
        first.pos.1,
        truncated(&first.msg.replace('\n', " "), PARSER_MESSAGE_BYTES)
    )
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
mod tests;
