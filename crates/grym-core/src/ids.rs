//! The names of things: ids, task types, kinds, tenants, priorities and input modalities.
//!
//! A leaf: this module imports nothing else of the crate, so every other
//! module can name these types without forming a circle. A name that a
//! caller supplies is checked by its type's constructor, which says what is
//! wrong ([`NameError`]) but not where: the code that read the name knows
//! its field and adds it to the message.

use std::fmt;

/// The longest id or task type accepted, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 256;

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// It is empty.
    #[error("is required")]
    Empty,
    /// It is longer than 256 bytes.
    #[error("is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    /// It holds whitespace or a control character.
    #[error("must not contain whitespace or control characters")]
    BadCharacter,
}

/// Checks a name: not empty, bounded, printable, no spaces.
fn check_name(value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        Err(NameError::Empty)
    } else if value.len() > MAX_NAME_LEN {
        Err(NameError::TooLong)
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(NameError::BadCharacter)
    } else {
        Ok(())
    }
}

/// A checked name: `new` validates a caller's text, `as_str` reads it.
macro_rules! name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(name: String) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl $name {
            /// Validates a name supplied from outside.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_name(&name)?;
                Ok(Self(name))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name! {
    /// A task's id: the caller's, or a time-ordered UUID the server assigns.
    TaskId
}

name! {
    /// A model's id, for example `gama`.
    ModelId
}

name! {
    /// What a task asks for, for example `audio_analysis`.
    TaskType
}

name! {
    /// A step's id, unique in its composite.
    StepId
}

name! {
    /// A session's id: the caller's name for the context its tasks share.
    SessionId
}

/// Names the code itself spells; checked in debug builds.
macro_rules! literal {
    ($($name:ident),*) => {$(
        impl $name {
            /// A name the code itself spells; checked in debug builds.
            pub(crate) fn literal(name: &'static str) -> Self {
                debug_assert!(check_name(name).is_ok(), "{name:?}");
                Self(name.to_owned())
            }
        }
    )*};
}

literal!(ModelId, TaskType);

impl TaskId {
    /// A fresh, time-ordered id (UUID v7).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id of a composite's step, as its worker sees it: `parent/step`.
    pub(crate) fn of_step(parent: &TaskId, step: &StepId) -> Self {
        Self(format!("{parent}/{step}"))
    }
}

/// Who submitted a task: sessions, cached context and tasks are never shared
/// between tenants. The anonymous tenant, of callers that name none, is
/// empty.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Tenant(String);

impl Tenant {
    /// The longest tenant name accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// A named tenant: 1 to [`MAX_LEN`](Self::MAX_LEN) visible ASCII
    /// characters.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() {
            Err(NameError::Empty)
        } else if name.len() > Self::MAX_LEN {
            Err(NameError::TooLong)
        } else if !name.chars().all(|c| c.is_ascii_graphic()) {
            Err(NameError::BadCharacter)
        } else {
            Ok(Self(name))
        }
    }

    /// A tenant the configuration names, for callers to reach with a token:
    /// 1 to [`MAX_LEN`](Self::MAX_LEN) bytes of any text, since the
    /// operator, not the caller, chose it.
    pub fn configured(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() {
            Err(NameError::Empty)
        } else if name.len() > Self::MAX_LEN {
            Err(NameError::TooLong)
        } else {
            Ok(Self(name))
        }
    }

    /// The tenant of callers that name none.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// The name as text; empty for the anonymous tenant.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of a model, for example `audio-language`; context is shaped per
/// kind. Free text: workers bring kinds the orchestrator has never seen,
/// and a kind not yet known is empty.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct ModelKind(String);

impl ModelKind {
    /// The kind a worker or the configuration names.
    pub fn new(kind: impl Into<String>) -> Self {
        Self(kind.into())
    }

    /// The kind as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of payload a task carries, and what a model accepts: written
/// `"text"`, `"audio"` or `"json"` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Plain text.
    Text,
    /// Encoded audio.
    Audio,
    /// Structured JSON.
    Json,
}

impl Modality {
    /// Its name, as the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Audio => "audio",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent a task is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Priority {
    /// Runs when nothing more urgent waits (but ages).
    Low,
    /// The default.
    #[default]
    Normal,
    /// Ahead of normal work.
    High,
    /// Ahead of everything; aging never reaches it.
    Critical,
}

impl Priority {
    /// The priority as metrics and logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_task_type_is_refused() {
        assert_eq!(TaskType::new(""), Err(NameError::Empty));
    }

    #[test]
    fn names_with_whitespace_or_excess_length_are_refused() {
        assert_eq!(TaskId::new("a b"), Err(NameError::BadCharacter));
        assert_eq!(TaskId::new("x".repeat(257)), Err(NameError::TooLong));
        assert!(TaskId::new("x".repeat(256)).is_ok());
    }

    #[test]
    fn generated_ids_are_unique_and_ordered() {
        let a = TaskId::generate();
        let b = TaskId::generate();
        assert_ne!(a, b);
        assert!(a < b, "UUID v7 ids sort by creation time: {a} then {b}");
    }

    #[test]
    fn tenants_are_visible_ascii() {
        assert!(Tenant::new("acme").is_ok());
        assert_eq!(Tenant::new("a b"), Err(NameError::BadCharacter));
        assert_eq!(Tenant::new("x".repeat(129)), Err(NameError::TooLong));
        assert_eq!(Tenant::anonymous().as_str(), "");
    }
}
