//! Checks of a task's dependencies at submission.
//!
//! A dependency names a task that exists when the dependent is submitted
//! (live, or finished and still kept), and binds to that task: a later task
//! reusing the id is another task. Since a new task can only wait for tasks
//! that exist before it, the only cycle it can close is waiting for itself.

use crate::error::Error;
use crate::ids::TaskId;

/// Checks the dependencies `depends_on` of a new task `id`; `known` tells
/// whether an id names an existing task. The errors are
/// [`Error::DependencyCycle`] and [`Error::UnknownDependencies`].
pub(crate) fn check(
    id: &TaskId,
    depends_on: &[TaskId],
    known: impl Fn(&TaskId) -> bool,
) -> Result<(), Error> {
    if depends_on.contains(id) {
        return Err(Error::DependencyCycle {
            path: vec![id.clone(), id.clone()],
        });
    }
    let unknown: Vec<TaskId> = depends_on
        .iter()
        .filter(|dep| !known(dep))
        .cloned()
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::UnknownDependencies { ids: unknown })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> TaskId {
        TaskId::new(name).unwrap()
    }

    fn run(new: &str, deps: &[&str], known: &[&str]) -> Result<(), Error> {
        let deps: Vec<TaskId> = deps.iter().map(|d| id(d)).collect();
        check(&id(new), &deps, |t| known.contains(&t.as_str()))
    }

    #[test]
    fn known_dependencies_pass() {
        assert!(run("c", &["a", "b"], &["a", "b"]).is_ok());
    }

    #[test]
    fn unknown_ids_are_named() {
        assert!(matches!(
            run("c", &["a", "x", "y"], &["a"]),
            Err(Error::UnknownDependencies { ids }) if ids == [id("x"), id("y")]
        ));
    }

    #[test]
    fn depending_on_itself_is_a_cycle() {
        assert!(matches!(
            run("a", &["a"], &["a"]),
            Err(Error::DependencyCycle { path }) if path == [id("a"), id("a")]
        ));
    }
}
