//! What one evaluation of a `when` expression may cost, estimated before it
//! runs, the way cel-go and Kubernetes bound CEL.
//!
//! Units: one per node evaluated; a function that reads a whole value
//! (`+`, `size`, `contains`, `in`, a conversion, ...) adds that value's size,
//! and a comparison the size of its smaller side. A value's size is one,
//! plus one per entry of a list or map and one per 10 bytes of a string,
//! counted all the way down. A comprehension (`exists`, `all`,
//! `exists_one`, `map`, `filter`) costs its body once per element of the
//! list it ranges over.
//!
//! Sizes are not known until the expression runs, so the estimate is a
//! function of the sizes of `input` and `steps`: at compile time with both
//! at their least (the static cost, which no evaluation can beat), then
//! before each evaluation with the values it will read. Every value an
//! expression can reach is part of one of those, a literal, or built from
//! them by a node counted here, so the estimate bounds its work. The walk
//! recurses once per level of the tree, which the nesting limit bounds.

use cel::common::ast::{EntryExpr, Expr, IdedEntryExpr, IdedExpr, LiteralValue, operators};
use serde_json::Value;

/// The sizes of what an expression reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    /// The size of `input`.
    pub(super) input: u64,
    /// The size of `steps`.
    pub(super) steps: u64,
}

impl Sizes {
    /// The least sizes there are: the static cost.
    pub(super) const LEAST: Self = Self { input: 1, steps: 1 };
}

/// The estimated cost of evaluating `expr` once over values of `sizes`.
pub(super) fn estimate(expr: &IdedExpr, sizes: Sizes) -> u64 {
    let mut scope = Scope {
        sizes,
        bound: Vec::new(),
    };
    scope.expr(expr).cost
}

/// Bytes of a string per unit of size.
const BYTES_PER_UNIT: u64 = 10;

/// The size of a JSON value, by the measure of the module doc, without
/// recursion.
pub(super) fn json_size(value: &Value) -> u64 {
    let mut size = 0_u64;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        size = size.saturating_add(1);
        match value {
            Value::String(text) => size = size.saturating_add(string_units(text.len())),
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => {
                for (key, value) in fields {
                    size = size.saturating_add(string_units(key.len()));
                    stack.push(value);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    size
}

fn string_units(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(BYTES_PER_UNIT)
}

/// A node's estimated cost, and the size of the value it gives.
#[derive(Debug, Clone, Copy)]
struct Work {
    cost: u64,
    size: u64,
}

impl Work {
    const ONE: Self = Self { cost: 1, size: 1 };
}

/// The names in scope and the sizes of their values.
struct Scope<'a> {
    sizes: Sizes,
    /// Names bound by comprehensions, innermost last.
    bound: Vec<(&'a str, u64)>,
}

impl<'a> Scope<'a> {
    fn expr(&mut self, node: &'a IdedExpr) -> Work {
        match &node.expr {
            Expr::Unspecified => Work::ONE,
            Expr::Literal(literal) => Work {
                cost: 1,
                size: 1 + match literal {
                    LiteralValue::String(text) => string_units(text.inner().len()),
                    LiteralValue::Bytes(bytes) => string_units(bytes.len()),
                    _ => 0,
                },
            },
            Expr::Ident(name) => Work {
                cost: 1,
                size: self.size_of(name),
            },
            // A member is part of the value it is read from.
            Expr::Select(select) => {
                let operand = self.expr(&select.operand);
                Work {
                    cost: operand.cost.saturating_add(1),
                    size: operand.size,
                }
            }
            Expr::Call(call) => {
                let parts: Vec<Work> = call
                    .target
                    .iter()
                    .map(AsRef::as_ref)
                    .chain(&call.args)
                    .map(|part| self.expr(part))
                    .collect();
                call_work(&call.func_name, &parts)
            }
            Expr::List(list) => {
                let parts: Vec<Work> = list.elements.iter().map(|e| self.expr(e)).collect();
                built(&parts)
            }
            Expr::Map(map) => {
                let parts = self.entries(&map.entries);
                built(&parts)
            }
            Expr::Struct(structure) => {
                let parts = self.entries(&structure.entries);
                built(&parts)
            }
            Expr::Comprehension(comprehension) => {
                let range = self.expr(&comprehension.iter_range);
                let init = self.expr(&comprehension.accu_init);
                let elements = range.size;
                // The standard macros' accumulators are a boolean, a count,
                // or a list cel appends to in place: each costs a unit.
                let body = |scope: &mut Self, element: u64| {
                    let depth = scope.bound.len();
                    scope.bound.push((&comprehension.iter_var, element));
                    if let Some(second) = &comprehension.iter_var2 {
                        scope.bound.push((second, element));
                    }
                    scope.bound.push((&comprehension.accu_var, 1));
                    let condition = scope.expr(&comprehension.loop_cond);
                    let step = scope.expr(&comprehension.loop_step);
                    scope.bound.truncate(depth);
                    Work {
                        cost: condition.cost.saturating_add(step.cost),
                        size: step.size,
                    }
                };
                // The body's cost grows at most linearly with its element's
                // size, and the elements' sizes sum to the range's: all the
                // iterations together cost at most one iteration over the
                // whole range plus one per element at the least size.
                let whole = body(self, range.size);
                let least = body(self, 1);
                let loops = Work {
                    cost: whole
                        .cost
                        .saturating_add(elements.saturating_mul(least.cost)),
                    size: whole
                        .size
                        .saturating_add(elements.saturating_mul(least.size)),
                };
                let depth = self.bound.len();
                self.bound.push((&comprehension.accu_var, loops.size));
                let result = self.expr(&comprehension.result);
                self.bound.truncate(depth);
                Work {
                    cost: 1_u64
                        .saturating_add(range.cost)
                        .saturating_add(init.cost)
                        .saturating_add(loops.cost)
                        .saturating_add(result.cost),
                    size: result.size,
                }
            }
        }
    }

    fn entries(&mut self, entries: &'a [IdedEntryExpr]) -> Vec<Work> {
        let mut parts = Vec::with_capacity(entries.len() * 2);
        for entry in entries {
            match &entry.expr {
                EntryExpr::StructField(field) => parts.push(self.expr(&field.value)),
                EntryExpr::MapEntry(pair) => {
                    parts.push(self.expr(&pair.key));
                    parts.push(self.expr(&pair.value));
                }
            }
        }
        parts
    }

    fn size_of(&self, name: &str) -> u64 {
        if let Some((_, size)) = self.bound.iter().rev().find(|(bound, _)| *bound == name) {
            return *size;
        }
        match name {
            "input" => self.sizes.input,
            "steps" => self.sizes.steps,
            _ => 1,
        }
    }
}

/// A list, map or message: its parts, plus one unit.
fn built(parts: &[Work]) -> Work {
    Work {
        cost: sum(parts.iter().map(|p| p.cost)).saturating_add(1),
        size: sum(parts.iter().map(|p| p.size)).saturating_add(1),
    }
}

/// A call's work from its target's and arguments'.
fn call_work(function: &str, parts: &[Work]) -> Work {
    let cost = sum(parts.iter().map(|p| p.cost)).saturating_add(1);
    let sizes = || parts.iter().map(|p| p.size);
    let (read, size) = match function {
        // Logic and arithmetic on scalars read nothing whole.
        operators::LOGICAL_AND
        | operators::LOGICAL_OR
        | operators::LOGICAL_NOT
        | operators::NOT_STRICTLY_FALSE
        | operators::SUBSTRACT
        | operators::MULTIPLY
        | operators::DIVIDE
        | operators::MODULO
        | operators::NEGATE => (0, 1),
        operators::CONDITIONAL => (0, sizes().skip(1).max().unwrap_or(1)),
        // An element is part of the value it is read from.
        operators::INDEX | operators::OPT_INDEX | operators::OPT_SELECT => {
            (0, parts.first().map_or(1, |p| p.size))
        }
        operators::EQUALS
        | operators::NOT_EQUALS
        | operators::LESS
        | operators::LESS_EQUALS
        | operators::GREATER
        | operators::GREATER_EQUALS => (sizes().min().unwrap_or(0), 1),
        // `+` copies both sides into a new value.
        operators::ADD => (sum(sizes()), sum(sizes())),
        "size" | "contains" | "startsWith" | "endsWith" | "matches" | operators::IN => {
            (sum(sizes()), 1)
        }
        // Conversions and anything else: read everything, give as much.
        _ => (sum(sizes()), sum(sizes()).max(1)),
    };
    Work {
        cost: cost.saturating_add(read),
        size,
    }
}

fn sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::Program;
    use serde_json::json;

    fn cost(source: &str, input: u64) -> u64 {
        let program = Program::compile(source).unwrap();
        estimate(program.expression(), Sizes { input, steps: 1 })
    }

    #[test]
    fn sizes_count_entries_and_string_bytes() {
        assert_eq!(json_size(&json!(1)), 1);
        assert_eq!(json_size(&json!("a string of 21 bytes.")), 1 + 3);
        assert_eq!(json_size(&json!([1, 2, 3])), 4);
        assert_eq!(json_size(&json!({"key": [1]})), 1 + 1 + 2);
    }

    #[test]
    fn a_comparison_costs_its_nodes_and_its_smaller_side() {
        assert_eq!(cost("input == 1", 1), 3 + 1);
        assert_eq!(cost("input == 1", 1000), 3 + 1);
        assert_eq!(cost("input + input == 1", 1000), 5 + 2000 + 1);
    }

    #[test]
    fn a_comprehension_costs_its_body_per_element() {
        let small = cost("input.exists(x, x == 1)", 10);
        let large = cost("input.exists(x, x == 1)", 10_000);
        assert!(large > 100 * small, "{small} {large}");
        assert!(large < 100_000, "{large}");
        let mapped = cost("input.map(x, x + x).size() > 0", 1000);
        assert!(mapped > 2000, "{mapped}");
    }
}
