//! Checks of a task's dependencies at submission.
//!
//! A dependency names a task that exists when the dependent is submitted
//! (live, or finished and still kept), and binds to that task: a later task
//! reusing the id is another task. Since a new task can only wait for tasks
//! that exist before it, the only cycle it can close is waiting for itself.

use crate::task::TaskId;

/// What is wrong with a task's dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependencyError {
    /// These ids name no known task.
    Unknown(Vec<TaskId>),
    /// The task waits for itself: the cycle, starting and ending with it.
    Cycle(Vec<TaskId>),
}

/// Checks the dependencies `depends_on` of a new task `id`; `known` tells
/// whether an id names an existing task.
pub fn check(
    id: &TaskId,
    depends_on: &[TaskId],
    known: impl Fn(&TaskId) -> bool,
) -> Result<(), DependencyError> {
    if depends_on.contains(id) {
        return Err(DependencyError::Cycle(vec![id.clone(), id.clone()]));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> TaskId {
        TaskId::new(name).unwrap()
    }

    fn run(new: &str, deps: &[&str], known: &[&str]) -> Result<(), DependencyError> {
        let deps: Vec<TaskId> = deps.iter().map(|d| id(d)).collect();
        check(&id(new), &deps, |t| known.contains(&t.as_str()))
    }

    #[test]
    fn known_dependencies_pass() {
        assert_eq!(run("c", &["a", "b"], &["a", "b"]), Ok(()));
    }

    #[test]
    fn unknown_ids_are_named() {
        assert_eq!(
            run("c", &["a", "x", "y"], &["a"]),
            Err(DependencyError::Unknown(vec![id("x"), id("y")]))
        );
    }

    #[test]
    fn depending_on_itself_is_a_cycle() {
        assert_eq!(
            run("a", &["a"], &["a"]),
            Err(DependencyError::Cycle(vec![id("a"), id("a")]))
        );
    }
}
