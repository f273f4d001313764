//! Checks of a task's dependencies at submission: every id must name a known
//! task, and the new task must not close a cycle.

use std::collections::HashSet;

use crate::task::TaskId;

/// What is wrong with a task's dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependencyError {
    /// These ids name no known task.
    Unknown(Vec<TaskId>),
    /// Following dependencies from the new task leads back to it: the ids
    /// on the way, starting and ending with it.
    Cycle(Vec<TaskId>),
}

/// Checks the dependencies `depends_on` of a new task `id`. `known` tells
/// whether an id names a task; `edges` gives a known task's own
/// dependencies (empty once it has finished).
pub fn check(
    id: &TaskId,
    depends_on: &[TaskId],
    known: impl Fn(&TaskId) -> bool,
    edges: impl Fn(&TaskId) -> Vec<TaskId>,
) -> Result<(), DependencyError> {
    if let Some(path) = cycle_through(id, depends_on, &edges) {
        return Err(DependencyError::Cycle(path));
    }
    let unknown: Vec<TaskId> = depends_on
        .iter()
        .filter(|dep| !known(dep))
        .cloned()
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(DependencyError::Unknown(unknown))
    }
}

/// A path from `id` back to itself, if there is one (depth first).
fn cycle_through(
    id: &TaskId,
    depends_on: &[TaskId],
    edges: &impl Fn(&TaskId) -> Vec<TaskId>,
) -> Option<Vec<TaskId>> {
    let mut visited = HashSet::new();
    let mut stack: Vec<(TaskId, Vec<TaskId>)> = depends_on
        .iter()
        .map(|dep| (dep.clone(), vec![id.clone(), dep.clone()]))
        .collect();
    while let Some((node, path)) = stack.pop() {
        if &node == id {
            return Some(path);
        }
        if !visited.insert(node.clone()) {
            continue;
        }
        for next in edges(&node) {
            let mut longer = path.clone();
            longer.push(next.clone());
            stack.push((next, longer));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn id(name: &str) -> TaskId {
        TaskId::new(name).unwrap()
    }

    fn graph(edges: &[(&str, &[&str])]) -> HashMap<TaskId, Vec<TaskId>> {
        edges
            .iter()
            .map(|(from, to)| (id(from), to.iter().map(|t| id(t)).collect()))
            .collect()
    }

    fn run(
        new: &str,
        deps: &[&str],
        graph: &HashMap<TaskId, Vec<TaskId>>,
    ) -> Result<(), DependencyError> {
        let deps: Vec<TaskId> = deps.iter().map(|d| id(d)).collect();
        check(
            &id(new),
            &deps,
            |t| graph.contains_key(t),
            |t| graph.get(t).cloned().unwrap_or_default(),
        )
    }

    #[test]
    fn known_dependencies_pass() {
        let g = graph(&[("a", &[]), ("b", &["a"])]);
        assert_eq!(run("c", &["a", "b"], &g), Ok(()));
    }

    #[test]
    fn unknown_ids_are_named() {
        let g = graph(&[("a", &[])]);
        assert_eq!(
            run("c", &["a", "x", "y"], &g),
            Err(DependencyError::Unknown(vec![id("x"), id("y")]))
        );
    }

    #[test]
    fn depending_on_itself_is_a_cycle() {
        let g = graph(&[]);
        assert_eq!(
            run("a", &["a"], &g),
            Err(DependencyError::Cycle(vec![id("a"), id("a")]))
        );
    }

    #[test]
    fn a_longer_cycle_is_found_with_its_path() {
        // b waits for c, and c (an earlier task reusing the id) waits for a.
        let g = graph(&[("b", &["c"]), ("c", &["a"])]);
        assert_eq!(
            run("a", &["b"], &g),
            Err(DependencyError::Cycle(vec![
                id("a"),
                id("b"),
                id("c"),
                id("a")
            ]))
        );
    }

    #[test]
    fn a_diamond_is_not_a_cycle() {
        let g = graph(&[("a", &[]), ("b", &["a"]), ("c", &["a"])]);
        assert_eq!(run("d", &["b", "c"], &g), Ok(()));
    }
}
